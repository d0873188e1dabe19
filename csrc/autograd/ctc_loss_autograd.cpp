// Autograd of the loss operators.  ctc_ext::ctc_loss, the operator behind ctc_ext.ctc_loss:
// per-sample losses from ctc_loss_forward, zero_infinity, the reduction, and (with a gradient)
// one autograd node whose backward turns the reduced gradient into per-sample weights for
// ctc_loss_backward; with a forward-mode tangent, the loss's tangent.  Everything between the
// Python argument checks and the kernels happens here, in one call: on small inputs the
// per-call cost of Python autograd.Functions and of composite reductions (each an autograd node
// of its own) was larger than the kernels.  ctc_loss_forward and ctc_loss_backward called on
// their own get their autograd kernels here too.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/library.h>

#include <ATen/Dispatch.h>

#include <algorithm>
#include <array>
#include <limits>
#include <tuple>
#include <typeinfo>

namespace ctc_ext {
namespace {

// torch's reduction codes.
constexpr int64_t kNone = 0, kMean = 1, kSum = 2;

using ForwardOp = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                 const at::Tensor&, const at::Tensor&, int64_t, bool);
using BackwardOp = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                              bool);

const c10::TypedOperatorHandle<ForwardOp>& forward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("ctc_ext::ctc_loss_forward", "").typed<ForwardOp>();
  return op;
}

const c10::TypedOperatorHandle<BackwardOp>& backward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("ctc_ext::ctc_loss_backward", "").typed<BackwardOp>();
  return op;
}

void check_reduction(int64_t reduction) {
  TORCH_CHECK(reduction == kNone || reduction == kMean || reduction == kSum,
              "reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
}

//   nll: (N,) float, +inf where a target cannot be aligned
at::Tensor zero_infinite(const at::Tensor& nll) {
  return nll.masked_fill(nll == std::numeric_limits<double>::infinity(), 0);
}

// Host loops for the common case of CPU tensors: the ATen expressions below cost a few
// microseconds per op, more than the whole reduction of a batch.  Plain CPU tensors only, and
// no dispatch mode active: the fake, functional and batched tensors of torch.compile, opcheck
// and vmap hold no data to read, and a tracer (make_fx, torch.export, both through dispatch
// modes) records ATen ops and would miss values written through a data pointer.  (Only
// functionality keys in this set: a backend key such as Meta would bring the Dense bit that
// every CPU tensor has.)
bool no_dispatch_mode_active() {
  return !c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::Python) &&
         c10::impl::TorchDispatchModeTLS::stack_len() == 0;
}

bool is_plain_cpu(const at::Tensor& tensor) {
  static const c10::DispatchKeySet wrappers{c10::DispatchKey::Python, c10::DispatchKey::PythonTLSSnapshot,
                                            c10::DispatchKey::Functionalize, c10::DispatchKey::FuncTorchBatched,
                                            c10::DispatchKey::FuncTorchGradWrapper};
  return (tensor.key_set() & wrappers).empty() && tensor.device().is_cpu() && tensor.layout() == at::kStrided;
}

bool reducible_on_host(const at::Tensor& losses, const at::Tensor& target_lengths) {
  return no_dispatch_mode_active() && is_plain_cpu(losses) && is_plain_cpu(target_lengths) &&
         target_lengths.scalar_type() == at::kLong && losses.dim() == 1 && target_lengths.dim() == 1 &&
         target_lengths.numel() == losses.numel();
}

// 'mean' divides each loss by max(target_length, 1) and averages (NaN for N = 0, like
// torch.mean).  No op here takes a device argument (Tensor.to(other), new_empty): the schema
// check of opcheck cannot inspect one, and it sees these ops from the autograd kernel.
//   losses: (N,) float;  target_lengths: (N,) integer, any device
at::Tensor reduce(const at::Tensor& losses, const at::Tensor& target_lengths, int64_t reduction) {
  if (reduction == kNone) return losses;
  if (!reducible_on_host(losses, target_lengths)) {
    if (reduction == kSum) return losses.sum();
    return (losses / target_lengths.to(losses).clamp_min(1)).mean();
  }
  const at::Tensor lengths = target_lengths.contiguous();
  const at::Tensor values = losses.contiguous();
  const int64_t N = values.size(0);
  at::Tensor result = values.new_empty({});
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "ctc_loss_reduce", [&] {
    const scalar_t* loss = values.const_data_ptr<scalar_t>();
    const int64_t* length = lengths.const_data_ptr<int64_t>();
    double total = 0;  // double: N float32 terms add up without the float32 rounding of each sum
    for (int64_t n = 0; n < N; ++n) {
      total += reduction == kSum ? double(loss[n]) : double(loss[n]) / double(std::max<int64_t>(length[n], 1));
    }
    if (reduction == kMean) total = N > 0 ? total / double(N) : std::numeric_limits<double>::quiet_NaN();
    *result.data_ptr<scalar_t>() = static_cast<scalar_t>(total);
  });
  return result;
}

