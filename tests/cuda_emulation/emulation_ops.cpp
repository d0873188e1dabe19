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

#include <ATen/ops/full.h>
#include <ATen/ops/full_like.h>

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

// log_normalizer_kernel alone with a kept log_alpha buffer: (the buffer, every entry `fill`
// except what the kernel's emission gather writes, log_normalizer), for tests of the gather.
std::tuple<at::Tensor, at::Tensor> gathered_emissions(const at::Tensor& logits_in, const at::Tensor& targets,
                                                      const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                                      int64_t blank, double fill, int64_t multiprocessor_count) {
  check_on_cpu(logits_in);
  const ctc_ext::CtcProblem problem =
      ctc_ext::prepare_ctc_problem(logits_in, targets, input_lengths, target_lengths, blank);
  const at::Tensor logits = ctc_ext::with_contiguous_classes(logits_in);
  const at::Tensor labels = problem.targets.to(at::kLong);
  const int64_t T = problem.max_input_length, N = problem.batch_size;
  const auto acc_options = logits.options().dtype(at::toOpMathType(logits.scalar_type()));
  at::Tensor log_normalizer = at::empty({N, T}, acc_options);
  at::Tensor log_alpha = at::full({ctc_ext::log_alpha_numel(N, problem.num_target_slots, T)}, fill, acc_options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "gathered_emissions", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    ctc_ext::cuda::launch_log_normalizer(ctc_ext::cuda::problem_view<scalar_t, int64_t>(problem, logits, labels),
                                         log_normalizer.data_ptr<acc_t>(), log_alpha.data_ptr<acc_t>(),
                                         multiprocessor_count, nullptr);
  });
  return {log_alpha, log_normalizer};
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

// The warp collectives of the emulation header, one per launch, for tests of the primitives
// themselves.  Thread i contributes values[i] and writes its result to out[i].
//   op: 0 __shfl_sync(arg), 1 __shfl_up_sync(arg), 2 __shfl_down_sync(arg), 3 __shfl_xor_sync(arg),
//       4 __ballot_sync(values & 1), 5 __any_sync, 6 __all_sync, 7 __shfl_xor_sync(arg) of doubles
//   misuse: 0 none, 1 lane 5 exits before the collective, 2 each lane leaves itself out of the
//       mask, 3 lane 0 exits and is left out of the mask, which the others' shuffles still read
__global__ void warp_collective_kernel(const int64_t* values, int64_t* out, int op, int arg, int width, int misuse) {
  const unsigned int lane = threadIdx.x % 32;
  const unsigned int warp_begin = threadIdx.x / 32 * 32;
  const unsigned int lanes = blockDim.x - warp_begin < 32 ? blockDim.x - warp_begin : 32;
  unsigned int mask = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
  if (misuse == 1 && lane == 5) return;
  if (misuse == 2) mask &= ~(1u << lane);
  if (misuse == 3 && lane == 0) return;
  if (misuse == 3) mask &= ~1u;
  const int64_t value = values[threadIdx.x];
  int64_t result = 0;
  switch (op) {
    case 0:
      result = __shfl_sync(mask, value, arg, width);
      break;
    case 1:
      result = __shfl_up_sync(mask, value, arg, width);
      break;
    case 2:
      result = __shfl_down_sync(mask, value, arg, width);
      break;
    case 3:
      result = __shfl_xor_sync(mask, value, arg, width);
      break;
    case 4:
      result = __ballot_sync(mask, value & 1);
      break;
    case 5:
      result = __any_sync(mask, value & 1);
      break;
    case 6:
      result = __all_sync(mask, value & 1);
      break;
    case 7:
      result = static_cast<int64_t>(__shfl_xor_sync(mask, static_cast<double>(value) + 0.5, arg, width));
      break;
  }
  out[threadIdx.x] = result;
}

at::Tensor warp_collective(const at::Tensor& values, int64_t op, int64_t arg, int64_t width, int64_t misuse) {
  TORCH_CHECK(values.dim() == 1 && values.scalar_type() == at::kLong && values.is_contiguous(),
              "values: a contiguous 1-D int64 tensor, one per thread");
  at::Tensor out = at::full_like(values, -1);
  ctc_emulation::launch(warp_collective_kernel, dim3(1), dim3(static_cast<unsigned int>(values.numel())), 0,
                        values.const_data_ptr<int64_t>(), out.data_ptr<int64_t>(), static_cast<int>(op),
                        static_cast<int>(arg), static_cast<int>(width), static_cast<int>(misuse));
  return out;
}

// The launch shapes the host code would use, for tests of the configuration itself.
std::vector<int64_t> launch_shapes(int64_t T, int64_t N, int64_t C, int64_t num_target_slots, int64_t padded_width,
                                   int64_t acc_size, int64_t multiprocessor_count) {
  using namespace ctc_ext::cuda;
  const LaunchShape shapes[] = {log_normalizer_launch_shape(T, N, C, acc_size, multiprocessor_count),
                                lattice_launch_shape(N, num_target_slots, padded_width),
                                gradient_rows_launch_shape(T, N, C, multiprocessor_count)};
  std::vector<int64_t> out;
  for (const auto& shape : shapes) {
    out.insert(out.end(),
               {shape.grid.x, shape.block.x * shape.block.y * shape.block.z, static_cast<int64_t>(shape.shared_bytes)});
  }
  return out;
}

}  // namespace ctc_emulation_ops
