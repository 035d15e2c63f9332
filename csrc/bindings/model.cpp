// Model: a loaded GGUF (weights and vocabulary), its metadata and its tokenizer.
#include "core.h"

#include "model.h"

#include <pybind11/stl.h>

namespace pybonsai {

void init_model(py::module_ & m) {
    py::class_<Model>(m, "Model", "A loaded GGUF model (llama_model) and its vocabulary.")
        .def(py::init<const std::string &, int, bool, bool, bool, py::object, const py::dict &>(), py::arg("path"),
             py::arg("n_gpu_layers") = 0, py::arg("vocab_only") = false, py::arg("use_mmap") = true,
             py::arg("use_mlock") = false,
             py::arg("progress") = py::none(), py::arg("options") = py::dict(),
             "Load a GGUF. `progress(fraction)` may return False to cancel; `options`: split_mode, main_gpu, "
             "tensor_split, kv_overrides ([(key, value)]).")
        .def_property_readonly("path", &Model::path)
        .def_property_readonly("closed", &Model::closed)
        .def("close", &Model::close, "Drop this handle; weights are freed once no Context uses them.")
        .def_property_readonly("n_vocab", &Model::n_vocab)
        .def_property_readonly("n_ctx_train", [](const Model & s) { return llama_model_n_ctx_train(s.get()); })
        .def_property_readonly("n_embd", [](const Model & s) { return llama_model_n_embd(s.get()); })
        .def_property_readonly("n_layer", [](const Model & s) { return llama_model_n_layer(s.get()); })
        .def_property_readonly("n_head", [](const Model & s) { return llama_model_n_head(s.get()); })
        .def_property_readonly("n_head_kv", [](const Model & s) { return llama_model_n_head_kv(s.get()); })
        .def_property_readonly("n_params", [](const Model & s) { return llama_model_n_params(s.get()); })
        .def_property_readonly("size", [](const Model & s) { return llama_model_size(s.get()); })
        .def_property_readonly("desc", &Model::desc)
        .def("metadata", &Model::metadata, "GGUF key/value pairs, values rendered as strings.")
        .def("chat_template", &Model::chat_template, py::arg("name") = py::none())
        .def_property_readonly("token_bos", [](const Model & s) { return llama_vocab_bos(s.vocab()); })
        .def_property_readonly("token_eos", [](const Model & s) { return llama_vocab_eos(s.vocab()); })
        .def_property_readonly("token_eot", [](const Model & s) { return llama_vocab_eot(s.vocab()); })
        .def_property_readonly("token_nl", [](const Model & s) { return llama_vocab_nl(s.vocab()); })
        .def_property_readonly("is_recurrent", [](const Model & s) { return llama_model_is_recurrent(s.get()); })
        .def_property_readonly("is_hybrid", [](const Model & s) { return llama_model_is_hybrid(s.get()); })
        .def_property_readonly("add_bos", [](const Model & s) { return llama_vocab_get_add_bos(s.vocab()); })
        .def("is_eog", [](const Model & s, llama_token t) { s.check_token(t); return llama_vocab_is_eog(s.vocab(), t); })
        .def("is_control", [](const Model & s, llama_token t) { s.check_token(t); return llama_vocab_is_control(s.vocab(), t); })
        .def("tokenize", &Model::tokenize, py::arg("text"), py::arg("add_special"), py::arg("parse_special"))
        .def("token_to_piece", &Model::token_to_piece, py::arg("token"), py::arg("special") = false)
        .def("detokenize", &Model::detokenize, py::arg("tokens"), py::arg("remove_special") = false,
             py::arg("unparse_special") = false);
}

}  // namespace pybonsai
