// The CUDA kernels and host code of csrc/cuda, compiled by g++ against the CPU emulation header
// and run on CPU tensors (bound to Python in emulation_ext.cpp; a separate file so that editing a
// kernel rebuilds only this one).
#include "cuda_emulation.h"

#define CTC_CHECK_LAUNCH() ((void)0)  // the emulated launch throws on an invalid configuration
#include "../../csrc/cuda/ctc_loss_kernels.cuh"
#include "../../csrc/cuda/decode_kernels.cuh"
#include "../../csrc/cuda/ctc_loss_host.h"
#include "../../csrc/cuda/decode_host.h"

#include "emulation_ops.h"

namespace ctc_emulation_ops {

static void check_on_cpu(const at::Tensor& logits) {
  TORCH_CHECK(logits.is_cpu(), "the emulated CUDA kernels take CPU tensors");
}

// multiprocessor_count sizes the grids of the row kernels like the SM count of a GPU does.
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& logits, const at::Tensor& targets,
                                                       const at::Tensor& input_lengths,
                                                       const at::Tensor& target_lengths, int64_t blank,
                                                       bool keep_log_alpha, int64_t multiprocessor_count) {
  check_on_cpu(logits);
  return ctc_ext::cuda::ctc_loss_forward_device(logits, targets, input_lengths, target_lengths, blank, keep_log_alpha,
                                                multiprocessor_count, nullptr);
}

at::Tensor backward(const at::Tensor& grad_nll, const at::Tensor& logits, const at::Tensor& targets,
                    const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                    const at::Tensor& neg_log_likelihood, const at::Tensor& log_alpha, const at::Tensor& log_normalizer,
                    int64_t blank, bool zero_infinity, int64_t multiprocessor_count) {
  check_on_cpu(logits);
  return ctc_ext::cuda::ctc_loss_backward_device(grad_nll, logits, targets, input_lengths, target_lengths,
                                                 neg_log_likelihood, log_alpha, log_normalizer, blank, zero_infinity,
                                                 multiprocessor_count, nullptr);
}

std::tuple<at::Tensor, at::Tensor> greedy_decode(const at::Tensor& logits, const at::Tensor& input_lengths,
                                                 int64_t blank, int64_t multiprocessor_count) {
  check_on_cpu(logits);
  return ctc_ext::cuda::greedy_decode_device(logits, input_lengths, blank, multiprocessor_count, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forced_align(const at::Tensor& logits, const at::Tensor& targets,
                                                            const at::Tensor& input_lengths,
                                                            const at::Tensor& target_lengths, int64_t blank) {
  check_on_cpu(logits);
  return ctc_ext::cuda::forced_align_device(logits, targets, input_lengths, target_lengths, blank, nullptr);
}

// The launch shapes the host code would use, for tests of the configuration itself.
std::vector<int64_t> launch_shapes(int64_t T, int64_t N, int64_t C, int64_t num_target_slots, int64_t padded_width,
                                   int64_t acc_size, int64_t multiprocessor_count) {
  using namespace ctc_ext::cuda;
  const LaunchShape shapes[] = {
      log_normalizer_launch_shape(T, N, C, acc_size, multiprocessor_count),
      lattice_launch_shape(N, num_target_slots, padded_width),
      gradient_launch_shape(T, N, C, num_target_slots, padded_width, acc_size, multiprocessor_count)};
  std::vector<int64_t> out;
  for (const auto& shape : shapes) {
    out.insert(out.end(),
               {shape.grid.x, shape.block.x * shape.block.y * shape.block.z, static_cast<int64_t>(shape.shared_bytes)});
  }
  return out;
}

}  // namespace ctc_emulation_ops
