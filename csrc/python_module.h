// Python bindings of the pieces that are not torch operators, one bind_* function each,
// called from PYBIND11_MODULE in python_module.cpp.
#pragma once

#include <pybind11/pybind11.h>

namespace ctc_ext {

// Python classes for the autograd nodes of csrc/autograd, so that `loss.grad_fn` shows as
// <CTCLossBackward object at ...> like torch's own nodes (csrc/autograd/python_nodes.cpp).
void bind_autograd_nodes(pybind11::module_& module);

// ctc_ext._C.NgramLanguageModel (csrc/cpu/ngram_lm_bindings.cpp).
void bind_ngram_lm(pybind11::module_& module);
void bind_decoder(pybind11::module_& module);  // cpu/decoder_bindings.cpp

}  // namespace ctc_ext
