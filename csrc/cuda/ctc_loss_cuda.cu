// CUDA implementations of ctc_ext::ctc_loss_forward / ctc_loss_backward: the device guard, the
// current stream and the launch checks around the host code (ctc_loss_host.h) and the kernels
// (ctc_loss_kernels.cuh).  Only light headers here: nvcc compiles this file on two cores in CI.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#define CTC_CHECK_LAUNCH() C10_CUDA_KERNEL_LAUNCH_CHECK()
#include "ctc_loss_kernels.cuh"
#include "ctc_loss_host.h"
#include "cuda_device.h"

namespace ctc_ext {
namespace cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> ctc_loss_forward_cuda(const at::Tensor& logits,
                                                                     const at::Tensor& targets,
                                                                     const at::Tensor& input_lengths,
                                                                     const at::Tensor& target_lengths, int64_t blank,
                                                                     bool keep_log_alpha) {
  check_on_cuda(logits);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  return ctc_loss_forward_device(logits, targets, input_lengths, target_lengths, blank, keep_log_alpha,
                                 multiprocessor_count(logits.device().index()),
                                 c10::cuda::getCurrentCUDAStream().stream());
}

at::Tensor ctc_loss_backward_cuda(const at::Tensor& grad_nll, const at::Tensor& logits, const at::Tensor& targets,
                                  const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                  const at::Tensor& neg_log_likelihood, const at::Tensor& log_alpha,
                                  const at::Tensor& log_normalizer, int64_t blank, bool zero_infinity) {
  check_on_cuda(logits);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  return ctc_loss_backward_device(
      grad_nll, logits, targets, input_lengths, target_lengths, neg_log_likelihood, log_alpha, log_normalizer, blank,
      zero_infinity, multiprocessor_count(logits.device().index()), c10::cuda::getCurrentCUDAStream().stream());
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(ctc_ext, CUDA, m) {
  m.impl("ctc_loss_forward", &cuda::ctc_loss_forward_cuda);
  m.impl("ctc_loss_backward", &cuda::ctc_loss_backward_cuda);
}

}  // namespace ctc_ext