// d(reduced loss) / d(loss_n) times the incoming gradient, as the (N,) grad_nll of the backward op.
//   grad: the reduced loss's gradient, () or (N,) for 'none';  nll: (N,)
at::Tensor per_sample_gradient(const at::Tensor& grad, const at::Tensor& nll, const at::Tensor& target_lengths,
                               int64_t reduction) {
  if (reduction == kNone) return grad;
  if (reduction == kSum) return grad.expand_as(nll);
  if (!reducible_on_host(nll, target_lengths) || !is_plain_cpu(grad) || grad.numel() != 1) {
    return grad / target_lengths.to(nll).clamp_min(1) / c10::Scalar(nll.sym_size(0));
  }
  const at::Tensor lengths = target_lengths.contiguous();
  const int64_t N = nll.size(0);
  const double incoming = grad.item<double>();
  at::Tensor result = nll.new_empty({N});
  AT_DISPATCH_FLOATING_TYPES(nll.scalar_type(), "ctc_loss_per_sample_gradient", [&] {
    const int64_t* length = lengths.const_data_ptr<int64_t>();
    scalar_t* out = result.data_ptr<scalar_t>();
    for (int64_t n = 0; n < N; ++n) {
      out[n] = static_cast<scalar_t>(incoming / (double(std::max<int64_t>(length[n], 1)) * double(N)));
    }
  });
  return result;
}

// Whether the forward keeps log_alpha for the backward.  Its layout gives each sample the padded
// width S of the targets, T * (2 N S + N) values; when the targets are far shorter than S (padded
// (16, 20000) holding 3 labels each: 1.2 GB for T = 500) the backward instead recomputes each
// sample's alpha, T_n * (2 L_n + 1) values at a time.  That runs the alpha recurrence twice, so
// only when the padded layout is over twice what the lengths need and wastes over 2^24 values
// (64 MiB of float32).  Decided on the host, for plain CPU tensors outside any dispatch mode
// (traced and device tensors keep log_alpha, so that a trace does not depend on the lengths).
bool keep_log_alpha(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& target_lengths) {
  if (!no_dispatch_mode_active() || !is_plain_cpu(logits) || !is_plain_cpu(target_lengths) ||
      target_lengths.dim() != 1 || logits.dim() != 3) {
    return true;
  }
  const at::Tensor lengths = target_lengths.contiguous();
  double used_slots = 0;  // double: no overflow; the forward checks the lengths themselves
  AT_DISPATCH_INTEGRAL_TYPES(lengths.scalar_type(), "ctc_loss_keep_log_alpha", [&] {
    const scalar_t* length = lengths.const_data_ptr<scalar_t>();
    for (int64_t n = 0; n < lengths.numel(); ++n) used_slots += std::max<double>(double(length[n]), 0);
  });
  const double T = double(logits.size(0)), N = double(lengths.numel());
  const double padded = T * (2 * double(targets.numel()) + N), needed = T * (2 * used_slots + N);
  return padded <= 2 * needed || padded - needed < double(int64_t(1) << 24);
}

// The loss without a gradient: forward without log_alpha, then the reduction (the backend
// kernel of ctc_loss for every device; autograd comes from CTCLossBackward below).
at::Tensor ctc_loss_no_grad(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& input_lengths,
                            const at::Tensor& target_lengths, int64_t blank, int64_t reduction, bool zero_infinity) {
  check_reduction(reduction);
  at::Tensor nll = std::get<0>(forward_op().call(logits, targets, input_lengths, target_lengths, blank, false));
  return reduce(zero_infinity ? zero_infinite(nll) : nll, target_lengths, reduction);
}

