// CPU forward and backward of the CTC loss: one sample per task, parallel over the batch.
// The recurrence itself (log-space helpers, extended labels, band) lives in ctc_math.h.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../ctc_loss_common.h"
#include "../ctc_math.h"

namespace ctc_ext {
namespace {

// log(sum_k exp(row[k])) over one frame of logits, accumulated in acc_t.
template <typename scalar_t, typename acc_t>
acc_t row_logsumexp(const scalar_t* row, int64_t num_classes) {
  acc_t max_value = neg_inf<acc_t>();
  for (int64_t k = 0; k < num_classes; ++k) max_value = std::max(max_value, static_cast<acc_t>(row[k]));
  // An all -inf row has no mass; +inf or NaN propagate through the sum below.
  if (max_value == neg_inf<acc_t>()) return max_value;
  if (std::isinf(max_value)) return max_value;
  acc_t sum = 0;
  for (int64_t k = 0; k < num_classes; ++k) sum += std::exp(static_cast<acc_t>(row[k]) - max_value);
  return max_value + std::log(sum);
}

// Everything a kernel needs to know about one sample.
template <typename index_t>
struct SampleView {
  int64_t input_length;   // T_n
  int64_t num_states;     // W = 2 L + 1
  const index_t* labels;  // the sample's L labels, unit stride
};

template <typename index_t>
SampleView<index_t> sample_view(const CtcProblem& problem, const index_t* labels, int64_t n) {
  const int64_t target_length = problem.target_lengths.data_ptr<int64_t>()[n];
  return {problem.input_lengths.data_ptr<int64_t>()[n], 2 * target_length + 1,
          labels + problem.label_start.data_ptr<int64_t>()[n]};
}

// Forward recurrence for sample n.
//   logits:         (T, N, C) with unit class stride, strides stride_t / stride_n
//   log_alpha_block: (T, W) rows of this sample, or nullptr to keep only two rolling rows
//   log_normalizer: (T,) this sample's row of the (N, T) normaliser output
// Returns the negative log-likelihood.
template <typename scalar_t, typename acc_t, typename index_t>
acc_t forward_one_sample(const scalar_t* logits, int64_t stride_t, int64_t stride_n, int64_t num_classes,
                         int64_t blank, int64_t n, const SampleView<index_t>& sample, acc_t* log_alpha_block,
                         acc_t* log_normalizer) {
  const int64_t T_n = sample.input_length;
  const int64_t W = sample.num_states;
  const int64_t target_length = (W - 1) / 2;
  if (target_length > T_n) return std::numeric_limits<acc_t>::infinity();  // the target cannot fit
  if (T_n == 0) return 0;                                                  // empty input, empty target

  std::vector<acc_t> rolling_rows(log_alpha_block ? 0 : 2 * W);
  auto alpha_row = [&](int64_t t) {
    return log_alpha_block ? log_alpha_block + t * W : rolling_rows.data() + (t & 1) * W;
  };
  const scalar_t* sample_logits = logits + n * stride_n;
  for (int64_t t = 0; t < T_n; ++t) {
    const scalar_t* frame = sample_logits + t * stride_t;
    const acc_t normaliser = row_logsumexp<scalar_t, acc_t>(frame, num_classes);
    log_normalizer[t] = normaliser;
    const int64_t first = band_first(t, T_n, W);
    const int64_t last = band_last(t, W);
    acc_t* current = alpha_row(t);
    std::fill(current, current + first, neg_inf<acc_t>());
    std::fill(current + last + 1, current + W, neg_inf<acc_t>());
    if (t == 0) {
      for (int64_t s = first; s <= last; ++s) {
        current[s] = static_cast<acc_t>(frame[extended_label(sample.labels, 1, s, blank)]) - normaliser;
      }
      continue;
    }
    // Outside the band every entry of the previous row is -inf, so the reads below need no
    // band test of their own.
    const acc_t* previous = alpha_row(t - 1);
    for (int64_t s = first; s <= last; ++s) {
      const acc_t stay = previous[s];
      const acc_t advance = s >= 1 ? previous[s - 1] : neg_inf<acc_t>();
      const acc_t skip = can_skip_from(sample.labels, 1, s) ? previous[s - 2] : neg_inf<acc_t>();
      const acc_t emission = static_cast<acc_t>(frame[extended_label(sample.labels, 1, s, blank)]) - normaliser;
      current[s] = emission + log_add3(stay, advance, skip);
    }
  }
  const acc_t* last_row = alpha_row(T_n - 1);
  const acc_t log_likelihood = W >= 2 ? log_add(last_row[W - 1], last_row[W - 2]) : last_row[W - 1];
  return -log_likelihood;
}

// Backward for sample n: log_beta in two rolling rows, the occupancy of every state (Eq. 16)
// accumulated per class into a float row, and each gradient row written once.
//   grad: (T, N, C) with unit class stride, strides grad_stride_t / grad_stride_n
template <typename scalar_t, typename acc_t, typename index_t>
void backward_one_sample(const scalar_t* logits, int64_t stride_t, int64_t stride_n, scalar_t* grad,
                         int64_t grad_stride_t, int64_t grad_stride_n, int64_t max_input_length,
                         int64_t num_classes, int64_t blank, int64_t n, const SampleView<index_t>& sample,
                         const acc_t* log_alpha_block, const acc_t* log_normalizer, acc_t neg_log_likelihood,
                         acc_t grad_scale, bool zero_infinity) {
  const int64_t T_n = sample.input_length;
  const int64_t W = sample.num_states;
  scalar_t* sample_grad = grad + n * grad_stride_n;
  auto zero_rows = [&](int64_t from_t) {
    for (int64_t t = from_t; t < max_input_length; ++t) {
      std::fill(sample_grad + t * grad_stride_t, sample_grad + t * grad_stride_t + num_classes, scalar_t(0));
    }
  };
  zero_rows(T_n);  // frames beyond the input length get exactly zero
  const bool infinite = std::isinf(neg_log_likelihood) && neg_log_likelihood > 0;
  if (infinite && zero_infinity) {
    zero_rows(0);
    return;
  }
  if (infinite) {
    // No path: the gradient is undefined, as in the built-in (which returns NaN here).
    for (int64_t t = 0; t < T_n; ++t) {
      std::fill(sample_grad + t * grad_stride_t, sample_grad + t * grad_stride_t + num_classes,
                std::numeric_limits<scalar_t>::quiet_NaN());
    }
    return;
  }

  std::vector<acc_t> beta_rows(2 * W);
  std::vector<acc_t> grad_row(num_classes);
  std::vector<acc_t> occupancy(W);
  const scalar_t* sample_logits = logits + n * stride_n;
  for (int64_t t = T_n - 1; t >= 0; --t) {
    const scalar_t* frame = sample_logits + t * stride_t;
    const acc_t normaliser = log_normalizer[t];
    const int64_t first = band_first(t, T_n, W);
    const int64_t last = band_last(t, W);
    acc_t* current = beta_rows.data() + (t & 1) * W;
    const acc_t* next = beta_rows.data() + ((t + 1) & 1) * W;
    std::fill(current, current + first, neg_inf<acc_t>());
    std::fill(current + last + 1, current + W, neg_inf<acc_t>());
    for (int64_t s = first; s <= last; ++s) {
      const acc_t emission = static_cast<acc_t>(frame[extended_label(sample.labels, 1, s, blank)]) - normaliser;
      if (t == T_n - 1) {
        current[s] = emission;  // the band at the last frame is exactly the two final states
        continue;
      }
      const acc_t stay = next[s];
      const acc_t advance = s + 1 < W ? next[s + 1] : neg_inf<acc_t>();
      const acc_t skip = (s + 2 < W && can_skip_from(sample.labels, 1, s + 2)) ? next[s + 2] : neg_inf<acc_t>();
      current[s] = emission + log_add3(stay, advance, skip);
    }
    // Occupancies exp(alpha + beta - emission + nll) sum to 1 over s in exact arithmetic; dividing
    // by their computed sum removes the rounding drift that alpha and beta share at this frame,
    // so gradient rows sum to 0 to working precision.
    const acc_t* alpha = log_alpha_block + t * W;
    acc_t occupancy_sum = 0;
    for (int64_t s = first; s <= last; ++s) {
      const acc_t emission =
          static_cast<acc_t>(frame[extended_label(sample.labels, 1, s, blank)]) - normaliser;
      occupancy[s] = std::exp(alpha[s] + current[s] - emission + neg_log_likelihood);
      occupancy_sum += occupancy[s];
    }
    // d nll / d x[t, k] = softmax(x[t])[k] - sum_{s: l'_s = k} occupancy[t][s]
    for (int64_t k = 0; k < num_classes; ++k) grad_row[k] = std::exp(static_cast<acc_t>(frame[k]) - normaliser);
    for (int64_t s = first; s <= last; ++s) {
      grad_row[extended_label(sample.labels, 1, s, blank)] -= occupancy[s] / occupancy_sum;
    }
    scalar_t* grad_frame = sample_grad + t * grad_stride_t;
    for (int64_t k = 0; k < num_classes; ++k) grad_frame[k] = static_cast<scalar_t>(grad_scale * grad_row[k]);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ctc_loss_forward_cpu(const at::Tensor& logits_in,
                                                                    const at::Tensor& targets,
                                                                    const at::Tensor& input_lengths,
                                                                    const at::Tensor& target_lengths, int64_t blank,
                                                                    bool keep_log_alpha) {
  const CtcProblem problem = prepare_ctc_problem(logits_in, targets, input_lengths, target_lengths, blank);
  check_ctc_values_on_cpu(problem);
  const at::Tensor logits = with_contiguous_classes(logits_in);
  const int64_t T = problem.max_input_length, N = problem.batch_size, C = problem.num_classes;
  const auto acc_type = at::toOpMathType(logits.scalar_type());
  const auto acc_options = logits.options().dtype(acc_type);
  at::Tensor neg_log_likelihood = at::empty({N}, acc_options);
  at::Tensor log_alpha = at::empty({keep_log_alpha ? log_alpha_numel(N, problem.num_target_slots, T) : 0}, acc_options);
  at::Tensor log_normalizer = at::zeros({N, T}, acc_options);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ctc_loss_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    AT_DISPATCH_INDEX_TYPES(problem.targets.scalar_type(), "ctc_loss_forward_cpu", [&] {
      const scalar_t* logits_data = logits.const_data_ptr<scalar_t>();
      const index_t* labels = problem.targets.const_data_ptr<index_t>();
      const int64_t* label_start = problem.label_start.const_data_ptr<int64_t>();
      acc_t* nll_data = neg_log_likelihood.data_ptr<acc_t>();
      acc_t* alpha_data = log_alpha.data_ptr<acc_t>();
      acc_t* normalizer_data = log_normalizer.data_ptr<acc_t>();
      at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          const SampleView<index_t> sample = sample_view(problem, labels, n);
          acc_t* alpha_block = nullptr;
          if (keep_log_alpha) {
            // Sample n owns [offset(n), offset(n + 1)); entries it does not compute stay -inf so
            // the buffer is fully defined.
            const int64_t begin_offset = log_alpha_offset(n, label_start[n], T);
            const int64_t end_offset = n + 1 < N ? log_alpha_offset(n + 1, label_start[n + 1], T) : log_alpha.numel();
            alpha_block = alpha_data + begin_offset;
            std::fill(alpha_block, alpha_data + end_offset, neg_inf<acc_t>());
          }
          nll_data[n] = forward_one_sample<scalar_t, acc_t, index_t>(
              logits_data, logits.stride(0), logits.stride(1), C, problem.blank, n, sample, alpha_block,
              normalizer_data + n * T);
        }
      });
    });
  });
  return {neg_log_likelihood, log_alpha, log_normalizer};
}

