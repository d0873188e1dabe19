// The Python module ctc_ext._C.  Importing it loads this library, which runs the operator
// registrations (schemas in ops.cpp, kernels in cpu/, cuda/ and autograd/).  What is not an
// operator (objects with state, such as a decoder holding a language model) is bound here with
// pybind11: each such piece declares a bind_* function in python_module.h and is called below.
#include <torch/extension.h>

#include "python_module.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "ctc_ext's compiled library: torch.ops.ctc_ext.* and the classes bound below";
  ctc_ext::bind_autograd_nodes(module);
  ctc_ext::bind_ngram_lm(module);
  ctc_ext::bind_decoder(module);
}
