// Facts about a GGUF file's layout, read with the pinned llama.cpp's own parser (gguf.h): the
// key/value section and the tensor table only, no tensor data. Used by pybonsai.gguf_file to
// refuse or work around layouts that the model loader would crash on.
#include "core.h"

#include "gguf.h"

namespace pybonsai {

void init_gguf(py::module_ & m) {
    m.def("gguf_layout", [](const std::string & path) {
        gguf_init_params params{/*no_alloc =*/ true, /*ctx =*/ nullptr};
        gguf_context * ctx = nullptr;
        {
            py::gil_scoped_release release;
            ctx = gguf_init_from_file(path.c_str(), params);
        }
        if (ctx == nullptr) {
            throw LlamaError(with_log("invalid GGUF file '" + path + "'"));
        }
        py::dict out;
        out["alignment"] = gguf_get_alignment(ctx);
        out["data_offset"] = gguf_get_data_offset(ctx);
        out["n_tensors"] = gguf_get_n_tensors(ctx);
        out["n_kv"] = gguf_get_n_kv(ctx);
        gguf_free(ctx);
        return out;
    }, py::arg("path"),
    "alignment, data_offset, n_tensors and n_kv of a GGUF file, parsed by llama.cpp (no tensor data read).");
}

}  // namespace pybonsai
