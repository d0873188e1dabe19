// Schemas of every ctc_ext operator, declared once; backends add implementations with
// TORCH_LIBRARY_IMPL(ctc_ext, <Backend>, m) in their own files (csrc/cpu, csrc/cuda,
// csrc/autograd), and Python adds the fake (meta) implementations that torch.compile and opcheck
// need (ctc_ext/_ops.py).
#include <torch/library.h>

TORCH_LIBRARY(ctc_ext, m) {
  // logits: (T, N, C) float, any strides; normalised with log-softmax inside the kernel.
  // targets: (N, S) padded or (sum(target_lengths),) concatenated, int32 or int64.
  // input_lengths, target_lengths: (N,) integer.
  // Returns neg_log_likelihood (N,), log_alpha (flat, empty unless keep_log_alpha; layout in
  // csrc/ctc_math.h) and log_normalizer (N, T), the log-softmax normaliser of every frame.
  m.def(
      "ctc_loss_forward(Tensor logits, Tensor targets, Tensor input_lengths, Tensor target_lengths, "
      "int blank, bool keep_log_alpha) -> (Tensor neg_log_likelihood, Tensor log_alpha, Tensor log_normalizer)");
  // The Eq. 16 gradient of grad_nll . neg_log_likelihood with respect to the logits, (T, N, C)
  // like logits.  Samples with an infinite loss get zero gradients when zero_infinity is set.
  m.def(
      "ctc_loss_backward(Tensor grad_nll, Tensor logits, Tensor targets, Tensor input_lengths, "
      "Tensor target_lengths, Tensor neg_log_likelihood, Tensor log_alpha, Tensor log_normalizer, int blank, "
      "bool zero_infinity) -> Tensor");
  // The loss of ctc_ext.ctc_loss (csrc/autograd/ctc_loss_autograd.cpp): ctc_loss_forward, zero_infinity and the
  // reduction, differentiable with respect to logits through one autograd node.  reduction:
  // 0 'none' (the (N,) losses), 1 'mean' (each loss divided by max(target_length, 1), then
  // averaged), 2 'sum'.  Returns float64 for float64 logits, float32 otherwise.
  m.def(
      "ctc_loss(Tensor logits, Tensor targets, Tensor input_lengths, Tensor target_lengths, int blank, "
      "int reduction, bool zero_infinity) -> Tensor");
}

// Decoding and forced alignment (csrc/cpu/*_cpu.cpp, csrc/cuda/decode_cuda.cu).  Every op takes logits (T, N, C) (raw
// logits or log-probabilities; log-softmax is applied inside where scores are needed) and input_lengths (N,) integer,
// and returns tensors of static shape so that fake kernels can describe them.
TORCH_LIBRARY_FRAGMENT(ctc_ext, m) {
  // Best path: labels (N, T) int64, sample n's decoded labels in labels[n, :label_lengths[n]]
  // and -1 after them; label_lengths (N,) int64.
  m.def("greedy_decode(Tensor logits, Tensor input_lengths, int blank) -> (Tensor labels, Tensor label_lengths)");
  // CTC prefix beam search.  labels (N, top_k, T) int64 padded with -1, label_lengths (N, top_k)
  // int64, log_probs (N, top_k) (float64 for float64 logits, float32 otherwise; -inf in unused
  // slots), num_hypotheses (N,) int64: how many of the top_k slots hold a hypothesis, best first.
  m.def(
      "beam_search(Tensor logits, Tensor input_lengths, int blank, int beam_width, int top_k) -> "
      "(Tensor labels, Tensor label_lengths, Tensor log_probs, Tensor num_hypotheses)");
  // Viterbi alignment of each target.  targets as in ctc_loss_forward.  alignment (N, T) int64:
  // the class of the best path at every frame, -1 beyond the input length; frame_log_probs
  // (N, T): its log-probability per frame, 0 beyond the input length; path_log_prob (N,): their
  // sum, -inf (with alignment all -1 and frame_log_probs all 0) when no path has a finite score.
  m.def(
      "forced_align(Tensor logits, Tensor targets, Tensor input_lengths, Tensor target_lengths, int blank) -> "
      "(Tensor alignment, Tensor frame_log_probs, Tensor path_log_prob)");
}

// Internal operators for tests and benchmarks (CPU only, csrc/cpu/ctc_loss_cpu.cpp).
TORCH_LIBRARY_FRAGMENT(ctc_ext, m) {
  // One vectorised row primitive of one instruction set applied elementwise: function is exp,
  // log, exp_nonpositive, half_to_float, bfloat16_to_float, float_to_half or float_to_bfloat16;
  // isa is generic, avx2 or avx512.
  m.def("_simd_math(Tensor input, str function, str isa) -> Tensor");
  // The instruction set the CPU kernels use now, for the benchmark report.
  m.def("_cpu_kernel_isa() -> str");
  // Forces the CPU kernels' instruction set (generic, avx2, avx512) and schedule (sample, frame)
  // for the tests; "" restores the automatic choice.  Overrides CTC_EXT_CPU_ISA / _SCHEDULE.
  m.def("_set_cpu_kernel_path(str isa, str schedule) -> ()");
}
