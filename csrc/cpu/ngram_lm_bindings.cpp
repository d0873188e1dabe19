// ctc_ext._C.NgramLanguageModel: the n-gram LM of ngram_lm.h for Python (ctc_ext/lm.py wraps it).
#include <pybind11/stl.h>

#include <stdexcept>

#include "../python_module.h"
#include "ngram_lm.h"

namespace py = pybind11;

namespace ctc_ext {

void bind_ngram_lm(py::module_& module) {
  using Model = NgramLanguageModel;
  // pybind11 holds the model by a non-const pointer; every bound method is const.  Constructed
  // from a path so that Python may subclass it (ctc_ext.lm.NgramLM) and C++ code taking a
  // std::shared_ptr<NgramLanguageModel> accepts the subclass.
  py::class_<Model, std::shared_ptr<Model>>(module, "NgramLanguageModel")
      .def(py::init([](const std::string& path) {
             std::shared_ptr<const Model> model;
             try {
               py::gil_scoped_release release;
               model = Model::load_arpa(path);
             } catch (const std::runtime_error& error) {
               throw py::value_error(error.what());  // a malformed file is a bad argument
             }
             return std::const_pointer_cast<Model>(model);
           }),
           py::arg("path"))
      .def_property_readonly("order", &Model::order)
      .def("begin_state", &Model::begin_state)
      .def("null_state", &Model::null_state)
      .def("word_index", &Model::word_index, py::arg("word"))
      .def("is_word_prefix", &Model::is_word_prefix, py::arg("prefix"))
      .def(
          "score_word",
          [](const Model& model, Model::State state, int32_t word) {
            Model::State next = 0;
            double log_prob = model.score(state, word, &next);
            return py::make_tuple(log_prob, next);
          },
          py::arg("state"), py::arg("word"), "(natural-log probability of word after state, the state after it)")
      .def("end_score", &Model::end_score, py::arg("state"))
      .def_property_readonly("vocabulary", &Model::vocabulary)
      .def("num_ngrams", &Model::num_ngrams, py::arg("n"));
}

}  // namespace ctc_ext
