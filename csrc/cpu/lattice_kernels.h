// The row-level primitives of the CPU CTC kernels, compiled once per instruction set
// (lattice_kernels_generic.cpp, _avx2.cpp, _avx512.cpp from lattice_kernels_impl.h) and picked
// at run time by cpu_kernels() (ctc_loss_cpu.cpp).  The per-sample schedule that calls them
// lives in ctc_loss_cpu.cpp; the recurrence they vectorise is the one of csrc/ctc_math.h.
//
// Conventions: rows are indexed by extended state s (0 <= s < W = 2L + 1); `emission[s]` is
// log y[t][l'_s]; `skip_penalty[s]` is 0 where can_skip_from(s) and -inf elsewhere.
#pragma once

#include <cstdint>
#include <type_traits>

namespace ctc_ext {
namespace cpu {

template <typename acc_t>
struct LatticeKernels {
  // log(sum_k exp(row[k])), k < num_classes; -inf for an all -inf row, +inf if any entry is +inf.
  // Meanwhile prefetches prefetch_row[0, num_classes) (the row wanted next; nullptr for none).
  acc_t (*row_logsumexp)(const acc_t* row, int64_t num_classes, const acc_t* prefetch_row);
  // For s in [begin, end), begin >= 2:
  //   current[s] = emission[s] + logsumexp(previous[s], previous[s-1], previous[s-2] + skip_penalty[s])
  void (*alpha_step)(const acc_t* previous, const acc_t* emission, const acc_t* skip_penalty, acc_t* current,
                     int64_t begin, int64_t end);
  // For s in [begin, end), end <= W - 2:
  //   current[s] = emission[s] + logsumexp(next[s], next[s+1], next[s+2] + skip_penalty[s+2])
  void (*beta_step)(const acc_t* next, const acc_t* emission, const acc_t* skip_penalty, acc_t* current, int64_t begin,
                    int64_t end);
  // occupancy[s] = exp(log_alpha[s] + log_beta[s] - emission[s] - m), s in [begin, end), where m is
  // the largest of those exponents: the occupancies relative to the frame's likeliest state (which
  // gets 1), for the caller to normalise by their sum.  Not relative to the loss: with logits near
  // 1e10 (float) the rounding of alpha + beta + loss alone exceeds exp's range.
  void (*occupancy)(const acc_t* log_alpha, const acc_t* log_beta, const acc_t* emission, acc_t* occupancy,
                    int64_t begin, int64_t end);
  // emission[s] = frame[state_labels[s]] - log_normalizer, s in [begin, end) (a gather the
  // compiler vectorises for the target).
  void (*gather_emissions)(const acc_t* frame, const int64_t* state_labels, acc_t log_normalizer, acc_t* emission,
                           int64_t begin, int64_t end);
  // out[k] = scale * exp(row[k] - log_normalizer), k < num_classes (the scaled softmax).
  void (*scaled_softmax)(const acc_t* row, acc_t log_normalizer, acc_t scale, acc_t* out, int64_t num_classes);
  // Element-wise exp / log of the vector math (exposed for the accuracy tests).
  void (*exp)(const acc_t* in, acc_t* out, int64_t count);
  void (*log)(const acc_t* in, acc_t* out, int64_t count);
  // The cheaper exp of the row sums and softmaxes, meant for in[i] <= 0 (see vexp_nonpositive).
  void (*exp_nonpositive)(const acc_t* in, acc_t* out, int64_t count);
  // Rows of float16 / bfloat16 (as their bit patterns) to and from acc_t, exactly as
  // c10::Half / c10::BFloat16 convert (round to nearest even, NaN stays NaN).  Only the float
  // table has them (half-precision logits accumulate in float); nullptr in the double one.
  void (*half_to_acc)(const uint16_t* in, acc_t* out, int64_t count);
  void (*acc_to_half)(const acc_t* in, uint16_t* out, int64_t count);
  void (*bfloat16_to_acc)(const uint16_t* in, acc_t* out, int64_t count);
  void (*acc_to_bfloat16)(const acc_t* in, uint16_t* out, int64_t count);
};

struct CpuKernelTable {
  const char* isa;  // "generic", "avx2" or "avx512"
  LatticeKernels<float> f32;
  LatticeKernels<double> f64;
};

// Each returns nullptr when that instruction set was not compiled in (non-x86 builds).
const CpuKernelTable* generic_kernel_table();
const CpuKernelTable* avx2_kernel_table();
const CpuKernelTable* avx512_kernel_table();

}  // namespace cpu
}  // namespace ctc_ext
