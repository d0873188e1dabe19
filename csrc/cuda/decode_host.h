// Host side of the CUDA decoders: argument checks, normalisation, allocation and dtype dispatch
// around launch_greedy_decode / launch_forced_align.  Shared by the CUDA build (decode_cuda.cu
// adds the device guard, stream and launch checks) and the CPU emulation test extension.
// Include decode_kernels.cuh and ctc_loss_host.h first.
//
// Value checks follow the loss (ctc_loss_host.h): lengths and targets that live on the host are
// checked there with the CPU op's messages; values on the device are checked by the kernels,
// which mark an invalid sample (label_lengths -1 for greedy_decode, a NaN path_log_prob for
// forced_align) and read nothing out of range.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>

#include <tuple>

#include "../arguments.h"

namespace ctc_ext {
namespace cuda {

// Same semantics and outputs as greedy_decode_cpu:
//   logits (T, N, C) floating, input_lengths (N,) integer ->
//   labels (N, T) int64 padded with -1, label_lengths (N,) int64.
inline std::tuple<at::Tensor, at::Tensor> greedy_decode_device(const at::Tensor& logits_in,
                                                               const at::Tensor& input_lengths, int64_t blank,
                                                               int64_t multiprocessor_count, cudaStream_t stream) {
  at::Tensor lengths = decode_input_lengths(logits_in, input_lengths, blank);  // (N,) int64
  const int64_t T = logits_in.size(0), N = logits_in.size(1), C = logits_in.size(2);
  // Lengths on the host are checked there; those on the device, by the kernel.  (Under the CPU
  // emulation the "device" is the CPU, so there the kernel's checks are the ones exercised.)
  if (lengths.is_cpu() && !logits_in.is_cpu()) check_input_length_values(lengths, T);
  lengths = lengths.to(logits_in.device());
  const at::Tensor logits = with_contiguous_classes(logits_in);
  const auto long_options = logits.options().dtype(at::kLong);
  at::Tensor labels = at::empty({N, T}, long_options);
  at::Tensor label_lengths = at::empty({N}, long_options);
  at::Tensor best_class = at::empty({N, T}, long_options);
  if (N == 0) return {labels, label_lengths};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "greedy_decode_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_greedy_decode<scalar_t, acc_t>(logits.const_data_ptr<scalar_t>(), logits.stride(0), logits.stride(1), T, N,
                                          C, lengths.const_data_ptr<int64_t>(), blank, best_class.data_ptr<int64_t>(),
                                          labels.data_ptr<int64_t>(), label_lengths.data_ptr<int64_t>(),
                                          multiprocessor_count, stream);
  });
  return {labels, label_lengths};
}

// Same semantics and outputs as forced_align_cpu:
//   logits (T, N, C) floating, targets (N, S) padded or 1-D concatenated, lengths (N,) ->
//   alignment (N, T) int64, frame_log_probs (N, T) and path_log_prob (N,) in the accumulation
//   dtype.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> forced_align_device(const at::Tensor& logits,
                                                                          const at::Tensor& targets,
                                                                          const at::Tensor& input_lengths,
                                                                          const at::Tensor& target_lengths,
                                                                          int64_t blank, cudaStream_t stream) {
  check_values_on_host_if_there(logits, targets, input_lengths, target_lengths, blank);
  const CtcProblem problem = prepare_ctc_problem(logits, targets, input_lengths, target_lengths, blank);
  const int64_t T = problem.max_input_length, N = problem.batch_size;
  // The CPU op's normaliser (the same ATen logsumexp), so the scores agree bit for bit.
  const NormalisedFrames normalised = normalised_frames(logits);
  const at::Tensor& frames = normalised.frames;                  // (T, N, C), unit class stride
  const at::Tensor& log_normalizer = normalised.log_normalizer;  // (T, N) contiguous
  const at::Tensor labels = problem.targets.to(at::kLong);       // int32 targets widened on the device
  const auto acc_options = frames.options();
  at::Tensor alignment = at::full({N, T}, -1, logits.options().dtype(at::kLong));
  at::Tensor frame_log_probs = at::zeros({N, T}, acc_options);
  at::Tensor path_log_prob = at::empty({N}, acc_options);
  if (N == 0) return {alignment, frame_log_probs, path_log_prob};
  at::Tensor score_rows = at::empty({viterbi_score_rows_numel(N, problem.num_target_slots)}, acc_options);
  at::Tensor back_pointers =
      at::empty({viterbi_back_pointers_numel(N, problem.num_target_slots, T)}, acc_options.dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES(frames.scalar_type(), "forced_align_cuda", [&] {
    using acc_t = scalar_t;
    const CtcProblemView<acc_t, int64_t> view = problem_view<acc_t, int64_t>(problem, frames, labels);
    launch_forced_align<acc_t>(view, log_normalizer.const_data_ptr<acc_t>(), score_rows.data_ptr<acc_t>(),
                               back_pointers.data_ptr<BackPointer>(), alignment.data_ptr<int64_t>(),
                               frame_log_probs.data_ptr<acc_t>(), path_log_prob.data_ptr<acc_t>(), stream);
  });
  return {alignment, frame_log_probs, path_log_prob};
}

}  // namespace cuda
}  // namespace ctc_ext