// The backward of ctc_loss, written as a plain autograd Node (as PyTorch's generated
// CtcLossBackward0 is) rather than a torch::autograd::Function: functorch transforms (grad,
// vjp, vmap of either) refuse C++ autograd::Functions, and the Node's only input is the logits,
// so calling it (`loss.grad_fn(grad)`) returns one tensor, as the built-in's does.
struct CTCLossBackward final : public torch::autograd::TraceableFunction {
  std::string name() const override { return "CTCLossBackward"; }

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!should_compute_output(0) || !grads[0].defined()) return {at::Tensor()};
    const at::Tensor nll = nll_.unpack(getptr());
    const at::Tensor logits = logits_.unpack(), target_lengths = target_lengths_.unpack();
    const at::Tensor grad_nll = per_sample_gradient(grads[0], nll, target_lengths, reduction_);
    // Through the dispatcher's autograd key (ctc_loss_backward_autograd below): with
    // create_graph=True the gradient gets a node that refuses to be differentiated again.
    return {backward_op().call(grad_nll, logits, targets_.unpack(), input_lengths_.unpack(), target_lengths, nll,
                               log_alpha_.unpack(), log_normalizer_.unpack(), blank_, zero_infinity_)};
  }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto* saved : {&logits_, &targets_, &input_lengths_, &target_lengths_, &nll_, &log_alpha_, &log_normalizer_}) {
      saved->reset_data();
    }
  }

  // logits (T, N, C); copies of targets and lengths (the backward must see exactly the values
  // the forward saw: a tensor sharing memory with a numpy array can change without autograd's
  // version counter noticing, and log_alpha's layout follows them); the forward's state.
  torch::autograd::SavedVariable logits_, targets_, input_lengths_, target_lengths_, nll_, log_alpha_, log_normalizer_;
  int64_t blank_ = 0, reduction_ = kNone;
  bool zero_infinity_ = false;
};

// Forward-mode AD: the loss's tangent is the Eq. 16 gradient of each sample's loss dotted with
// the logits' tangent, reduced like the loss (every reduction is linear in the losses).
//   logits, tangent: (T, N, C);  nll: (N,) float
at::Tensor loss_tangent(const at::Tensor& logits, const at::Tensor& tangent, const at::Tensor& targets,
                        const at::Tensor& input_lengths, const at::Tensor& target_lengths, const at::Tensor& nll,
                        const at::Tensor& log_alpha, const at::Tensor& log_normalizer, int64_t blank, int64_t reduction,
                        bool zero_infinity) {
  at::Tensor per_sample_jacobian;  // (T, N, C): d loss_n / d logits[:, n, :]
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    per_sample_jacobian = backward_op().call(at::ones_like(nll), logits, targets, input_lengths, target_lengths, nll,
                                             log_alpha, log_normalizer, blank, zero_infinity);
  }
  const at::Tensor nll_tangent =
      (per_sample_jacobian.to(nll.scalar_type()) * tangent.to(nll.scalar_type())).sum({0, 2});
  return reduce(nll_tangent, target_lengths, reduction);
}

// The loss and, when the logits need a gradient or carry a forward-mode tangent, its autograd
// history: the forward op keeps log_alpha, a CTCLossBackward node takes the loss's gradient,
// and the loss carries its tangent.  Returns {loss, nll, log_alpha, log_normalizer}.
std::array<at::Tensor, 4> differentiable_loss(const at::Tensor& logits, const at::Tensor& targets,
                                              const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                              int64_t blank, int64_t reduction, bool zero_infinity,
                                              const at::Tensor& tangent) {
  at::Tensor nll, log_alpha, log_normalizer, loss;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    std::tie(nll, log_alpha, log_normalizer) = forward_op().call(logits, targets, input_lengths, target_lengths, blank,
                                                                 keep_log_alpha(logits, targets, target_lengths));
    loss = reduce(zero_infinity ? zero_infinite(nll) : nll, target_lengths, reduction);
  }
  if (torch::autograd::compute_requires_grad(logits)) {
    auto node = c10::make_intrusive<CTCLossBackward>();
    node->set_next_edges(torch::autograd::collect_next_edges(logits));
    torch::autograd::set_history(loss, node);
    node->logits_ = torch::autograd::SavedVariable(logits, false);
    node->targets_ = torch::autograd::SavedVariable(targets.clone(), false);
    node->input_lengths_ = torch::autograd::SavedVariable(input_lengths.clone(), false);
    node->target_lengths_ = torch::autograd::SavedVariable(target_lengths.clone(), false);
    // With reduction 'none' and no zero_infinity the loss is nll itself: saved as an output, so
    // that the node does not hold itself alive through it.
    node->nll_ = torch::autograd::SavedVariable(nll, loss.is_same(nll));
    node->log_alpha_ = torch::autograd::SavedVariable(log_alpha, false);
    node->log_normalizer_ = torch::autograd::SavedVariable(log_normalizer, false);
    node->blank_ = blank;
    node->reduction_ = reduction;
    node->zero_infinity_ = zero_infinity;
  }
  if (tangent.defined()) {
    loss._set_fw_grad(loss_tangent(logits, tangent, targets, input_lengths, target_lengths, nll, log_alpha,
                                   log_normalizer, blank, reduction, zero_infinity),
                      /*level=*/0, /*is_inplace_op=*/false);
  }
  return {loss, nll, log_alpha, log_normalizer};
}