at::Tensor ctc_loss_backward_cpu(const at::Tensor& grad_nll, const at::Tensor& logits_in, const at::Tensor& targets,
                                 const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                 const at::Tensor& neg_log_likelihood, const at::Tensor& log_alpha,
                                 const at::Tensor& log_normalizer, int64_t blank, bool zero_infinity) {
  const CtcProblem problem = prepare_ctc_problem(logits_in, targets, input_lengths, target_lengths, blank);
  check_ctc_values_on_cpu(problem);
  const at::Tensor logits = with_contiguous_classes(logits_in);
  const int64_t T = problem.max_input_length, N = problem.batch_size, C = problem.num_classes;
  const auto acc_type = at::toOpMathType(logits.scalar_type());
  TORCH_CHECK(log_alpha.numel() == log_alpha_numel(N, problem.num_target_slots, T),
              "ctc_loss_backward needs the log_alpha of ctc_loss_forward(..., keep_log_alpha=True)");
  TORCH_CHECK(log_alpha.scalar_type() == acc_type && log_normalizer.scalar_type() == acc_type &&
                  neg_log_likelihood.scalar_type() == acc_type,
              "log_alpha, log_normalizer and neg_log_likelihood must have dtype ", acc_type);
  TORCH_CHECK(log_normalizer.sizes() == at::IntArrayRef({N, T}), "log_normalizer must be (N, T)");
  TORCH_CHECK(neg_log_likelihood.sizes() == at::IntArrayRef({N}), "neg_log_likelihood must be (N,)");
  TORCH_CHECK(grad_nll.numel() == N, "grad_nll must have N = ", N, " elements");

  at::Tensor grad = at::empty_like(logits_in);
  // Kernels write rows with unit class stride; a gradient laid out otherwise is filled afterwards.
  at::Tensor grad_out = grad.stride(2) == 1 ? grad : at::empty_like(logits);
  const at::Tensor grad_scale = grad_nll.to(acc_type).contiguous();
  const at::Tensor alpha = log_alpha.contiguous();
  const at::Tensor normalizer = log_normalizer.contiguous();
  const at::Tensor nll = neg_log_likelihood.contiguous();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ctc_loss_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    AT_DISPATCH_INDEX_TYPES(problem.targets.scalar_type(), "ctc_loss_backward_cpu", [&] {
      const scalar_t* logits_data = logits.const_data_ptr<scalar_t>();
      const index_t* labels = problem.targets.const_data_ptr<index_t>();
      const int64_t* label_start = problem.label_start.const_data_ptr<int64_t>();
      scalar_t* grad_data = grad_out.data_ptr<scalar_t>();
      at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          const SampleView<index_t> sample = sample_view(problem, labels, n);
          backward_one_sample<scalar_t, acc_t, index_t>(
              logits_data, logits.stride(0), logits.stride(1), grad_data, grad_out.stride(0), grad_out.stride(1), T,
              C, problem.blank, n, sample, alpha.const_data_ptr<acc_t>() + log_alpha_offset(n, label_start[n], T),
              normalizer.const_data_ptr<acc_t>() + n * T, nll.const_data_ptr<acc_t>()[n],
              grad_scale.const_data_ptr<acc_t>()[n], zero_infinity);
        }
      });
    });
  });
  if (!grad_out.is_same(grad)) grad.copy_(grad_out);
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(ctc_ext, CPU, m) {
  m.impl("ctc_loss_forward", &ctc_loss_forward_cpu);
  m.impl("ctc_loss_backward", &ctc_loss_backward_cpu);
}

}  // namespace ctc_ext
