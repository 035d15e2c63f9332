// Backends and devices: loading ggml's backend modules from a directory, listing what loaded.
#include "core.h"

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "llama.h"

#include <pybind11/stl.h>

namespace pybonsai {
namespace {

const char * device_type_name(enum ggml_backend_dev_type t) {
    switch (t) {
        case GGML_BACKEND_DEVICE_TYPE_CPU:   return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU:   return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU:  return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
        default:                             return "other";
    }
}

py::list devices() {
    py::list out;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        size_t free = 0, total = 0;
        ggml_backend_dev_memory(dev, &free, &total);
        py::dict d;
        d["name"] = ggml_backend_dev_name(dev);
        d["description"] = ggml_backend_dev_description(dev);
        d["type"] = device_type_name(ggml_backend_dev_type(dev));
        d["backend"] = ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev));
        d["memory_free"] = free;
        d["memory_total"] = total;
        out.append(std::move(d));
    }
    return out;
}

std::vector<std::string> backends() {
    std::vector<std::string> out;
    for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
        out.emplace_back(ggml_backend_reg_name(ggml_backend_reg_get(i)));
    }
    return out;
}

}  // namespace

void init_backend(py::module_ & m) {
    m.def("load_backends", [](const std::string & dir) {
        py::gil_scoped_release release;
        ggml_backend_load_all_from_path(dir.c_str());
    }, py::arg("dir"), "Load every ggml backend module found in `dir` (the best CPU variant among them).");
    m.def("load_backend", [](const std::string & path) {
        ggml_backend_reg_t reg;
        {
            py::gil_scoped_release release;
            reg = ggml_backend_load(path.c_str());
        }
        if (!reg) throw LlamaError(with_log("could not load backend library '" + path + "'"));
        return std::string(ggml_backend_reg_name(reg));
    }, py::arg("path"), "Load one backend module; returns its name.");
    m.def("backends", &backends, "Names of the registered backends.");
    m.def("devices", &devices, "The devices of every registered backend, as dicts.");
    m.def("system_info", [] { return std::string(llama_print_system_info()); });
    m.def("supports_gpu_offload", &llama_supports_gpu_offload);
    m.def("supports_mmap", &llama_supports_mmap);
    m.def("numa_init", [](int strategy) {
        if (strategy < GGML_NUMA_STRATEGY_DISABLED || strategy >= GGML_NUMA_STRATEGY_COUNT) {
            throw py::value_error("numa strategy must be in [0, " + std::to_string((int) GGML_NUMA_STRATEGY_COUNT) + ")");
        }
        if (!ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)) throw LlamaError("no CPU backend is loaded");
        llama_numa_init((enum ggml_numa_strategy) strategy);
    }, py::arg("strategy"), "llama_numa_init: 1 distribute, 2 isolate, 3 numactl, 4 mirror (once per process).");
}

}  // namespace pybonsai
