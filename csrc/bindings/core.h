// Shared declarations of the pybonsai._core binding layer: one init_<concept>() per file,
// composed in module.cpp, plus the small helpers every file needs.
#pragma once

#include <pybind11/pybind11.h>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

struct llama_model;

namespace pybonsai {
namespace py = pybind11;

// Raised for failures reported by llama.cpp; Python sees pybonsai._core.LlamaError (a RuntimeError).
struct LlamaError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// Raised when Llama.cancel() stopped the work; Python sees pybonsai._core.CancelledError.
struct CancelledError : LlamaError {
    using LlamaError::LlamaError;
};

// The warnings and errors llama.cpp logged since the last call, joined; empty if none.
std::string take_log();
// `message` followed by what llama.cpp logged about it, if anything.
std::string with_log(const std::string & message);

// Run `fn` with the process's stderr (fd 2) sent to a temporary file; return what was written.
// For llama.cpp code that reports errors only with fprintf(stderr) (the GBNF parser, the JSON
// Schema converter's warnings).
std::string capture_stderr(const std::function<void()> & fn);

// A loaded model shared by the Model object and every Context made from it, so that closing
// the Model never frees weights a live Context still uses.
using ModelPtr = std::shared_ptr<llama_model>;

void init_log(py::module_ & m);
void init_backend(py::module_ & m);
void init_model(py::module_ & m);
void init_context(py::module_ & m);
void init_sampler(py::module_ & m);
void init_gguf(py::module_ & m);
void init_json_schema(py::module_ & m);

}  // namespace pybonsai
