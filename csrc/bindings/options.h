// Optional llama_model_params / llama_context_params fields set from a Python dict of
// name -> value (names as in llama.h). Validation of meaning lives in Python (pybonsai.llama);
// this only checks types/ranges that would otherwise be undefined behaviour in llama.cpp.
#pragma once

#include "core.h"

#include "llama.h"

#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <vector>

namespace pybonsai {

// Storage that must outlive llama_model_load_from_file (llama.h keeps pointers to it).
struct ModelOptions {
    std::vector<llama_model_kv_override> kv;
    std::vector<float> tensor_split;

    void apply(llama_model_params & p, const py::dict & options) {
        for (auto item : options) {
            const std::string key = item.first.cast<std::string>();
            py::handle v = item.second;
            if (key == "split_mode") {
                const int m = v.cast<int>();
                if (m < LLAMA_SPLIT_MODE_NONE || m > LLAMA_SPLIT_MODE_TENSOR) throw py::value_error("split_mode must be 0..3");
                p.split_mode = (llama_split_mode) m;
            } else if (key == "main_gpu") {
                p.main_gpu = v.cast<int32_t>();
            } else if (key == "tensor_split") {
                tensor_split = v.cast<std::vector<float>>();
                if (tensor_split.size() > llama_max_devices()) {
                    throw py::value_error("tensor_split has more entries than llama_max_devices() = " +
                                          std::to_string(llama_max_devices()));
                }
                tensor_split.resize(llama_max_devices(), 0.0f);
                p.tensor_split = tensor_split.data();
            } else if (key == "kv_overrides") {
                add_kv_overrides(v.cast<py::list>());
                p.kv_overrides = kv.empty() ? nullptr : kv.data();
            } else {
                throw py::value_error("unknown model option '" + key + "'");
            }
        }
    }

private:
    // [(key, bool | int | float | str), ...], already validated in Python; NUL-terminated list.
    void add_kv_overrides(const py::list & pairs) {
        kv.clear();
        for (auto pair : pairs) {
            auto kvp = pair.cast<py::tuple>();
            llama_model_kv_override o{};
            const std::string k = kvp[0].cast<std::string>();
            if (k.empty() || k.size() >= sizeof o.key) throw py::value_error("kv_overrides key too long: " + k);
            std::memcpy(o.key, k.data(), k.size());
            py::handle val = kvp[1];
            if (py::isinstance<py::bool_>(val)) {
                o.tag = LLAMA_KV_OVERRIDE_TYPE_BOOL;
                o.val_bool = val.cast<bool>();
            } else if (py::isinstance<py::int_>(val)) {
                o.tag = LLAMA_KV_OVERRIDE_TYPE_INT;
                o.val_i64 = val.cast<int64_t>();
            } else if (py::isinstance<py::float_>(val)) {
                o.tag = LLAMA_KV_OVERRIDE_TYPE_FLOAT;
                o.val_f64 = val.cast<double>();
            } else {
                const std::string s = val.cast<std::string>();
                if (s.size() >= sizeof o.val_str) throw py::value_error("kv_overrides value too long for " + k);
                o.tag = LLAMA_KV_OVERRIDE_TYPE_STR;
                std::memcpy(o.val_str, s.data(), s.size());
            }
            kv.push_back(o);
        }
        if (!kv.empty()) kv.push_back(llama_model_kv_override{});  // key[0] == 0 ends the list
    }
};

// llama-cpp-python's context parameters beyond the basic ones.
inline void apply_context_options(llama_context_params & p, const py::dict & options) {
    for (auto item : options) {
        const std::string key = item.first.cast<std::string>();
        py::handle v = item.second;
        auto enum_in = [&](int lo, int hi) {
            const int x = v.cast<int>();
            if (x < lo || x > hi) {
                throw py::value_error(key + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                      "], got " + std::to_string(x));
            }
            return x;
        };
        if (key == "rope_scaling_type") {
            p.rope_scaling_type = (enum llama_rope_scaling_type) enum_in(LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED, LLAMA_ROPE_SCALING_TYPE_MAX_VALUE);
        } else if (key == "pooling_type") {
            p.pooling_type = (enum llama_pooling_type) enum_in(LLAMA_POOLING_TYPE_UNSPECIFIED, LLAMA_POOLING_TYPE_RANK);
        } else if (key == "attention_type") {
            p.attention_type = (enum llama_attention_type) enum_in(LLAMA_ATTENTION_TYPE_UNSPECIFIED, LLAMA_ATTENTION_TYPE_NON_CAUSAL);
        } else if (key == "rope_freq_base") { p.rope_freq_base = v.cast<float>();
        } else if (key == "rope_freq_scale") { p.rope_freq_scale = v.cast<float>();
        } else if (key == "yarn_ext_factor") { p.yarn_ext_factor = v.cast<float>();
        } else if (key == "yarn_attn_factor") { p.yarn_attn_factor = v.cast<float>();
        } else if (key == "yarn_beta_fast") { p.yarn_beta_fast = v.cast<float>();
        } else if (key == "yarn_beta_slow") { p.yarn_beta_slow = v.cast<float>();
        } else if (key == "yarn_orig_ctx") { p.yarn_orig_ctx = v.cast<uint32_t>();
        } else if (key == "embeddings") { p.embeddings = v.cast<bool>();
        } else if (key == "offload_kqv") { p.offload_kqv = v.cast<bool>();
        } else if (key == "no_perf") { p.no_perf = v.cast<bool>();
        } else if (key == "op_offload") { p.op_offload = v.cast<bool>();
        } else if (key == "swa_full") { p.swa_full = v.cast<bool>();
        } else {
            throw py::value_error("unknown context option '" + key + "'");
        }
    }
}

}  // namespace pybonsai
