// pybonsai: the `prism.hadamard` fold (prism_fold.h): reading and checking the metadata, the
// model-owned sign vectors and Hadamard matrix, and the graph pieces that apply the transform.
#include "prism_fold.h"

#include "llama-impl.h"
#include "llama-model.h"

#include "ggml-backend.h"

#include <cmath>
#include <cstring>
#include <set>
#include <stdexcept>
#include <string>

namespace {

const char * const kPrefix = "prism.hadamard.";

[[noreturn]] void fail(const std::string & what) {
    throw std::runtime_error("invalid Bonsai 2 rotation metadata (prism.hadamard.*): " + what);
}

std::string key(const char * name) {
    return std::string(kPrefix) + name;
}

int64_t find(const gguf_context * meta, const char * name, bool required) {
    const int64_t id = gguf_find_key(meta, key(name).c_str());
    if (id < 0 && required) {
        fail(key(name) + " is missing");
    }
    return id;
}

bool is_int_type(gguf_type t) {
    switch (t) {
        case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16:
        case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64:
            return true;
        default:
            return false;
    }
}

int64_t int_at(gguf_type t, const void * data, size_t i) {
    switch (t) {
        case GGUF_TYPE_UINT8:  return ((const uint8_t  *) data)[i];
        case GGUF_TYPE_INT8:   return ((const int8_t   *) data)[i];
        case GGUF_TYPE_UINT16: return ((const uint16_t *) data)[i];
        case GGUF_TYPE_INT16:  return ((const int16_t  *) data)[i];
        case GGUF_TYPE_UINT32: return ((const uint32_t *) data)[i];
        case GGUF_TYPE_INT32:  return ((const int32_t  *) data)[i];
        case GGUF_TYPE_UINT64: return (int64_t) std::min<uint64_t>(((const uint64_t *) data)[i], INT64_MAX);
        case GGUF_TYPE_INT64:  return ((const int64_t  *) data)[i];
        default:               return 0;
    }
}

int64_t get_int(const gguf_context * meta, const char * name) {
    const int64_t id = find(meta, name, true);
    const gguf_type t = gguf_get_kv_type(meta, id);
    if (!is_int_type(t)) {
        fail(key(name) + " must be an integer");
    }
    return int_at(t, gguf_get_val_data(meta, id), 0);
}

std::string get_str(const gguf_context * meta, const char * name) {
    const int64_t id = find(meta, name, true);
    if (gguf_get_kv_type(meta, id) != GGUF_TYPE_STRING) {
        fail(key(name) + " must be a string");
    }
    return gguf_get_val_str(meta, id);
}

std::vector<int64_t> get_ints(const gguf_context * meta, const char * name) {
    const int64_t id = find(meta, name, true);
    if (gguf_get_kv_type(meta, id) != GGUF_TYPE_ARRAY || !is_int_type(gguf_get_arr_type(meta, id))) {
        fail(key(name) + " must be an array of integers");
    }
    const size_t n = gguf_get_arr_n(meta, id);
    std::vector<int64_t> out(n);
    const void * data = n ? gguf_get_arr_data(meta, id) : nullptr;
    for (size_t i = 0; i < n; i++) {
        out[i] = int_at(gguf_get_arr_type(meta, id), data, i);
    }
    return out;
}

std::vector<std::string> get_strs(const gguf_context * meta, const char * name, bool required) {
    const int64_t id = find(meta, name, required);
    std::vector<std::string> out;
    if (id < 0) {
        return out;
    }
    if (gguf_get_kv_type(meta, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(meta, id) != GGUF_TYPE_STRING) {
        fail(key(name) + " must be an array of strings");
    }
    for (size_t i = 0; i < gguf_get_arr_n(meta, id); i++) {
        out.emplace_back(gguf_get_arr_str(meta, id, i));
    }
    return out;
}

// the fork's list of weights that may be folded: output.weight and these blk.N.<kind>.weight
bool foldable(const std::string & name, bool & expert) {
    static const std::set<std::string> kinds = {
        "attn_q", "attn_k", "attn_v", "attn_qkv", "attn_gate", "attn_output", "ffn_gate", "ffn_up",
        "ffn_down", "ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp", "ssm_out"};
    static const std::set<std::string> expert_kinds = {
        "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps", "ffn_gate_up_exps"};
    expert = false;
    if (name == "output.weight") {
        return true;
    }
    const std::string suffix = ".weight";
    if (name.rfind("blk.", 0) != 0 || name.size() <= suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
        return false;
    }
    const size_t dot = name.find('.', 4);
    if (dot == std::string::npos || dot == 4 || name.find_first_not_of("0123456789", 4) != dot) {
        return false;
    }
    const std::string kind = name.substr(dot + 1, name.size() - suffix.size() - dot - 1);
    expert = expert_kinds.count(kind) != 0;
    return kinds.count(kind) != 0 || expert;
}

bool ends_with(const std::string & s, const char * tail) {
    const size_t n = strlen(tail);
    return s.size() >= n && s.compare(s.size() - n, n, tail) == 0;
}

// H and the sign vectors in a CPU buffer owned by the fold
void allocate(pybonsai_prism_fold & fold, const std::map<int64_t, std::vector<float>> & sign_values) {
    ggml_init_params params = {
        /* .mem_size   = */ (sign_values.size() + 1) * ggml_tensor_overhead(),
        /* .mem_buffer = */ nullptr,
        /* .no_alloc   = */ true,
    };
    fold.ctx.reset(ggml_init(params));
    const int64_t b = fold.block;
    fold.hadamard = ggml_new_tensor_2d(fold.ctx.get(), GGML_TYPE_F32, b, b);
    ggml_set_name(fold.hadamard, "pybonsai.prism.hadamard");
    for (const auto & [width, _] : sign_values) {
        ggml_tensor * t = ggml_new_tensor_1d(fold.ctx.get(), GGML_TYPE_F32, width);
        ggml_format_name(t, "pybonsai.prism.signs.%lld", (long long) width);
        fold.signs[width] = t;
    }
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (cpu == nullptr) {
        throw std::runtime_error("Bonsai 2 rotation: no CPU backend");
    }
    fold.buf.reset(ggml_backend_alloc_ctx_tensors_from_buft(fold.ctx.get(), ggml_backend_dev_buffer_type(cpu)));
    if (!fold.buf) {
        throw std::runtime_error("Bonsai 2 rotation: cannot allocate the Hadamard matrix and sign vectors");
    }
    // H[r][c] = (-1)^popcount(r & c) / sqrt(b): what the FWHT computes; read by backends without one
    std::vector<float> h((size_t) (b * b));
    const float scale = 1.0f / std::sqrt((float) b);
    for (int64_t r = 0; r < b; r++) {
        for (int64_t c = 0; c < b; c++) {
            h[(size_t) (r * b + c)] = (__builtin_popcountll((unsigned long long) (r & c)) & 1) ? -scale : scale;
        }
    }
    ggml_backend_tensor_set(fold.hadamard, h.data(), 0, ggml_nbytes(fold.hadamard));
    for (const auto & [width, values] : sign_values) {
        ggml_backend_tensor_set(fold.signs[width], values.data(), 0, ggml_nbytes(fold.signs[width]));
    }
}

ggml_tensor * hadamard(ggml_context * ctx, const pybonsai_prism_fold & fold, ggml_tensor * x) {
    return llama_mul_mat_hadamard(ctx, x, fold.hadamard);
}

ggml_tensor * times_signs(ggml_context * ctx, const pybonsai_prism_fold & fold, ggml_tensor * x) {
    return fold.explicit_signs ? ggml_mul(ctx, x, fold.signs.at(x->ne[0])) : x;
}

}  // namespace

std::shared_ptr<pybonsai_prism_fold> pybonsai_prism_load(const gguf_context * meta, const llama_model & model) {
    bool any = false;
    for (int64_t i = 0; i < gguf_get_n_kv(meta); i++) {
        any = any || strncmp(gguf_get_key(meta, i), kPrefix, strlen(kPrefix)) == 0;
    }
    if (!any) {
        return nullptr;
    }
    auto fold = std::make_shared<pybonsai_prism_fold>();

    const int64_t version = get_int(meta, "version");
    if (version != 1) {
        fail("version " + std::to_string(version) + " is not supported (pybonsai reads version 1)");
    }
    if (get_str(meta, "transform") != "normalized-sylvester-walsh-hadamard") {
        fail("transform '" + get_str(meta, "transform") + "' is unknown (expected normalized-sylvester-walsh-hadamard)");
    }
    if (get_str(meta, "axis") != "input-last-dimension") {
        fail("axis '" + get_str(meta, "axis") + "' is unknown (expected input-last-dimension)");
    }
    const std::string mode = get_str(meta, "sign_mode");
    if (mode != "identity" && mode != "explicit") {
        fail("sign_mode '" + mode + "' is unknown (expected identity or explicit)");
    }
    fold->explicit_signs = mode == "explicit";
    fold->block = get_int(meta, "block_size");
    const int64_t b = fold->block;
    if (b < 2 || b > 8192 || (b & (b - 1)) != 0) {
        fail("block_size " + std::to_string(b) + " is not a power of two between 2 and 8192");
    }

    std::map<int64_t, std::vector<float>> sign_values;
    if (fold->explicit_signs) {
        const std::vector<int64_t> widths = get_ints(meta, "sign_widths");
        const std::vector<int64_t> values = get_ints(meta, "sign_values");
        if (widths.empty()) {
            fail("sign_mode is explicit but sign_widths is empty");
        }
        size_t at = 0;
        for (int64_t w : widths) {
            if (w <= 0 || w % b != 0) {
                fail("sign width " + std::to_string(w) + " is not a positive multiple of block_size " + std::to_string(b));
            }
            if (sign_values.count(w)) {
                fail("sign width " + std::to_string(w) + " appears twice");
            }
            if (at + (size_t) w > values.size()) {
                fail("sign_values has " + std::to_string(values.size()) + " values, fewer than the widths add up to");
            }
            std::vector<float> & s = sign_values[w];
            for (int64_t j = 0; j < w; j++, at++) {
                if (values[at] != 1 && values[at] != -1) {
                    fail("sign_values[" + std::to_string(at) + "] is " + std::to_string(values[at]) + ", not +1 or -1");
                }
                s.push_back((float) values[at]);
            }
        }
        if (at != values.size()) {
            fail("sign_values has " + std::to_string(values.size()) + " values, more than the widths add up to (" +
                 std::to_string(at) + ")");
        }
    }
    auto check_width = [&](const std::string & name, int64_t width) {
        if (width % b != 0) {
            fail(name + ": input width " + std::to_string(width) + " is not a multiple of block_size " + std::to_string(b));
        }
        if (fold->explicit_signs && !sign_values.count(width)) {
            fail(name + ": no sign vector for width " + std::to_string(width));
        }
    };

    const int64_t grouped_id = find(meta, "gdn_v_grouped", false);
    bool grouped = false;
    if (grouped_id >= 0) {
        if (gguf_get_kv_type(meta, grouped_id) != GGUF_TYPE_BOOL) {
            fail(key("gdn_v_grouped") + " must be a bool");
        }
        grouped = gguf_get_val_bool(meta, grouped_id);
    }

    const std::vector<std::string> names = get_strs(meta, "weight_names", true);
    if (names.empty()) {
        fail("weight_names is empty");
    }
    for (const std::string & name : names) {
        bool expert = false;
        if (!foldable(name, expert)) {
            fail("weight_names lists '" + name + "', which is not a weight that can be folded");
        }
        if (expert) {
            fail("weight_names lists the expert weight '" + name + "': folded expert weights are not supported");
        }
        const ggml_tensor * w = model.get_tensor(name.c_str());
        if (w == nullptr) {
            fail("weight_names lists '" + name + "', which the model does not have");
        }
        if (fold->folded.count(w)) {
            fail("weight_names lists '" + name + "' twice");
        }
        check_width(name, w->ne[0]);
        const bool regroup = grouped && ends_with(name, ".ssm_out.weight");
        if (regroup) {
            const auto & hp = model.hparams;
            if (hp.ssm_n_group == 0 || hp.ssm_dt_rank == 0 || hp.ssm_dt_rank % hp.ssm_n_group != 0 ||
                w->ne[0] % hp.ssm_dt_rank != 0) {
                fail("gdn_v_grouped is set but the model's value heads (" + std::to_string(hp.ssm_dt_rank) +
                     ") are not a multiple of its key heads (" + std::to_string(hp.ssm_n_group) + ")");
            }
            fold->gdn_key_heads      = hp.ssm_n_group;
            fold->gdn_values_per_key = hp.ssm_dt_rank / hp.ssm_n_group;
            fold->gdn_head_dim       = w->ne[0] / hp.ssm_dt_rank;
        }
        fold->folded[w] = regroup;
    }

    for (const std::string & name : get_strs(meta, "inverse_weight_names", false)) {
        if (name != "token_embd.weight") {
            fail("inverse_weight_names lists '" + name + "'; only token_embd.weight can be an inverse table");
        }
        if (fold->inverse_embd != nullptr) {
            fail("inverse_weight_names lists token_embd.weight twice");
        }
        fold->inverse_embd = model.get_tensor(name.c_str());
        if (fold->inverse_embd == nullptr) {
            fail("inverse_weight_names lists token_embd.weight, which the model does not have");
        }
        check_width(name, fold->inverse_embd->ne[0]);
        if (model.output == nullptr || strcmp(ggml_get_name(model.output), "token_embd.weight") == 0) {
            fail("the output layer shares token_embd.weight's latent rows (a tied output, version 2): not supported");
        }
    }
    allocate(*fold, sign_values);
    return fold;
}

ggml_tensor * pybonsai_prism_input(ggml_context * ctx, const pybonsai_prism_fold & fold, const ggml_tensor * w,
                                   ggml_tensor * cur, pybonsai_prism_cache & cache) {
    const auto it = fold.folded.find(w);
    if (it == fold.folded.end()) {
        return cur;
    }
    const bool regroup = it->second;
    for (const auto & [input, grouped, rotated] : cache) {
        if (input == cur && grouped == regroup) {
            return rotated;
        }
    }
    ggml_tensor * x = cur;
    if (regroup) {  // tiled value heads [hd, K, r] -> grouped [hd, r, K]
        const int64_t rows = ggml_nelements(x) / x->ne[0];
        x = ggml_is_contiguous(x) ? x : ggml_cont(ctx, x);
        x = ggml_reshape_4d(ctx, x, fold.gdn_head_dim, fold.gdn_key_heads, fold.gdn_values_per_key, rows);
        x = ggml_cont(ctx, ggml_permute(ctx, x, 0, 2, 1, 3));
        x = ggml_reshape_4d(ctx, x, cur->ne[0], cur->ne[1], cur->ne[2], cur->ne[3]);
    }
    x = hadamard(ctx, fold, times_signs(ctx, fold, x));
    cache.emplace_back(cur, regroup, x);
    return x;
}

ggml_tensor * pybonsai_prism_embd_rows(ggml_context * ctx, const pybonsai_prism_fold & fold,
                                       const ggml_tensor * tok_embd, ggml_tensor * rows) {
    if (fold.inverse_embd == nullptr || tok_embd != fold.inverse_embd) {
        return rows;
    }
    return times_signs(ctx, fold, hadamard(ctx, fold, rows));
}
