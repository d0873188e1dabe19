// Host side of the CUDA ops: argument checks, normalisation, allocation and dtype dispatch around
// launch_ctc_forward / launch_ctc_backward.  Shared by the CUDA build (ctc_loss_cuda.cu adds the
// device guard, stream and launch checks) and the CPU emulation test extension, so the emulated
// tests run this code too.  Include ctc_loss_kernels.cuh first.
//
// Label and length validation: when logits live on the GPU but targets and both lengths are CPU
// tensors, the values are checked on the host (check_ctc_values_on_cpu, a clear error).  When they
// are on the device, the kernels check them there, without a host synchronisation: a sample with
// an invalid length or label gets a NaN loss and a NaN gradient and nothing out of range is read.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <tuple>

#include "../arguments.h"
#include "../ctc_math.h"

namespace ctc_ext {
namespace cuda {

// Checks label and length values on the host when they are there and the logits are not.
inline void check_values_on_host_if_there(const at::Tensor& logits, const at::Tensor& targets,
                                          const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                          int64_t blank) {
  const bool values_on_host = targets.is_cpu() && input_lengths.is_cpu() && target_lengths.is_cpu();
  if (!values_on_host || logits.is_cpu() || logits.dim() != 3) return;
  // A logits stand-in on the CPU: prepare_ctc_problem only looks at its shape and dtype.
  const at::Tensor host_logits =
      at::empty({1, 1, 1}, logits.options().device(at::kCPU)).expand({logits.size(0), logits.size(1), logits.size(2)});
  check_ctc_values_on_cpu(prepare_ctc_problem(host_logits, targets, input_lengths, target_lengths, blank));
}

template <typename scalar_t, typename index_t>
CtcProblemView<scalar_t, index_t> problem_view(const CtcProblem& problem, const at::Tensor& logits,
                                               const at::Tensor& labels) {
  return {logits.const_data_ptr<scalar_t>(),
          logits.stride(0),
          logits.stride(1),
          labels.const_data_ptr<index_t>(),
          problem.label_start.const_data_ptr<int64_t>(),
          problem.input_lengths.const_data_ptr<int64_t>(),
          problem.target_lengths.const_data_ptr<int64_t>(),
          problem.max_input_length,
          problem.batch_size,
          problem.num_classes,
          problem.blank,
          problem.num_target_slots,
          problem.padded_targets ? problem.num_target_slots / problem.batch_size : -1};
}

// Same semantics and output layouts as ctc_loss_forward_cpu:
//   logits (T, N, C) -> neg_log_likelihood (N,), log_alpha (flat, ctc_math.h layout, or empty),
//   log_normalizer (N, T); all in the accumulation dtype.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> ctc_loss_forward_device(
    const at::Tensor& logits_in, const at::Tensor& targets, const at::Tensor& input_lengths,
    const at::Tensor& target_lengths, int64_t blank, bool keep_log_alpha, int64_t multiprocessor_count,
    cudaStream_t stream) {
  check_values_on_host_if_there(logits_in, targets, input_lengths, target_lengths, blank);
  const CtcProblem problem = prepare_ctc_problem(logits_in, targets, input_lengths, target_lengths, blank);
  const at::Tensor logits = with_contiguous_classes(logits_in);
  // One index type for the kernels (int32 targets are widened on the device, without a sync).
  const at::Tensor labels = problem.targets.to(at::kLong);
  const int64_t T = problem.max_input_length, N = problem.batch_size;
  const auto acc_options = logits.options().dtype(at::toOpMathType(logits.scalar_type()));
  at::Tensor neg_log_likelihood = at::empty({N}, acc_options);
  at::Tensor log_normalizer = at::empty({N, T}, acc_options);
  const int64_t alpha_numel = keep_log_alpha ? log_alpha_numel(N, problem.num_target_slots, T)
                                             : forward_scratch_numel(N, problem.num_target_slots);
  at::Tensor log_alpha = at::empty({alpha_numel}, acc_options);
  if (N > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ctc_loss_forward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      launch_ctc_forward<scalar_t, acc_t, int64_t>(problem_view<scalar_t, int64_t>(problem, logits, labels),
                                                   keep_log_alpha, neg_log_likelihood.data_ptr<acc_t>(),
                                                   log_alpha.data_ptr<acc_t>(), log_normalizer.data_ptr<acc_t>(),
                                                   multiprocessor_count, stream);
    });
  }
  if (!keep_log_alpha) log_alpha = at::empty({0}, acc_options);
  return {neg_log_likelihood, log_alpha, log_normalizer};
}

