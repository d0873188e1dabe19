#include "arguments.h"
#include "ctc_math.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/util/Exception.h>

namespace ctc_ext {

namespace {

// Values copied from another device must be real: a meta tensor "copied" to the CPU would be
// uninitialised memory read as lengths or labels.
void check_values_device(const at::Tensor& values, const char* name, const at::Device& device) {
  TORCH_CHECK(values.device() == device || values.device().is_cpu(), name,
              " must be on the CPU or on the device of logits (", device, "), got ", values.device());
}

at::Tensor normalise_lengths(const at::Tensor& lengths, const char* name, int64_t batch_size,
                             const at::Device& device) {
  check_values_device(lengths, name, device);
  TORCH_CHECK(!at::isFloatingType(lengths.scalar_type()) && !at::isComplexType(lengths.scalar_type()) &&
                  lengths.scalar_type() != at::kBool,
              name, " must have an integer dtype, got ", lengths.scalar_type());
  TORCH_CHECK(lengths.dim() == 1, name, " must be 1-D of size N = ", batch_size, ", got shape ", lengths.sizes());
  TORCH_CHECK(lengths.size(0) == batch_size, name, " must have N = ", batch_size, " entries, got ", lengths.size(0));
  // The guard skips a no-op dispatch: small calls feel every one.
  const bool ready = lengths.scalar_type() == at::kLong && lengths.device() == device;
  return (ready ? lengths : lengths.to(device, at::kLong)).contiguous();
}

// logits (T, N, C) floating with C > 0 and blank in [0, C).
void check_logits_and_blank(const at::Tensor& logits, int64_t blank) {
  TORCH_CHECK(logits.dim() == 3, "logits must be 3-D (T, N, C), got shape ", logits.sizes());
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()), "logits must be floating point, got ", logits.scalar_type());
  const int64_t C = logits.size(2);
  TORCH_CHECK(C > 0, "logits must have at least one class (C > 0)");
  TORCH_CHECK(blank >= 0 && blank < C, "blank must be in [0, C) = [0, ", C, "), got ", blank);
}

at::Tensor on_device(const at::Tensor& tensor, const at::Device& device) {
  return tensor.device() == device ? tensor : tensor.to(device);
}

}  // namespace

void check_input_length_values(const at::Tensor& input_lengths, int64_t T) {
  const int64_t* lengths = input_lengths.const_data_ptr<int64_t>();
  for (int64_t n = 0; n < input_lengths.numel(); ++n) {
    TORCH_CHECK(lengths[n] >= 0, "input_lengths must be non-negative, got ", lengths[n], " for sample ", n);
    TORCH_CHECK(lengths[n] <= T, "input_lengths must be at most T = ", T, ", got ", lengths[n], " for sample ", n);
  }
}

CtcProblem prepare_ctc_problem(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& input_lengths,
                               const at::Tensor& target_lengths, int64_t blank) {
  check_logits_and_blank(logits, blank);
  TORCH_CHECK(targets.scalar_type() == at::kInt || targets.scalar_type() == at::kLong,
              "targets must be int32 or int64, got ", targets.scalar_type());
  TORCH_CHECK(targets.dim() == 1 || targets.dim() == 2, "targets must be (N, S) padded or 1-D concatenated, got shape ",
              targets.sizes());
  CtcProblem problem;
  problem.max_input_length = logits.size(0);
  problem.batch_size = logits.size(1);
  problem.num_classes = logits.size(2);
  problem.blank = blank;
  const auto device = logits.device();
  problem.input_lengths = normalise_lengths(input_lengths, "input_lengths", problem.batch_size, device);
  problem.target_lengths = normalise_lengths(target_lengths, "target_lengths", problem.batch_size, device);
  check_values_device(targets, "targets", device);
  problem.padded_targets = targets.dim() == 2;
  if (problem.padded_targets) {
    TORCH_CHECK(targets.size(0) == problem.batch_size, "padded targets must be (N, S) with N = ", problem.batch_size,
                ", got shape ", targets.sizes());
    const int64_t width = targets.size(1);
    problem.targets = on_device(targets, device).contiguous().view({-1});
    if (device.is_cpu()) {
      // A host loop: arange * width would be two ATen ops, which small calls notice.
      problem.label_start = at::empty({problem.batch_size}, problem.input_lengths.options());
      int64_t* start = problem.label_start.data_ptr<int64_t>();
      for (int64_t n = 0; n < problem.batch_size; ++n) start[n] = n * width;
    } else {
      problem.label_start = at::arange(problem.batch_size, problem.input_lengths.options()) * width;
    }
  } else {
    problem.targets = on_device(targets, device).contiguous();
    // Exclusive running sum of the target lengths, computed where the lengths live (no sync).
    problem.label_start = problem.target_lengths.cumsum(0) - problem.target_lengths;
  }
  problem.num_target_slots = problem.targets.numel();
  return problem;
}

