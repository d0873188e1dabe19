// Vectorised exp / log for the CPU lattice kernels, written with GCC vector extensions so that
// one source serves every instruction set: each kernel TU (lattice_kernels_<isa>.cpp) sets its
// target with `#pragma GCC target` and CTC_SIMD_BYTES (16 generic, 32 AVX2, 64 AVX-512) before
// including this header, and the compiler lowers the same code to SSE2, AVX2 or AVX-512.
//
// Accuracy (checked by tests/test_cpu_kernels.py against libm):
//   float:  Cephes-style exp and log: about 1-2 ulp.
//   double: Cody-Waite reduction + degree-13 Taylor exp, fdlibm log: about 1-2 ulp (~2e-16).
// exp returns exactly 0 below the smallest normal result (no denormals: the kernels only use
// exp of values whose denormal tail is far below the rounding error of the sums they enter),
// and +inf a little before the true overflow (above 88.37 for float, 709.0 for double; the
// kernels only take exp of values <= about 0).
// log is exact at 0 (-inf), +inf, negative (NaN) and NaN; denormal arguments are not supported
// (the kernels only take logs of sums >= 1).  vexp_core / vlog_core skip the special cases for
// the lattice's inner loop, where the arguments are known to be in range.
//
// Include only after the per-TU target pragma; everything here lives in CTC_SIMD_NAMESPACE so
// the differently-compiled copies never meet at link time.
#pragma once

#ifndef CTC_SIMD_BYTES
#error "define CTC_SIMD_BYTES before including simd_math.h"
#endif
#ifndef CTC_SIMD_NAMESPACE
#error "define CTC_SIMD_NAMESPACE before including simd_math.h"
#endif

