#include "decode_common.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include "../ctc_loss_common.h"

namespace ctc_ext {

at::Tensor checked_decode_input_lengths(const at::Tensor& logits, const at::Tensor& input_lengths, int64_t blank) {
  TORCH_CHECK(logits.dim() == 3, "logits must be 3-D (T, N, C), got shape ", logits.sizes());
  TORCH_CHECK(logits.device().is_cpu(), "ctc_ext decoders run on the CPU, got logits on ", logits.device());
  // A problem with an empty target for every sample: the loss's checks of logits, blank and
  // input_lengths apply unchanged and nothing about targets can fail.
  const auto empty_targets = at::empty({0}, logits.options().dtype(at::kLong));
  const auto zero_target_lengths = at::zeros({logits.size(1)}, logits.options().dtype(at::kLong));
  const CtcProblem problem = prepare_ctc_problem(logits, empty_targets, input_lengths, zero_target_lengths, blank);
  check_ctc_values_on_cpu(problem);
  return problem.input_lengths;
}

NormalisedFrames normalised_frames(const at::Tensor& logits) {
  at::Tensor frames = with_contiguous_classes(logits.to(at::toOpMathType(logits.scalar_type())));
  at::Tensor log_normalizer = at::logsumexp(frames, {2}).contiguous();
  return {frames, log_normalizer};
}

}  // namespace ctc_ext
