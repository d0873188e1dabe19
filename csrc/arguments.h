// Argument checks and normalisation shared by every backend's ctc_loss host code.
#pragma once

#include <ATen/core/Tensor.h>

namespace ctc_ext {

// The arguments of a CTC op after normalisation; every tensor lives on logits' device.
struct CtcProblem {
  int64_t max_input_length;  // T
  int64_t batch_size;        // N
  int64_t num_classes;       // C
  int64_t blank;
  int64_t num_target_slots;   // targets.numel(): N * S when padded, the concatenated length otherwise
  bool padded_targets;        // targets given as (N, S)
  at::Tensor targets;         // (num_target_slots,) contiguous, int32 or int64
  at::Tensor label_start;     // (N,) int64: where each sample's labels begin in `targets`
  at::Tensor input_lengths;   // (N,) int64 contiguous
  at::Tensor target_lengths;  // (N,) int64 contiguous
};

// Checks dims, dtypes, sizes and devices (never reads tensor data, so never synchronises) and
// builds the normalised problem.  Errors name the offending argument.
CtcProblem prepare_ctc_problem(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& input_lengths,
                               const at::Tensor& target_lengths, int64_t blank);

// Value checks that read the data of CPU tensors: lengths within range, every label in [0, C)
// and not the blank.  Out-of-range labels must never reach a kernel, which would read outside
// the logits row.
void check_ctc_values_on_cpu(const CtcProblem& problem);

// Checks that the forward state handed to ctc_loss_backward fits this problem: log_alpha was kept,
// and dtypes, shapes and devices are those ctc_loss_forward returns.
void check_ctc_backward_state(const CtcProblem& problem, const at::Tensor& logits, const at::Tensor& grad_nll,
                              const at::Tensor& neg_log_likelihood, const at::Tensor& log_alpha,
                              const at::Tensor& log_normalizer);

// A logits view whose class dimension is unit-stride (a copy only when it is not).
at::Tensor with_contiguous_classes(const at::Tensor& logits);

// ---------------------------------------------------------------------------------------------
// Decoders.
// Checks logits (T, N, C) floating with C > 0, blank in [0, C) and input_lengths (N,) integer on
// the CPU or logits' device, with the loss's messages; never reads tensor data.  Returns the input
// lengths as (N,) int64 contiguous, on the device where they were given.
at::Tensor decode_input_lengths(const at::Tensor& logits, const at::Tensor& input_lengths, int64_t blank);

// Checks that every input length is in [0, T]; input_lengths: (N,) int64 contiguous on the CPU.
void check_input_length_values(const at::Tensor& input_lengths, int64_t T);

// The CPU decoders' checks: logits on the CPU, decode_input_lengths and check_input_length_values.
// Returns the input lengths as (N,) int64 contiguous on the CPU.
at::Tensor checked_decode_input_lengths(const at::Tensor& logits, const at::Tensor& input_lengths, int64_t blank);

// The logits (T, N, C) in the accumulation dtype (float32 for float16 / bfloat16 / float32,
// float64 for float64) with unit class stride (no copy for such float32 / float64 input), and the
// log-softmax normaliser (T, N) of every frame: frames[t][n][c] - log_normalizer[t][n] is the
// log-probability of class c.  Kernels form it only for the classes they read, so no (T, N, C)
// log_softmax copy is made.
struct NormalisedFrames {
  at::Tensor frames;          // (T, N, C), unit class stride
  at::Tensor log_normalizer;  // (T, N) contiguous
};
NormalisedFrames normalised_frames(const at::Tensor& logits);

}  // namespace ctc_ext
