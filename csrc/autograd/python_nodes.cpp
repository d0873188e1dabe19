// Python types of ctc_ext's autograd nodes (csrc/autograd/ctc_loss_autograd.cpp).  Without
// one, torch shows a C++ node as a generic <CppFunction object>; with one, `loss.grad_fn`
// reads <CTCLossBackward object at ...>, as torch's generated nodes do.
#include <torch/csrc/autograd/python_cpp_function.h>
#include <torch/extension.h>

#include <typeinfo>

#include "../python_module.h"

namespace ctc_ext {

const std::type_info& ctc_loss_backward_node_type();  // defined in ctc_loss_autograd.cpp

void bind_autograd_nodes(pybind11::module_& module) {
  static PyTypeObject ctc_loss_backward_class;
  torch::autograd::_initFunctionPyTypeObject(ctc_loss_backward_class, "CTCLossBackward", nullptr, nullptr);
  Py_INCREF(&ctc_loss_backward_class);
  module.add_object("CTCLossBackward", reinterpret_cast<PyObject*>(&ctc_loss_backward_class));
  torch::autograd::registerCppFunction(ctc_loss_backward_node_type(), &ctc_loss_backward_class);
}

}  // namespace ctc_ext
