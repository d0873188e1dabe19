// Test-only extension: Python binding of the emulated CUDA ops (emulation_ops.cpp).  Built on
// demand by tests/cuda_emulation/conftest.py.
#include <torch/extension.h>

#include "emulation_ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ctc_emulation_ops::forward, "emulated CUDA ctc_loss_forward");
  m.def("backward", &ctc_emulation_ops::backward, "emulated CUDA ctc_loss_backward");
  m.def("launch_shapes", &ctc_emulation_ops::launch_shapes,
        "(grid, threads, shared bytes) of the normaliser, lattice and gradient kernels");
}
