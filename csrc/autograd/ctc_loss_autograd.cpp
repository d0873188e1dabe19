// ctc_ext::ctc_loss, the operator behind ctc_ext.ctc_loss: per-sample losses from
// ctc_loss_forward, zero_infinity, the reduction, and (with a gradient) one C++ autograd node
// whose backward turns the reduced gradient into per-sample weights for ctc_loss_backward.
// Everything between the Python argument checks and the kernels happens here, in one call:
// on small inputs the per-call cost of Python autograd.Functions and of composite reductions
// (each an autograd node of its own) was larger than the kernels.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <ATen/Dispatch.h>

#include <algorithm>
#include <limits>
#include <tuple>

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
// microseconds per op, more than the whole reduction of a batch.  Plain CPU tensors only: the
// fake, functional and batched tensors of torch.compile, opcheck and vmap hold no data to read
// and take the ATen expressions.  (Only functionality keys in this set: a backend key such as
// Meta would bring the Dense bit that every CPU tensor has.)
bool is_plain_cpu(const at::Tensor& tensor) {
  static const c10::DispatchKeySet wrappers{c10::DispatchKey::Python, c10::DispatchKey::PythonTLSSnapshot,
                                            c10::DispatchKey::Functionalize, c10::DispatchKey::FuncTorchBatched,
                                            c10::DispatchKey::FuncTorchGradWrapper};
  return (tensor.key_set() & wrappers).empty() && tensor.device().is_cpu() && tensor.layout() == at::kStrided;
}

bool reducible_on_host(const at::Tensor& losses, const at::Tensor& target_lengths) {
  return is_plain_cpu(losses) && is_plain_cpu(target_lengths) && target_lengths.scalar_type() == at::kLong &&
         losses.dim() == 1 && target_lengths.dim() == 1 && target_lengths.numel() == losses.numel();
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
// (64 MiB of float32).  Decided on the host, for plain CPU tensors
// only (traced and device tensors keep log_alpha, whose size their fake kernel states).
bool keep_log_alpha(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& target_lengths) {
  if (!is_plain_cpu(logits) || !is_plain_cpu(target_lengths) || target_lengths.dim() != 1 || logits.dim() != 3) {
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
// kernel of ctc_loss for every device; autograd comes from CTCLossNode below).
at::Tensor ctc_loss_no_grad(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& input_lengths,
                            const at::Tensor& target_lengths, int64_t blank, int64_t reduction, bool zero_infinity) {
  check_reduction(reduction);
  at::Tensor nll = std::get<0>(forward_op().call(logits, targets, input_lengths, target_lengths, blank, false));
  return reduce(zero_infinity ? zero_infinite(nll) : nll, target_lengths, reduction);
}

struct CTCLossNode : public torch::autograd::Function<CTCLossNode> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& targets,
                            const at::Tensor& input_lengths, const at::Tensor& target_lengths, int64_t blank,
                            int64_t reduction, bool zero_infinity) {
    // Straight to the backend kernels: ctc_loss_forward's own autograd kernel (Python,
    // ctc_ext/_ops.py) is for calling it alone and would cost a Python round trip here.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [nll, log_alpha, log_normalizer] = forward_op().call(logits, targets, input_lengths, target_lengths, blank,
                                                              keep_log_alpha(logits, targets, target_lengths));
    // The backward must see exactly the lengths and labels the forward saw: a tensor that shares
    // memory with a numpy array can change without autograd's version counter noticing, and
    // log_alpha's layout and bands follow these values.  They are small next to the logits.
    ctx->save_for_backward(
        {logits, targets.clone(), input_lengths.clone(), target_lengths.clone(), nll, log_alpha, log_normalizer});
    ctx->saved_data["blank"] = blank;
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["zero_infinity"] = zero_infinity;
    return reduce(zero_infinity ? zero_infinite(nll) : nll, target_lengths, reduction);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &logits = saved[0], &targets = saved[1], &input_lengths = saved[2], &target_lengths = saved[3],
                     &nll = saved[4], &log_alpha = saved[5], &log_normalizer = saved[6];
    const at::Tensor grad_nll =
        per_sample_gradient(grad_outputs[0], nll, target_lengths, ctx->saved_data["reduction"].toInt());
    auto call = [&] {
      return backward_op().call(grad_nll, logits, targets, input_lengths, target_lengths, nll, log_alpha,
                                log_normalizer, ctx->saved_data["blank"].toInt(),
                                ctx->saved_data["zero_infinity"].toBool());
    };
    at::Tensor grad_logits;
    if (at::GradMode::is_enabled()) {
      // create_graph=True: keep ctc_loss_backward's autograd kernel, which raises a clear
      // "double backward is not supported" if that graph is differentiated.
      grad_logits = call();
    } else {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      grad_logits = call();
    }
    return {grad_logits, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor ctc_loss_autograd(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& input_lengths,
                             const at::Tensor& target_lengths, int64_t blank, int64_t reduction, bool zero_infinity) {
  check_reduction(reduction);
  if (!(at::GradMode::is_enabled() && logits.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return ctc_loss_no_grad(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity);
  }
  return CTCLossNode::apply(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity);
}

}  // namespace

TORCH_LIBRARY_IMPL(ctc_ext, CompositeExplicitAutograd, m) { m.impl("ctc_loss", &ctc_loss_no_grad); }

TORCH_LIBRARY_IMPL(ctc_ext, Autograd, m) { m.impl("ctc_loss", &ctc_loss_autograd); }

}  // namespace ctc_ext
