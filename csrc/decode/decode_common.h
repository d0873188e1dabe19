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

// log_softmax over the classes of logits (T, N, C), in the accumulation dtype (float32 for
// float16 / bfloat16 / float32, float64 for float64), with unit class stride.
at::Tensor log_softmax_in_acc_type(const at::Tensor& logits);

}  // namespace ctc_ext
