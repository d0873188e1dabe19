// Body of the row primitives declared in lattice_kernels.h, included by one TU per instruction
// set after its `#pragma GCC target` (see simd_math.h).  Every element goes through the same
// vector arithmetic, ragged ends included (see for_each_vector).
#pragma once

#include "simd_math.h"

namespace ctc_ext {
namespace cpu {
namespace CTC_SIMD_NAMESPACE {
namespace {

// log(exp(a) + exp(b) + exp(c)) per lane: the largest term factored out, so two exps of
// non-positive arguments and one log of a value in [1, 3].  -inf when all three are -inf.
template <typename acc_t, typename vec = typename Simd<acc_t>::vec>
inline vec log_add3(vec a, vec b, vec c) {
  const vec hi = vmax(vmax(a, b), c);
  const vec lo = vmin(vmin(a, b), c);
  const vec mid = vmax(vmin(a, b), vmin(vmax(a, b), c));
  // A finite reference keeps (-inf) - (-inf) from making NaN; the result stays hi + 0 = -inf.
  const vec reference = vmax(hi, splat<acc_t>(Simd<acc_t>::lowest));
  // Both exponents are <= 0 and the log's argument is in [1, 3]: the core functions suffice.
  // (A NaN frame still makes every state NaN: it enters each one through its emission.)
  return hi + vlog_core(acc_t(1) + vexp_core(mid - reference) + vexp_core(lo - reference));
}

// Runs `body(offset, valid)` over [begin, end) in whole vectors.  A ragged end is covered by
// one more whole vector ending at `end`, which recomputes a few elements: every body here
// writes outputs that depend only on its inputs, so that is harmless.  Ranges shorter than a
// vector get valid < lanes, and the body then works on padded copies.
template <typename acc_t, typename Body>
inline void for_each_vector(int64_t begin, int64_t end, Body body) {
  constexpr int lanes = Simd<acc_t>::lanes;
  if (end - begin < lanes) {
    if (end > begin) body(begin, static_cast<int>(end - begin));
    return;
  }
  int64_t s = begin;
  for (; s + lanes <= end; s += lanes) body(s, lanes);
  if (s < end) body(end - lanes, lanes);
}

template <typename acc_t>
inline typename Simd<acc_t>::vec load_partial(const acc_t* p, int valid, acc_t fill) {
  if (valid == Simd<acc_t>::lanes) return load(p);
  acc_t padded[Simd<acc_t>::lanes];
  for (int i = 0; i < Simd<acc_t>::lanes; ++i) padded[i] = i < valid ? p[i] : fill;
  return load(padded);
}

template <typename acc_t>
inline void store_partial(acc_t* p, typename Simd<acc_t>::vec v, int valid) {
  if (valid == Simd<acc_t>::lanes) return store(p, v);
  acc_t padded[Simd<acc_t>::lanes];
  store(padded, v);
  for (int i = 0; i < valid; ++i) p[i] = padded[i];
}

// Horizontal max / sum of one vector as a tree (log2(lanes) dependent steps, not lanes).
template <typename acc_t>
inline acc_t reduce_max(typename Simd<acc_t>::vec v) {
  acc_t lanes[Simd<acc_t>::lanes];
  store(lanes, v);
  for (int width = Simd<acc_t>::lanes / 2; width >= 1; width /= 2) {
    for (int i = 0; i < width; ++i) lanes[i] = lanes[i + width] > lanes[i] ? lanes[i + width] : lanes[i];
  }
  return lanes[0];
}

template <typename acc_t>
inline acc_t reduce_add(typename Simd<acc_t>::vec v) {
  acc_t lanes[Simd<acc_t>::lanes];
  store(lanes, v);
  for (int width = Simd<acc_t>::lanes / 2; width >= 1; width /= 2) {
    for (int i = 0; i < width; ++i) lanes[i] += lanes[i + width];
  }
  return lanes[0];
}

template <typename acc_t>
acc_t row_logsumexp(const acc_t* row, int64_t num_classes, const acc_t* prefetch_row) {
  using vec = typename Simd<acc_t>::vec;
  constexpr int lanes = Simd<acc_t>::lanes;
  constexpr acc_t minus_inf = -__builtin_huge_val();
  // The max is idempotent, so the overlapping last vector of for_each_vector is fine here.
  vec max_lanes = splat<acc_t>(minus_inf);
  for_each_vector<acc_t>(0, num_classes, [&](int64_t k, int valid) {
    max_lanes = vmax(max_lanes, load_partial(row + k, valid, minus_inf));
  });
  const acc_t max_value = reduce_max<acc_t>(max_lanes);
  // An all -inf row has no mass; a +inf entry makes the normaliser +inf (NaN rows follow below).
  if (max_value == minus_inf || max_value == -minus_inf) return max_value;
  // The sum is not idempotent: the ragged end is one padded load instead.  Two accumulators
  // halve the add chain; the row is in L1 after the max pass, so this loop is bound by the exp
  // and has time to pull the next row in from memory, one cache line per step.
  constexpr int step = 2 * lanes;
  const char* prefetch_bytes = reinterpret_cast<const char*>(prefetch_row != nullptr ? prefetch_row : row);
  const vec max_splat = splat<acc_t>(max_value);
  vec sum_even = vec{}, sum_odd = vec{};
  int64_t k = 0;
  for (; k + step <= num_classes; k += step) {
    for (int byte = 0; byte < step * int(sizeof(acc_t)); byte += 64) {
      __builtin_prefetch(prefetch_bytes + k * int64_t(sizeof(acc_t)) + byte);
    }
    sum_even += vexp_nonpositive(load<acc_t>(row + k) - max_splat);
    sum_odd += vexp_nonpositive(load<acc_t>(row + k + lanes) - max_splat);
  }
  for (; k < num_classes; k += lanes) {
    const int valid = num_classes - k < lanes ? static_cast<int>(num_classes - k) : lanes;
    sum_even += vexp_nonpositive(load_partial(row + k, valid, minus_inf) - max_splat);
  }
  return max_value + vlog(splat<acc_t>(reduce_add<acc_t>(sum_even + sum_odd)))[0];
}

// alpha_step / beta_step: ctc_math.h's alpha_state / beta_state over [begin, end), lane-wise.
// The rows are whole (-inf off the band), so plain loads replace LatticeRow's band test, and the
// skip link is an additive penalty (0 or -inf) instead of a branch.
template <typename acc_t>
void alpha_step(const acc_t* previous, const acc_t* emission, const acc_t* skip_penalty, acc_t* current, int64_t begin,
                int64_t end) {
  for_each_vector<acc_t>(begin, end, [&](int64_t s, int valid) {
    constexpr acc_t minus_inf = -__builtin_huge_val();
    const auto stay = load_partial(previous + s, valid, minus_inf);
    const auto advance = load_partial(previous + s - 1, valid, minus_inf);
    const auto skip =
        load_partial(previous + s - 2, valid, minus_inf) + load_partial(skip_penalty + s, valid, minus_inf);
    store_partial(current + s, load_partial(emission + s, valid, acc_t(0)) + log_add3<acc_t>(stay, advance, skip),
                  valid);
  });
}

template <typename acc_t>
void beta_step(const acc_t* next, const acc_t* emission, const acc_t* skip_penalty, acc_t* current, int64_t begin,
               int64_t end) {
  for_each_vector<acc_t>(begin, end, [&](int64_t s, int valid) {
    constexpr acc_t minus_inf = -__builtin_huge_val();
    const auto stay = load_partial(next + s, valid, minus_inf);
    const auto advance = load_partial(next + s + 1, valid, minus_inf);
    const auto skip =
        load_partial(next + s + 2, valid, minus_inf) + load_partial(skip_penalty + s + 2, valid, minus_inf);
    store_partial(current + s, load_partial(emission + s, valid, acc_t(0)) + log_add3<acc_t>(stay, advance, skip),
                  valid);
  });
}

template <typename acc_t>
void occupancy(const acc_t* log_alpha, const acc_t* log_beta, const acc_t* emission, acc_t* out, int64_t begin,
               int64_t end) {
  using vec = typename Simd<acc_t>::vec;
  constexpr acc_t minus_inf = -__builtin_huge_val();
  auto log_occupancy = [&](int64_t s, int valid) {
    return load_partial(log_alpha + s, valid, minus_inf) + load_partial(log_beta + s, valid, minus_inf) -
           load_partial(emission + s, valid, acc_t(0));
  };
  // The max is idempotent, so the overlapping last vector of for_each_vector is fine; the exp
  // pass recomputes its argument from the inputs for the same reason (out is not re-read).
  vec max_lanes = splat<acc_t>(minus_inf);
  for_each_vector<acc_t>(begin, end,
                         [&](int64_t s, int valid) { max_lanes = vmax(max_lanes, log_occupancy(s, valid)); });
  acc_t reference = reduce_max<acc_t>(max_lanes);
  if (reference == minus_inf) reference = 0;  // no reachable state: zeros, not (-inf) - (-inf)
  const vec reference_splat = splat<acc_t>(reference);
  for_each_vector<acc_t>(begin, end, [&](int64_t s, int valid) {
    store_partial(out + s, vexp(log_occupancy(s, valid) - reference_splat), valid);
  });
}

template <typename acc_t>
void gather_emissions(const acc_t* frame, const int64_t* state_labels, acc_t log_normalizer, acc_t* emission,
                      int64_t begin, int64_t end) {
  for (int64_t s = begin; s < end; ++s) emission[s] = frame[state_labels[s]] - log_normalizer;
}

template <typename acc_t>
void scaled_softmax(const acc_t* row, acc_t log_normalizer, acc_t scale, acc_t* out, int64_t num_classes) {
  for_each_vector<acc_t>(0, num_classes, [&](int64_t k, int valid) {
    store_partial(out + k, scale * vexp_nonpositive(load_partial(row + k, valid, acc_t(0)) - log_normalizer), valid);
  });
}

template <typename acc_t>
void exp_elementwise(const acc_t* in, acc_t* out, int64_t count) {
  for_each_vector<acc_t>(0, count, [&](int64_t i, int valid) {
    store_partial(out + i, vexp(load_partial(in + i, valid, acc_t(0))), valid);
  });
}

template <typename acc_t>
void exp_nonpositive_elementwise(const acc_t* in, acc_t* out, int64_t count) {
  for_each_vector<acc_t>(0, count, [&](int64_t i, int valid) {
    store_partial(out + i, vexp_nonpositive(load_partial(in + i, valid, acc_t(0))), valid);
  });
}

template <typename acc_t>
void log_elementwise(const acc_t* in, acc_t* out, int64_t count) {
  for_each_vector<acc_t>(0, count, [&](int64_t i, int valid) {
    store_partial(out + i, vlog(load_partial(in + i, valid, acc_t(1))), valid);
  });
}

// Half-precision rows, vectorised with integer operations on the bit patterns (no F16C needed,
// so every instruction set gets the same exact results).  Lanes hold one 32-bit float each; the
// 16-bit inputs / outputs are widened / narrowed with __builtin_convertvector.
typedef unsigned short vuint16_of_float __attribute__((vector_size(CTC_SIMD_BYTES / 2), aligned(2)));

inline vuint32 splat_bits(unsigned value) { return vuint32{} + value; }

// IEEE binary16 bits (low 16 bits of each lane) to float: rebias the exponent; infinities and
// NaNs get the float's all-ones exponent; subnormals renormalise through one float subtraction.
inline vfloat half_bits_to_float(vuint32 h) {
  const vuint32 sign = (h & 0x8000u) << 16;
  const vuint32 magnitude = (h & 0x7fffu) << 13;
  const vuint32 exponent = magnitude & (0x7c00u << 13);
  const vuint32 normal = magnitude + ((127u - 15u) << 23);
  const vuint32 special = normal + ((128u - 16u) << 23);
  const vfloat subnormal = (vfloat)(normal + (1u << 23)) - 6.103515625e-05f;  // 2^-14
  vuint32 bits = exponent == (0x7c00u << 13) ? special : normal;
  bits = exponent == 0u ? (vuint32)subnormal : bits;
  return (vfloat)(bits | sign);
}

// Float to binary16 bits, round to nearest even (F. Giesen's float_to_half_fast3_rtne, per lane):
// overflow to inf, NaN to a quiet NaN, subnormal results through a float addition that rounds.
inline vuint32 float_to_half_bits(vfloat f) {
  const vuint32 bits = (vuint32)f;
  const vuint32 sign = bits & 0x80000000u;
  const vuint32 magnitude = bits ^ sign;
  const vuint32 overflowed = magnitude > (255u << 23) ? splat_bits(0x7e00u) : splat_bits(0x7c00u);
  const vfloat denormal_magic = (vfloat)splat_bits(((127u - 15u) + (23u - 10u) + 1u) << 23);
  const vuint32 subnormal = (vuint32)((vfloat)magnitude + denormal_magic) - (vuint32)denormal_magic;
  const vuint32 odd_mantissa = (magnitude >> 13) & 1u;
  const vuint32 normal = (magnitude + (((15u - 127u) << 23) + 0xfffu) + odd_mantissa) >> 13;
  vuint32 result = magnitude < (113u << 23) ? subnormal : normal;
  result = magnitude >= ((127u + 16u) << 23) ? overflowed : result;
  return result | (sign >> 16);
}

// bfloat16 is the top half of a float: widening is a shift; narrowing rounds to nearest even on
// the dropped half and keeps NaN quiet (torch's c10::BFloat16 rule).
inline vfloat bfloat16_bits_to_float(vuint32 h) { return (vfloat)(h << 16); }

inline vuint32 float_to_bfloat16_bits(vfloat f) {
  const vuint32 bits = (vuint32)f;
  const vuint32 rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  return f != f ? splat_bits(0x7fc0u) : rounded;
}

// The 16-bit inputs of one vector, padded with zeros when fewer than a vector remain.
inline vuint32 load_bits_partial(const uint16_t* in, int valid) {
  uint16_t padded[Simd<float>::lanes] = {};
  const uint16_t* source = in;
  if (valid < Simd<float>::lanes) {
    for (int k = 0; k < valid; ++k) padded[k] = in[k];
    source = padded;
  }
  vuint16_of_float packed;
  __builtin_memcpy(&packed, source, sizeof(packed));
  return __builtin_convertvector(packed, vuint32);
}

// The low 16 bits of each lane, the first `valid` of them.
inline void store_bits_partial(uint16_t* out, vuint32 bits, int valid) {
  const vuint16_of_float packed = __builtin_convertvector(bits, vuint16_of_float);
  if (valid == Simd<float>::lanes) {
    __builtin_memcpy(out, &packed, sizeof(packed));
    return;
  }
  uint16_t result[Simd<float>::lanes];
  __builtin_memcpy(result, &packed, sizeof(packed));
  for (int k = 0; k < valid; ++k) out[k] = result[k];
}

template <vfloat (*to_float)(vuint32)>
void widen_row(const uint16_t* in, float* out, int64_t count) {
  for_each_vector<float>(0, count, [&](int64_t i, int valid) {
    store_partial(out + i, to_float(load_bits_partial(in + i, valid)), valid);
  });
}

template <vuint32 (*from_float)(vfloat)>
void narrow_row(const float* in, uint16_t* out, int64_t count) {
  for_each_vector<float>(0, count, [&](int64_t i, int valid) {
    store_bits_partial(out + i, from_float(load_partial(in + i, valid, 0.0f)), valid);
  });
}

template <typename acc_t>
LatticeKernels<acc_t> lattice_kernels() {
  LatticeKernels<acc_t> kernels{&row_logsumexp<acc_t>,
                                &alpha_step<acc_t>,
                                &beta_step<acc_t>,
                                &occupancy<acc_t>,
                                &gather_emissions<acc_t>,
                                &scaled_softmax<acc_t>,
                                &exp_elementwise<acc_t>,
                                &log_elementwise<acc_t>,
                                &exp_nonpositive_elementwise<acc_t>,
                                nullptr,
                                nullptr,
                                nullptr,
                                nullptr};
  if constexpr (std::is_same_v<acc_t, float>) {
    kernels.half_to_acc = &widen_row<half_bits_to_float>;
    kernels.acc_to_half = &narrow_row<float_to_half_bits>;
    kernels.bfloat16_to_acc = &widen_row<bfloat16_bits_to_float>;
    kernels.acc_to_bfloat16 = &narrow_row<float_to_bfloat16_bits>;
  }
  return kernels;
}

}  // namespace
}  // namespace CTC_SIMD_NAMESPACE
}  // namespace cpu
}  // namespace ctc_ext
