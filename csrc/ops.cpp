// Schemas of every ctc_ext operator, declared once; backends add implementations with
// TORCH_LIBRARY_IMPL(ctc_ext, <Backend>, m) in their own files, and Python adds the fake (meta)
// implementations that torch.compile and opcheck need (ctc_ext/_ops.py).
#include <Python.h>
#include <torch/library.h>

// Importing ctc_ext._C loads this shared library, which runs the registrations below.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

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
}