namespace ctc_ext {
namespace cpu {
namespace CTC_SIMD_NAMESPACE {

typedef float vfloat __attribute__((vector_size(CTC_SIMD_BYTES), aligned(4)));
typedef double vdouble __attribute__((vector_size(CTC_SIMD_BYTES), aligned(8)));
typedef unsigned vuint32 __attribute__((vector_size(CTC_SIMD_BYTES)));
typedef unsigned long long vuint64 __attribute__((vector_size(CTC_SIMD_BYTES)));

// The vector type of each element type.
template <typename acc_t>
struct Simd;

template <>
struct Simd<float> {
  using vec = vfloat;
  static constexpr int lanes = CTC_SIMD_BYTES / 4;
  static constexpr float lowest = -__FLT_MAX__;
};

template <>
struct Simd<double> {
  using vec = vdouble;
  static constexpr int lanes = CTC_SIMD_BYTES / 8;
  static constexpr double lowest = -__DBL_MAX__;
};

template <typename acc_t>
inline typename Simd<acc_t>::vec load(const acc_t* p) {
  typename Simd<acc_t>::vec v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename acc_t>
inline void store(acc_t* p, typename Simd<acc_t>::vec v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

template <typename acc_t>
inline typename Simd<acc_t>::vec splat(acc_t value) {
  return typename Simd<acc_t>::vec{} + value;
}

template <typename vec>
inline vec vmax(vec a, vec b) {
  return a > b ? a : b;
}

template <typename vec>
inline vec vmin(vec a, vec b) {
  return a < b ? a : b;
}

// exp(x), float, for x <= 88.37 without the special cases: below -87.33 it returns about
// 1e-38 instead of 0 (harmless inside a sum that is >= 1), and NaN is not preserved.  Range
// reduction x = n ln2 + r with n = round(x / ln2), |r| <= ln2 / 2; the rounding uses the
// 1.5 * 2^23 trick, whose low mantissa bits then hold n for building 2^n.
inline vfloat vexp_core(vfloat x) {
  const vfloat clamped = vmin(vmax(x, splat(-87.33f)), splat(88.37f));
  const vfloat shifted = clamped * 1.44269504088896341f + 12582912.0f;  // 1.5 * 2^23
  const vfloat n = shifted - 12582912.0f;
  const vfloat r = (clamped - n * 0.693359375f) - n * -2.12194440e-4f;
  vfloat p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const vuint32 pow2 = ((vuint32)shifted + 127u) << 23;
  return p * (vfloat)pow2;
}

inline vfloat vexp(vfloat x) {
  vfloat result = vexp_core(x);
  result = x < -87.33f ? splat(0.0f) : result;
  result = x > 88.37f ? splat(__builtin_inff()) : result;
  return x != x ? x : result;  // NaN stays NaN
}

// exp(x), double: vexp_core as for float (about 1e-308 below -708.39).  Cody-Waite reduction
// with ln2 split in a 32-bit head and a tail; a degree-13 Taylor polynomial on |r| <= ln2 / 2
// truncates below 5e-18.
inline vdouble vexp_core(vdouble x) {
  const vdouble clamped = vmin(vmax(x, splat(-708.39)), splat(709.0));
  const vdouble shifted = clamped * 1.4426950408889634074 + 6755399441055744.0;  // 1.5 * 2^52
  const vdouble n = shifted - 6755399441055744.0;
  const vdouble r = (clamped - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  vdouble p = splat(1.0 / 6227020800.0);  // 1 / 13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * (r * r) + r + 1.0;
  const vuint64 pow2 = ((vuint64)shifted + 1023ull) << 52;
  return p * (vdouble)pow2;
}

inline vdouble vexp(vdouble x) {
  vdouble result = vexp_core(x);
  result = x < -708.39 ? splat(0.0) : result;
  result = x > 709.0 ? splat(__builtin_inf()) : result;
  return x != x ? x : result;
}

// exp(x), float, for the x <= 0 of the row sums and softmaxes (x = logit - max or logit - log Z):
// cheaper than vexp_core, because base 2 needs no Cody-Waite split.  y = x log2(e), n = round(y),
// f = y - n in [-1/2, 1/2] (exact), and 2^f = 1 + f P(f) with a degree-6 polynomial whose
// coefficients are a Lawson (iteratively reweighted least-squares) fit of the relative error
// on [-1/2, 1/2]: 2e-9, below float rounding.  The roundings of log2(e) and of x log2(e) add a
// relative error of at most 2 |x| 2^-24 to the result, so this is as accurate as vexp where the
// result matters (x near 0: under 2 ulp) and looser only for tiny results (e^-60 to 7e-6).
// Below -87.3 it returns 2^-126 (1.2e-38) instead of the true value; NaN stays NaN.
inline vfloat vexp_nonpositive(vfloat x) {
  // vmax(-126, y) keeps a NaN y (the comparison is false and y is taken).
  const vfloat y = vmax(splat(-126.0f), x * 1.44269504088896341f);
  const vfloat shifted = y + 12582912.0f;  // 1.5 * 2^23: rounds y to an integer in the low bits
  const vfloat n = shifted - 12582912.0f;
  const vfloat f = y - n;
  vfloat p = splat(1.5353360e-4f);
  p = p * f + 1.3398875e-3f;
  p = p * f + 9.6184369e-3f;
  p = p * f + 5.5503324e-2f;
  p = p * f + 2.4022648e-1f;
  p = p * f + 6.9314718e-1f;
  p = p * f + 1.0f;
  const vuint32 pow2 = ((vuint32)shifted + 127u) << 23;
  return p * (vfloat)pow2;
}

// The double version keeps the full-range vexp: the double kernels are for accuracy first.
inline vdouble vexp_nonpositive(vdouble x) { return vexp(x); }

// log(x), float, for finite normal x > 0 without the special cases.  x = 2^e m with m in
// [sqrt(1/2), sqrt(2)), f = m - 1, and Cephes' degree-9 polynomial (no division).
inline vfloat vlog_core(vfloat x) {
  const vuint32 bits = (vuint32)x;
  // Move m to [sqrt(1/2), sqrt(2)) by biasing the exponent before extracting it.
  const vuint32 biased = bits + (0x3f800000u - 0x3f3504f3u);
  const vuint32 exponent_field = biased >> 23;
  const vfloat e = (vfloat)(exponent_field | 0x4b000000u) - (8388608.0f + 127.0f);
  const vfloat f = (vfloat)((biased & 0x007fffffu) + 0x3f3504f3u) - 1.0f;
  const vfloat z = f * f;
  vfloat p = splat(7.0376836292e-2f);
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const vfloat y = p * f * z + e * -2.12194440e-4f - 0.5f * z;
  return f + y + e * 0.693359375f;
}

inline vfloat vlog(vfloat x) {
  vfloat result = vlog_core(x);
  result = x == 0.0f ? splat(-__builtin_inff()) : result;
  result = x < 0.0f ? splat(__builtin_nanf("")) : result;
  result = x == __builtin_inff() ? x : result;
  return x != x ? x : result;
}

// log(x), double, for finite normal x > 0: the same decomposition, then s = f / (2 + f) and
// log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)) with fdlibm's degree-14 minimax R.
inline vdouble vlog_core(vdouble x) {
  const vuint64 bits = (vuint64)x;
  const vuint64 biased = bits + (0x3ff0000000000000ull - 0x3fe6a09e667f3bcdull);
  const vuint64 exponent_field = biased >> 52;
  const vdouble e = (vdouble)(exponent_field | 0x4330000000000000ull) - (4503599627370496.0 + 1023.0);
  const vdouble m = (vdouble)((biased & 0x000fffffffffffffull) + 0x3fe6a09e667f3bcdull);
  const vdouble f = m - 1.0;
  const vdouble s = f / (f + 2.0);
  const vdouble z = s * s;
  const vdouble w = z * z;
  const vdouble t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01));
  const vdouble t2 =
      z * (6.666666666666735130e-01 +
           w * (2.857142874366239149e-01 + w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
  const vdouble R = t2 + t1;
  const vdouble hfsq = 0.5 * f * f;
  return e * 6.93147180369123816490e-01 - ((hfsq - (s * (hfsq + R) + e * 1.90821492927058770002e-10)) - f);
}

inline vdouble vlog(vdouble x) {
  vdouble result = vlog_core(x);
  result = x == 0.0 ? splat(-__builtin_inf()) : result;
  result = x < 0.0 ? splat(__builtin_nan("")) : result;
  result = x == __builtin_inf() ? x : result;
  return x != x ? x : result;
}

}  // namespace CTC_SIMD_NAMESPACE
}  // namespace cpu
}  // namespace ctc_ext
