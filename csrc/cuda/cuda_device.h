// Small device queries shared by the CUDA op files (ctc_loss_cuda.cu, decode_cuda.cu).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>

#include <cstdint>

namespace ctc_ext {
namespace cuda {

// Sizes the grids of the row kernels; an attribute query, no synchronisation.
inline int64_t multiprocessor_count(c10::DeviceIndex device) {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

inline void check_on_cuda(const at::Tensor& logits) {
  TORCH_CHECK(logits.is_cuda(), "logits must be a CUDA tensor for the CUDA kernel, got ", logits.device());
}

}  // namespace cuda
}  // namespace ctc_ext
