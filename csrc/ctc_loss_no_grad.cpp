// ctc_loss without autograd, reduction included, in one call: what ctc_ext.ctc_loss runs when no
// gradient is wanted.  For small inputs the per-call cost of Python (an autograd.Function, three
// reduction ops) outweighs the kernel; here it is one dispatch.  Composite over
// ctc_loss_forward, so every backend that implements that op gets this one too.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <limits>

namespace ctc_ext {
namespace {

// reduction: 0 'none', 1 'mean', 2 'sum' (torch's at::Reduction codes).
at::Tensor ctc_loss_no_grad(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& input_lengths,
                            const at::Tensor& target_lengths, int64_t blank, int64_t reduction, bool zero_infinity) {
  TORCH_CHECK(!(at::GradMode::is_enabled() && logits.requires_grad()),
              "ctc_ext::_ctc_loss_no_grad computes no gradient; use ctc_ext.ctc_loss");
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
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
  if (reduction == 0) return losses;
  if (reduction == 2) return losses.sum();
  return (losses / target_lengths.clamp_min(1)).mean();  // int64 lengths promote to the loss dtype
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ctc_ext, m) {
  m.def("_ctc_loss_no_grad(Tensor logits, Tensor targets, Tensor input_lengths, Tensor target_lengths, int blank, "
        "int reduction, bool zero_infinity) -> Tensor");
}

TORCH_LIBRARY_IMPL(ctc_ext, CompositeImplicitAutograd, m) {
  m.impl("_ctc_loss_no_grad", &ctc_loss_no_grad);
}

}  // namespace ctc_ext
