// Argument checks and helpers shared by the CPU decoders (greedy, prefix beam search) and the
// forced aligner.
#pragma once

#include <ATen/core/Tensor.h>

namespace ctc_ext {

// Checks logits (T, N, C) floating, blank in [0, C) and input_lengths (N,) integer in [0, T]
// with the loss's own checks (prepare_ctc_problem / check_ctc_values_on_cpu on an empty
// target), so every op reports bad arguments with the same messages.  Returns the input
// lengths as (N,) int64 contiguous on the CPU.
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
