// Test-only extension: Python binding of the emulated CUDA ops (emulation_ops.cpp).  Built on
// demand by tests/cuda_emulation/conftest.py.
#include <torch/extension.h>

#include "emulation_ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ctc_emulation_ops::forward, "emulated CUDA ctc_loss_forward");
  m.def("gathered_emissions", &ctc_emulation_ops::gathered_emissions,
        "the kept log_alpha buffer after log_normalizer_kernel's emission gather alone");
  m.def("backward", &ctc_emulation_ops::backward, "emulated CUDA ctc_loss_backward");
  m.def("greedy_decode", &ctc_emulation_ops::greedy_decode, "emulated CUDA greedy_decode");
  m.def("forced_align", &ctc_emulation_ops::forced_align, "emulated CUDA forced_align");
  m.def("warp_collective", &ctc_emulation_ops::warp_collective,
        "one emulated warp collective per thread (tests of the primitives)");
  m.def("launch_shapes", &ctc_emulation_ops::launch_shapes,
        "(grid, threads, shared bytes) of the normaliser, lattice and gradient kernels");
}
