// The reductions of per-sample CTC losses ('none' / 'mean' / 'sum'), and ctc_loss without
// autograd in one call.  Both are composite (built from ATen ops), so they run on every backend
// and the reduction is differentiable where ctc_ext.ctc_loss needs a gradient.  One C++ call
// instead of a few Python-level ops matters for small inputs, where per-call cost dominates.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/library.h>

#include <limits>

namespace ctc_ext {
namespace {

// reduction: torch's codes, 0 'none', 1 'mean', 2 'sum'.
//   losses: (N,) float;  target_lengths: (N,) integer, any device
at::Tensor reduce_ctc_losses(const at::Tensor& losses, const at::Tensor& target_lengths, int64_t reduction) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
  if (reduction == 0) return losses;
  if (reduction == 2) return losses.sum();
  // 'mean' divides each loss by max(target_length, 1) first; the lengths promote to the loss dtype.
  return (losses / target_lengths.to(losses.device()).clamp_min(1)).mean();
}

at::Tensor ctc_loss_no_grad(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& input_lengths,
                            const at::Tensor& target_lengths, int64_t blank, int64_t reduction, bool zero_infinity) {
  TORCH_CHECK(!(at::GradMode::is_enabled() && logits.requires_grad()),
              "ctc_ext::_ctc_loss_no_grad computes no gradient; use ctc_ext.ctc_loss");
  static const auto forward =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("ctc_ext::ctc_loss_forward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                                const at::Tensor&, int64_t, bool)>();
  at::Tensor losses;
  {
    // Straight to the backend kernel: the op's Autograd kernel is Python (register_autograd) and
    // would cost more than the whole kernel on small inputs; nothing here needs a graph.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    losses = std::get<0>(forward.call(logits, targets, input_lengths, target_lengths, blank, false));
  }
  if (zero_infinity) {
    losses = at::where(losses == std::numeric_limits<double>::infinity(), at::zeros({}, losses.options()), losses);
  }
  return reduce_ctc_losses(losses, target_lengths, reduction);
}

}  // namespace

TORCH_LIBRARY_IMPL(ctc_ext, CompositeImplicitAutograd, m) {
  m.impl("_reduce_ctc_losses", &reduce_ctc_losses);
  m.impl("_ctc_loss_no_grad", &ctc_loss_no_grad);
}

}  // namespace ctc_ext
