// CUDA implementations of ctc_ext::greedy_decode and ctc_ext::forced_align: the device guard, the
// current stream and the launch checks around the host code (decode_host.h) and the kernels
// (decode_kernels.cuh).  beam_search stays CPU-only (csrc/cpu/beam_search_cpu.cpp).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#define CTC_CHECK_LAUNCH() C10_CUDA_KERNEL_LAUNCH_CHECK()
#include "ctc_loss_kernels.cuh"
#include "decode_kernels.cuh"
#include "ctc_loss_host.h"
#include "decode_host.h"
#include "cuda_device.h"

namespace ctc_ext {
namespace cuda {
namespace {

// logits: (T, N, C) CUDA; input_lengths: (N,) integer, host or device.
std::tuple<at::Tensor, at::Tensor> greedy_decode_cuda(const at::Tensor& logits, const at::Tensor& input_lengths,
                                                      int64_t blank) {
  check_on_cuda(logits);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  return greedy_decode_device(logits, input_lengths, blank, multiprocessor_count(logits.device().index()),
                              c10::cuda::getCurrentCUDAStream().stream());
}

// logits: (T, N, C) CUDA; targets, input_lengths, target_lengths: host or device.
std::tuple<at::Tensor, at::Tensor, at::Tensor> forced_align_cuda(const at::Tensor& logits, const at::Tensor& targets,
                                                                 const at::Tensor& input_lengths,
                                                                 const at::Tensor& target_lengths, int64_t blank) {
  check_on_cuda(logits);
  const c10::cuda::CUDAGuard device_guard(logits.device());
  return forced_align_device(logits, targets, input_lengths, target_lengths, blank,
                             c10::cuda::getCurrentCUDAStream().stream());
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(ctc_ext, CUDA, m) {
  m.impl("greedy_decode", &cuda::greedy_decode_cuda);
  m.impl("forced_align", &cuda::forced_align_cuda);
}

}  // namespace ctc_ext
