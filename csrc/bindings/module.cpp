// pybonsai._core: a thin pybind11 layer over llama.h. Logic lives in Python (src/pybonsai).
#include "core.h"

#include "llama.h"

PYBIND11_MODULE(_core, m) {
    using namespace pybonsai;
    m.doc() = "Thin bindings over the pinned llama.cpp (llama.h); use pybonsai.Llama instead.";
    auto llama_error = py::register_exception<LlamaError>(m, "LlamaError", PyExc_RuntimeError);
    py::register_exception<CancelledError>(m, "CancelledError", llama_error.ptr());
    init_log(m);
    llama_backend_init();
    init_backend(m);
    init_model(m);
    init_context(m);
    init_sampler(m);
    init_gguf(m);
    init_json_schema(m);
#ifdef PYBONSAI_LLAMA_CPP_COMMIT
    m.attr("LLAMA_CPP_COMMIT") = PYBONSAI_LLAMA_CPP_COMMIT;
#endif
}