// Same semantics as ctc_loss_backward_cpu: the (T, N, C) gradient, empty_like(logits).
inline at::Tensor ctc_loss_backward_device(const at::Tensor& grad_nll, const at::Tensor& logits_in,
                                           const at::Tensor& targets, const at::Tensor& input_lengths,
                                           const at::Tensor& target_lengths, const at::Tensor& neg_log_likelihood,
                                           const at::Tensor& log_alpha, const at::Tensor& log_normalizer, int64_t blank,
                                           bool zero_infinity, int64_t multiprocessor_count, cudaStream_t stream) {
  check_values_on_host_if_there(logits_in, targets, input_lengths, target_lengths, blank);
  const CtcProblem problem = prepare_ctc_problem(logits_in, targets, input_lengths, target_lengths, blank);
  const at::Tensor logits = with_contiguous_classes(logits_in);
  const int64_t N = problem.batch_size;
  const auto acc_type = at::toOpMathType(logits.scalar_type());
  check_ctc_backward_state(problem, logits, grad_nll, neg_log_likelihood, log_alpha, log_normalizer);

  at::Tensor grad = at::empty_like(logits_in);
  // Kernels write rows with unit class stride; a gradient laid out otherwise is filled afterwards.
  at::Tensor grad_out = grad.stride(2) == 1 ? grad : at::empty_like(logits);
  if (grad.numel() == 0) return grad;
  const at::Tensor labels = problem.targets.to(at::kLong);
  const at::Tensor grad_scale = grad_nll.to(acc_type).contiguous();
  // An empty log_alpha (ctc_loss_forward with keep_log_alpha=False) is recomputed here.
  const at::Tensor alpha = log_alpha.numel() > 0
                               ? log_alpha.contiguous()
                               : std::get<1>(ctc_loss_forward_device(logits_in, targets, input_lengths, target_lengths,
                                                                     blank, true, multiprocessor_count, stream));
  const at::Tensor normalizer = log_normalizer.contiguous();
  const at::Tensor nll = neg_log_likelihood.contiguous();
  const auto acc_options = logits.options().dtype(acc_type);
  // Scratch: rolling log_beta and occupancy rows (4 W_n per sample, not T W_n), label links.
  at::Tensor lattice_scratch = at::empty({backward_lattice_scratch_numel(N, problem.num_target_slots)}, acc_options);
  at::Tensor label_links = at::empty({3 * problem.num_target_slots}, logits.options().dtype(at::kLong));
  at::Tensor sample_state = at::empty({N}, logits.options().dtype(at::kInt));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ctc_loss_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_ctc_backward<scalar_t, acc_t, int64_t>(
        problem_view<scalar_t, int64_t>(problem, logits, labels), zero_infinity, grad_scale.const_data_ptr<acc_t>(),
        nll.const_data_ptr<acc_t>(), alpha.const_data_ptr<acc_t>(), normalizer.const_data_ptr<acc_t>(),
        lattice_scratch.data_ptr<acc_t>(), label_links.data_ptr<int64_t>(), sample_state.data_ptr<int32_t>(),
        grad_out.data_ptr<scalar_t>(), grad_out.stride(0), grad_out.stride(1), multiprocessor_count, stream);
  });
  if (!grad_out.is_same(grad)) grad.copy_(grad_out);
  return grad;
}

}  // namespace cuda
}  // namespace ctc_ext