at::Tensor ctc_loss_autograd(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& input_lengths,
                             const at::Tensor& target_lengths, int64_t blank, int64_t reduction, bool zero_infinity) {
  check_reduction(reduction);
  const at::Tensor tangent = logits._fw_grad(/*level=*/0);
  if (!torch::autograd::compute_requires_grad(logits) && !tangent.defined()) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return ctc_loss_no_grad(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity);
  }
  return differentiable_loss(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity,
                             tangent)[0];
}

// ctc_loss_forward called on its own (opcheck, graphs that torch.export decomposed): the
// per-sample losses are differentiable through the same node.  Without keep_log_alpha the
// forward still keeps it for the backward, and returns the empty log_alpha of its schema.
std::tuple<at::Tensor, at::Tensor, at::Tensor> ctc_loss_forward_autograd(const at::Tensor& logits,
                                                                         const at::Tensor& targets,
                                                                         const at::Tensor& input_lengths,
                                                                         const at::Tensor& target_lengths,
                                                                         int64_t blank, bool keep_log_alpha) {
  const at::Tensor tangent = logits._fw_grad(/*level=*/0);
  if (!torch::autograd::compute_requires_grad(logits) && !tangent.defined()) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_op().call(logits, targets, input_lengths, target_lengths, blank, keep_log_alpha);
  }
  auto [nll, unused_nll, log_alpha, log_normalizer] =
      differentiable_loss(logits, targets, input_lengths, target_lengths, blank, kNone, false, tangent);
  if (!keep_log_alpha) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    log_alpha = log_alpha.new_empty({0});
  }
  return {nll, log_alpha, log_normalizer};
}

// ctc_loss_backward through autograd: the gradient itself is not differentiable.  With
// create_graph=True (which torch.func.grad always sets) it gets a node that says so if reached;
// a forward-mode tangent through it (jacfwd of a gradient, hessian) is refused at once.
at::Tensor ctc_loss_backward_autograd(const at::Tensor& grad_nll, const at::Tensor& logits, const at::Tensor& targets,
                                      const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                      const at::Tensor& nll, const at::Tensor& log_alpha,
                                      const at::Tensor& log_normalizer, int64_t blank, bool zero_infinity) {
  TORCH_CHECK(!logits._fw_grad(/*level=*/0).defined() && !grad_nll._fw_grad(/*level=*/0).defined(),
              "ctc_ext: forward-mode AD of the CTC gradient (second derivatives, e.g. torch.func.hessian) is not "
              "supported");
  at::Tensor grad_logits;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    grad_logits = backward_op().call(grad_nll, logits, targets, input_lengths, target_lengths, nll, log_alpha,
                                     log_normalizer, blank, zero_infinity);
  }
  if (torch::autograd::compute_requires_grad(grad_nll, logits)) {
    auto refuse = c10::make_intrusive<torch::autograd::Error>(
        "ctc_ext: double backward (differentiating the CTC gradient itself) is not supported; call backward "
        "without create_graph=True, or use torch.autograd.grad without it",
        torch::autograd::collect_next_edges(grad_nll, logits));
    torch::autograd::set_history(grad_logits, refuse);
  }
  return grad_logits;
}

}  // namespace

const std::type_info& ctc_loss_backward_node_type() { return typeid(CTCLossBackward); }

TORCH_LIBRARY_IMPL(ctc_ext, CompositeExplicitAutograd, m) { m.impl("ctc_loss", &ctc_loss_no_grad); }

TORCH_LIBRARY_IMPL(ctc_ext, Autograd, m) {
  m.impl("ctc_loss", &ctc_loss_autograd);
  m.impl("ctc_loss_forward", &ctc_loss_forward_autograd);
  m.impl("ctc_loss_backward", &ctc_loss_backward_autograd);
}

}  // namespace ctc_ext
