// The emulated CUDA ops on CPU tensors (emulation_ops.cpp), declared for the Python binding.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>
#include <vector>

namespace ctc_emulation_ops {

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& logits, const at::Tensor& targets,
                                                       const at::Tensor& input_lengths,
                                                       const at::Tensor& target_lengths, int64_t blank,
                                                       bool keep_log_alpha, int64_t multiprocessor_count);

std::tuple<at::Tensor, at::Tensor> gathered_emissions(const at::Tensor& logits, const at::Tensor& targets,
                                                      const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                                      int64_t blank, double fill, int64_t multiprocessor_count);

at::Tensor backward(const at::Tensor& grad_nll, const at::Tensor& logits, const at::Tensor& targets,
                    const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                    const at::Tensor& neg_log_likelihood, const at::Tensor& log_alpha, const at::Tensor& log_normalizer,
                    int64_t blank, bool zero_infinity, int64_t multiprocessor_count);

std::tuple<at::Tensor, at::Tensor> greedy_decode(const at::Tensor& logits, const at::Tensor& input_lengths,
                                                 int64_t blank, int64_t multiprocessor_count);

std::tuple<at::Tensor, at::Tensor, at::Tensor> forced_align(const at::Tensor& logits, const at::Tensor& targets,
                                                            const at::Tensor& input_lengths,
                                                            const at::Tensor& target_lengths, int64_t blank);

at::Tensor warp_collective(const at::Tensor& values, int64_t op, int64_t arg, int64_t width, int64_t misuse);

std::vector<int64_t> launch_shapes(int64_t T, int64_t N, int64_t C, int64_t num_target_slots, int64_t padded_width,
                                   int64_t acc_size, int64_t multiprocessor_count);

}  // namespace ctc_emulation_ops