void check_ctc_values_on_cpu(const CtcProblem& problem) {
  const int64_t N = problem.batch_size;
  const int64_t T = problem.max_input_length;
  const int64_t* target_lengths = problem.target_lengths.data_ptr<int64_t>();
  const int64_t width = (problem.padded_targets && N > 0) ? problem.num_target_slots / N : 0;
  // Running sum of the concatenated target lengths, compared before each addition so that user
  // values can never overflow it (label_start, a cumsum of the same values, is read only after).
  int64_t total_target_length = 0;
  check_input_length_values(problem.input_lengths, T);
  for (int64_t n = 0; n < N; ++n) {
    TORCH_CHECK(target_lengths[n] >= 0, "target_lengths must be non-negative, got ", target_lengths[n], " for sample ",
                n);
    if (problem.padded_targets) {
      TORCH_CHECK(target_lengths[n] <= width, "target_lengths[", n, "] = ", target_lengths[n],
                  " exceeds the padded targets width S = ", width);
    }
    if (!problem.padded_targets) {
      TORCH_CHECK(target_lengths[n] <= problem.num_target_slots - total_target_length, "concatenated targets have ",
                  problem.num_target_slots, " labels but target_lengths sum to more (", total_target_length,
                  " before sample ", n, ", whose length is ", target_lengths[n], ")");
      total_target_length += target_lengths[n];
    }
  }
  const int64_t* label_start = problem.label_start.data_ptr<int64_t>();
  AT_DISPATCH_INDEX_TYPES(problem.targets.scalar_type(), "check_ctc_labels", [&] {
    const index_t* labels = problem.targets.data_ptr<index_t>();
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t i = 0; i < target_lengths[n]; ++i) {
        const int64_t label = labels[label_start[n] + i];
        TORCH_CHECK(label >= 0 && label < problem.num_classes, "targets must hold labels in [0, C) = [0, ",
                    problem.num_classes, "), got ", label, " at position ", i, " of sample ", n);
        TORCH_CHECK(label != problem.blank, "targets must not contain the blank (", problem.blank,
                    "), found at position ", i, " of sample ", n);
      }
    }
  });
}

void check_ctc_backward_state(const CtcProblem& problem, const at::Tensor& logits, const at::Tensor& grad_nll,
                              const at::Tensor& neg_log_likelihood, const at::Tensor& log_alpha,
                              const at::Tensor& log_normalizer) {
  const int64_t T = problem.max_input_length, N = problem.batch_size;
  const auto acc_type = at::toOpMathType(logits.scalar_type());
  // Empty: the log_alpha of ctc_loss_forward(..., keep_log_alpha=False), which the backward recomputes.
  TORCH_CHECK(log_alpha.numel() == 0 || log_alpha.numel() == log_alpha_numel(N, problem.num_target_slots, T),
              "ctc_loss_backward needs the log_alpha of ctc_loss_forward (empty when keep_log_alpha=False)");
  TORCH_CHECK(log_alpha.scalar_type() == acc_type && log_normalizer.scalar_type() == acc_type &&
                  neg_log_likelihood.scalar_type() == acc_type,
              "log_alpha, log_normalizer and neg_log_likelihood must have dtype ", acc_type);
  TORCH_CHECK(log_normalizer.sizes() == at::IntArrayRef({N, T}), "log_normalizer must be (N, T)");
  TORCH_CHECK(neg_log_likelihood.sizes() == at::IntArrayRef({N}), "neg_log_likelihood must be (N,)");
  TORCH_CHECK(grad_nll.numel() == N, "grad_nll must have N = ", N, " elements");
  const auto device = logits.device();
  TORCH_CHECK(log_alpha.device() == device && log_normalizer.device() == device &&
                  neg_log_likelihood.device() == device && grad_nll.device() == device,
              "grad_nll, neg_log_likelihood, log_alpha and log_normalizer must be on the device of logits (", device,
              ")");
}

at::Tensor with_contiguous_classes(const at::Tensor& logits) {
  return logits.stride(2) == 1 ? logits : logits.contiguous();
}

at::Tensor decode_input_lengths(const at::Tensor& logits, const at::Tensor& input_lengths, int64_t blank) {
  check_logits_and_blank(logits, blank);
  check_values_device(input_lengths, "input_lengths", logits.device());
  return normalise_lengths(input_lengths, "input_lengths", logits.size(1), input_lengths.device());
}

at::Tensor checked_decode_input_lengths(const at::Tensor& logits, const at::Tensor& input_lengths, int64_t blank) {
  TORCH_CHECK(logits.device().is_cpu(), "ctc_ext decoders run on the CPU, got logits on ", logits.device());
  at::Tensor lengths = decode_input_lengths(logits, input_lengths, blank);
  check_input_length_values(lengths, logits.size(0));
  return lengths;
}

NormalisedFrames normalised_frames(const at::Tensor& logits) {
  at::Tensor frames = with_contiguous_classes(logits.to(at::toOpMathType(logits.scalar_type())));
  at::Tensor log_normalizer = at::logsumexp(frames, {2}).contiguous();
  return {frames, log_normalizer};
}

}  // namespace ctc_ext
