// pybonsai: ggml-cpu's FLASH_ATTN_EXT routed to our attention kernel (q1_0_attn.h) when it fits:
// f32 queries, f16 K and V (the default KV cache), one head size for K and V, a multiple of 8,
// no ALiBi, soft-capping or sinks, an f16 mask shared by all heads, one stream. Any number of
// query tokens: each token's result is computed the same way whether it comes alone (decode) or
// in a batch (prompt), so a token's logits do not depend on how the tokens were batched (with
// upstream's kernels the prompt and a re-evaluated last prompt token took different paths, and a
// greedy continuation could differ between two calls with the same prompt). Called at the top of
// ggml_compute_forward_flash_attn_ext (vendor/patches/0006); false: upstream's code runs.
// PYBONSAI_ATTN=upstream turns it off (q1k_attn_available), =avx2 keeps it off AVX-512.
// A thread runs its share of work items in steps of ~1 ms, checking between them whether the graph
// is being aborted (q1_0_abort.h): a cancel stops a long prefill's attention mid-node.
// Where a sequence's KV cells are out of position order (a reused prefix left cells behind newer
// ones), the KV cache hangs the cells' position order on the mask and the kernel follows it, so a
// token's attention sums run in the same order whether it was computed alone or beside others.
#include "q1_0_abort.h"
#include "q1_0_attn.h"

#include "ggml-cpu-impl.h"
#include "ggml-impl.h"

#include <algorithm>
#include <cstring>

namespace {

// KV cells x head size x query heads per abort check (~1 ms on one Zen 3 core); an item costs
// n_kv * D * (n_head / n_head_kv) of them at most (causally masked cells are skipped). A decode
// token at the Bonsai-8B shape (8 items of 4 heads x 128) checks only from ~2,000 cells of depth
// up, a few times per node.
constexpr int64_t kAbortCheckWork = (int64_t) 1 << 22;

bool fits(const ggml_tensor * dst) {
    const ggml_tensor * q    = dst->src[0];
    const ggml_tensor * k    = dst->src[1];
    const ggml_tensor * v    = dst->src[2];
    const ggml_tensor * mask = dst->src[3];
    float               max_bias, softcap;
    memcpy(&max_bias, (const float *) dst->op_params + 1, sizeof(float));
    memcpy(&softcap, (const float *) dst->op_params + 2, sizeof(float));
    const int32_t prec = dst->op_params[3];
    if (max_bias != 0.0f || softcap != 0.0f || dst->src[4] != nullptr ||
        (prec != GGML_PREC_DEFAULT && prec != GGML_PREC_F32)) {
        return false;
    }
    if (q->type != GGML_TYPE_F32 || k->type != GGML_TYPE_F16 || v->type != GGML_TYPE_F16 ||
        dst->type != GGML_TYPE_F32 || (mask != nullptr && mask->type != GGML_TYPE_F16)) {
        return false;
    }
    const int64_t D = k->ne[0];
    if (q->ne[0] != D || v->ne[0] != D || dst->ne[0] != D || D % 8 != 0 || D > Q1K_ATTN_MAX_D) {
        return false;
    }
    const int64_t n_q = q->ne[1], n_head = q->ne[2], n_head_kv = k->ne[2], n_kv = k->ne[1];
    if (v->ne[2] != n_head_kv || v->ne[1] != n_kv || n_head % n_head_kv != 0 ||
        dst->ne[1] != n_head || dst->ne[2] != n_q) {
        return false;
    }
    if (q->ne[3] != 1 || k->ne[3] != 1 || v->ne[3] != 1 || dst->ne[3] != 1) {
        return false;
    }
    if (q->nb[0] != sizeof(float) || k->nb[0] != 2 || v->nb[0] != 2 || dst->nb[0] != sizeof(float)) {
        return false;
    }
    if (mask != nullptr &&
        (mask->ne[2] != 1 || mask->ne[3] != 1 || mask->ne[0] < n_kv || mask->ne[1] < n_q || mask->nb[0] != 2)) {
        return false;
    }
    return true;
}

}  // namespace

extern "C" bool pybonsai_flash_attn_ext(const ggml_compute_params * params, ggml_tensor * dst) {
    if (params->use_ref || !q1k_attn_available() || !fits(dst)) {
        return false;
    }
    const ggml_tensor * q    = dst->src[0];
    const ggml_tensor * k    = dst->src[1];
    const ggml_tensor * v    = dst->src[2];
    const ggml_tensor * mask = dst->src[3];
    q1k_attn_args       a;
    a.D         = k->ne[0];
    a.n_kv      = k->ne[1];
    a.n_q       = q->ne[1];
    a.n_head    = q->ne[2];
    a.n_head_kv = k->ne[2];
    memcpy(&a.scale, (const float *) dst->op_params + 0, sizeof(float));
    a.q        = (const float *) q->data;
    a.q_tok    = q->nb[1];
    a.q_head   = q->nb[2];
    a.k        = (const uint16_t *) k->data;
    a.k_row    = k->nb[1];
    a.k_head   = k->nb[2];
    a.v        = (const uint16_t *) v->data;
    a.v_row    = v->nb[1];
    a.v_head   = v->nb[2];
    a.mask     = mask ? (const uint16_t *) mask->data : nullptr;
    a.mask_row = mask ? mask->nb[1] : 0;
    a.dst      = (float *) dst->data;
    a.dst_head = dst->nb[1];                   // upstream's permute(0, 2, 1, 3): row (i*n_head + h)
    a.dst_tok  = dst->nb[1] * dst->ne[1];
    a.order    = nullptr;  // the cells in position order, where llama.cpp says they are not (q1_0_attn.h)
    if (mask != nullptr && mask->extra != nullptr) {
        const auto * hung = static_cast<const q1k_cell_order *>(mask->extra);
        if (hung->magic == Q1K_CELL_ORDER_MAGIC && hung->n_kv == a.n_kv) {
            a.order = hung->order;
        }
    }
    const int64_t items = a.n_q * a.n_head_kv;
    const int64_t w0    = items * params->ith / params->nth;
    const int64_t w1    = items * (params->ith + 1) / params->nth;
    // items per step (each item's rows are computed alone: the steps do not change the results)
    const int64_t work  = std::max<int64_t>(1, a.n_kv * a.D * (a.n_head / a.n_head_kv));
    const int64_t step  = std::max<int64_t>(1, kAbortCheckWork / work);
    for (int64_t w = w0; w < w1; w += step) {
        if (w > w0 && pybonsai_cpu_abort_requested(params)) {
            break;  // the rows left are garbage; the graph returns GGML_STATUS_ABORTED
        }
        q1k_attn_decode(&a, w, std::min(w + step, w1));
    }
    return true;
}
