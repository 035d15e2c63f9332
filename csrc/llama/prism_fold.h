// pybonsai: the `prism.hadamard` fold of PrismML's Bonsai 2 GGUFs (vendor/patches/BONSAI2_FORMAT.md),
// compiled into libllama by vendor/patches/0010 (which defines PYBONSAI_PRISM).
//
// A folded weight W is stored as W_s = H(s * W) row by row (s: the +-1 sign vector of the row's width,
// H: the normalized Sylvester-Walsh-Hadamard transform of each block_size chunk), so its product is
// W_s . H(s * P(x)) with P the GDN value-head regrouping for a folded ssm_out (gdn_v_grouped). An
// inverse table (token_embd) stores latent rows z; the row lookup is followed by s * H(z).
#pragma once

#include "ggml-cpp.h"
#include "ggml.h"
#include "gguf.h"

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <unordered_map>
#include <vector>

struct llama_model;

struct pybonsai_prism_fold {
    int64_t block = 0;
    bool    explicit_signs = false;
    int64_t gdn_head_dim = 0, gdn_key_heads = 0, gdn_values_per_key = 0;  // ssm_out's regrouping
    std::map<int64_t, ggml_tensor *> signs;                        // width -> f32 [width]
    ggml_tensor * hadamard = nullptr;                              // f32 [block, block]
    std::unordered_map<const ggml_tensor *, bool> folded;          // weight -> input regrouped (P)
    const ggml_tensor * inverse_embd = nullptr;                    // token_embd when it stores latent rows
    ggml_context_ptr        ctx;
    ggml_backend_buffer_ptr buf;
};

// rotated activations of one graph: (input, regrouped) -> H(s * P(input)), shared by the weights
// that read the same input (ffn_gate + ffn_up, attn_q + attn_k + attn_v, attn_qkv + attn_gate)
using pybonsai_prism_cache = std::vector<std::tuple<const ggml_tensor *, bool, ggml_tensor *>>;

// The fold a file declares (nullptr when it has no prism.hadamard.* key), checked against the
// model's tensors; throws std::runtime_error naming the problem. Call once the model's tensors exist.
std::shared_ptr<pybonsai_prism_fold> pybonsai_prism_load(const gguf_context * meta, const llama_model & model);

// the input a product with w needs: cur itself, or H(s * P(cur)) when w is folded
ggml_tensor * pybonsai_prism_input(ggml_context * ctx, const pybonsai_prism_fold & fold, const ggml_tensor * w,
                                   ggml_tensor * cur, pybonsai_prism_cache & cache);

// rows looked up in tok_embd, un-rotated (s * H(rows)) when tok_embd is the inverse table
ggml_tensor * pybonsai_prism_embd_rows(ggml_context * ctx, const pybonsai_prism_fold & fold,
                                       const ggml_tensor * tok_embd, ggml_tensor * rows);
