// pybonsai Q1_0 kernels: the ggml-cpu "extra buffer type" that hosts Q1_0 and Q2_0 matrix weights
// in our packed layout (repacked in set_tensor at load time) and runs their MUL_MAT with our
// kernels. A Q2_0 matrix of K columns is packed and run as a virtual Q1_0 matrix of 2K columns
// (q2_0_kernels.h): only its repack and its activation quantization differ.
//
// llama.cpp places a weight in this buffer type only when supports_op() accepts the op the
// weight is used by: MUL_MAT of a 2-D Q1_0 (or Q2_0, K % 128 == 0; or PrismML's PQ2_0 / PTQ1_0,
// which are repacked as Q2_0: q2_0_prism.c) matrix with F32 activations.
// token_embd (used by GET_ROWS) therefore stays in the plain CPU buffer; output.weight (MUL_MAT)
// comes here.
//
// MUL_MAT: every thread quantizes a share of the activation blocks into the work buffer (plus
// their lookup tables when the table path runs), a barrier, then each thread runs the kernel
// over its contiguous share of 16-row groups, in steps of ~1 ms of work between which it checks
// whether the graph is being aborted (q1_0_abort.h): a cancel stops a long prefill mid-node.
// Registered from ggml-cpu.cpp (vendor/patches/0001-...) when PYBONSAI_CPU_KERNELS is defined.
#include "q1_0_abort.h"
#include "q1_0_kernels.h"
#include "q1_0_op_profile.h"
#include "q2_0_kernels.h"

#include "ggml-backend-impl.h"
#include "ggml-cpu-impl.h"
#include "ggml-cpu.h"
#include "ggml-impl.h"
#include "traits.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#    include <sys/mman.h>
#endif

extern "C" ggml_backend_buffer_type_t pybonsai_q1_0_buffer_type(void);

namespace {

// Q2_0 and the types that run as Q2_0 (PrismML's ternary PQ2_0 / PTQ1_0, q2_0_kernels.h)
bool q2_like(ggml_type type) {
    return type == GGML_TYPE_Q2_0 || type == GGML_TYPE_PQ2_0 || type == GGML_TYPE_PTQ1_0;
}

bool q1k_eligible(const ggml_tensor * t) {
    const bool q2 = q2_like(t->type) && q2k_select() != nullptr;  // PYBONSAI_Q2_KERNEL=upstream: not
    return (t->type == GGML_TYPE_Q1_0 || q2) && t->ne[2] == 1 && t->ne[3] == 1 && t->ne[0] % Q1K_QK == 0 &&
           ggml_is_contiguous(t);
}

// the columns our kernels see: a Q2_0 matrix runs as a Q1_0 one of twice the columns
int64_t kernel_k(const ggml_tensor * w) {
    return q2_like(w->type) ? q2k_virtual_k(w->ne[0]) : w->ne[0];
}

// Block x token products per abort check (~1-2 ms of one Zen 3 core): a group of 16 rows of a
// Bonsai-8B attn_q/ffn_gate (32 blocks) over a 512-token ubatch is 16,384, of ffn_down (96 blocks)
// 49,152, split into token steps. A decode (one token) or a small batch never checks inside a node.
constexpr int64_t kAbortCheckWork = 1 << 15;

// the table path (q1_0_kernels.h) runs MUL_MATs of up to q1k_lut_max_tokens() tokens
bool use_lut(int64_t ntok) {
    return ntok <= q1k_lut_max_tokens();
}

size_t record_bytes(int64_t K, int64_t ntok) {
    return q1k_act_stride(K) + (use_lut(ntok) ? q1k_lut_bytes(K) : 0);
}

class q1k_tensor_traits : public ggml::cpu::tensor_traits {
    bool work_size(int /*n_threads*/, const ggml_tensor * op, size_t & size) override {
        if (op->op != GGML_OP_MUL_MAT) {
            return false;
        }
        const int64_t ntok = ggml_nrows(op->src[1]);
        size = (size_t) ntok * record_bytes(kernel_k(op->src[0]), ntok) + 64;
        return true;
    }

    bool compute_forward(ggml_compute_params * params, ggml_tensor * op) override {
        if (op->op != GGML_OP_MUL_MAT) {
            return false;
        }
        const ggml_tensor * src0 = op->src[0];
        const ggml_tensor * src1 = op->src[1];
        const q1k_kernel *  k    = q1k_select();
        GGML_ASSERT(k != nullptr);
        GGML_ASSERT(src1->type == GGML_TYPE_F32 && src1->nb[0] == sizeof(float));
        GGML_ASSERT(op->type == GGML_TYPE_F32 && ggml_is_contiguous(op));

        const int     ith    = params->ith;
        const int     nth    = params->nth;
        const bool    q2     = q2_like(src0->type);
        const int64_t K      = kernel_k(src0);
        const int64_t nrows  = src0->ne[1];
        const int64_t ne11   = src1->ne[1];
        const int64_t ne12   = src1->ne[2];
        const int64_t ntok   = ne11 * ne12 * src1->ne[3];
        const bool    lut    = use_lut(ntok);
        const size_t  stride = record_bytes(K, ntok);

        uint8_t * act = (uint8_t *) (((uintptr_t) params->wdata + 63) & ~(uintptr_t) 63);
        GGML_ASSERT(act + ntok * stride <= (uint8_t *) params->wdata + params->wsize);

        const int64_t t_quant = q1k_profile_on() ? q1k_profile_now() : 0;
        // quantize (and tabulate) ntok x nb blocks, a contiguous share per thread, so a single
        // decode token is split across the threads too
        const int64_t nb    = K / Q1K_QK;
        const int64_t first = ntok * nb * ith / nth;
        const int64_t last  = ntok * nb * (ith + 1) / nth;
        for (int64_t t = first / nb; t < ntok && t * nb < last; t++) {
            const int64_t b0 = first > t * nb ? first - t * nb : 0;
            const int64_t b1 = last < (t + 1) * nb ? last - t * nb : nb;
            const int64_t i1 = t % ne11;
            const int64_t i2 = (t / ne11) % ne12;
            const int64_t i3 = t / (ne11 * ne12);
            const char *  x  = (const char *) src1->data + i1 * src1->nb[1] + i2 * src1->nb[2] + i3 * src1->nb[3];
            if (q2) {
                q2k_quant(k, (const float *) x, act + t * stride, src0->ne[0], b0, b1);
            } else {
                k->quant((const float *) x, act + t * stride, K, b0, b1);
            }
            if (lut) {
                k->lut_build(act + t * stride, K, b0, b1);
            }
        }
        const int64_t t_barrier = t_quant ? q1k_profile_now() : 0;
        ggml_barrier(params->threadpool);
        if (t_quant) {
            const ggml_type type = src0->type;
            q1k_profile_add(ith,
                            type == GGML_TYPE_PQ2_0 ? Q1K_PROFILE_QUANT_PQ2 : type == GGML_TYPE_PTQ1_0 ? Q1K_PROFILE_QUANT_PTQ1 :
                            q2 ? Q1K_PROFILE_QUANT_Q2 : Q1K_PROFILE_QUANT,
                            type == GGML_TYPE_PQ2_0 ? "MUL_MAT(PQ2_0): activation quantization" :
                            type == GGML_TYPE_PTQ1_0 ? "MUL_MAT(PTQ1_0): activation quantization" :
                            q2 ? "MUL_MAT(Q2_0): activation quantization" : "MUL_MAT(Q1_0): activation quantization",
                            t_quant, t_barrier, q1k_profile_now());
        }

        const int64_t groups = (nrows + Q1K_ROWS - 1) / Q1K_ROWS;
        const int64_t g0     = groups * ith / nth;
        const int64_t g1     = groups * (ith + 1) / nth;
        // Steps of groups x tokens: results do not depend on them (each row of each token is
        // computed alone; token steps are multiples of 8, the widest tile, so tiles stay the same).
        const q1k_gemm_fn gemm   = lut ? k->gemm_lut : k->gemm;
        const int64_t     work   = std::max<int64_t>(1, ntok * nb);  // one group
        const int64_t     gstep  = std::max<int64_t>(1, kAbortCheckWork / work);
        const int64_t     tstep  = work <= kAbortCheckWork ? ntok : std::max<int64_t>(8, kAbortCheckWork / nb / 8 * 8);
        const size_t      ostride = op->nb[1] / sizeof(float);
        for (int64_t g = g0; g < g1; g += gstep) {
            for (int64_t t = 0; t < ntok; t += tstep) {
                if ((g > g0 || t > 0) && pybonsai_cpu_abort_requested(params)) {
                    return true;  // the rows left are garbage; the graph returns GGML_STATUS_ABORTED
                }
                gemm(src0->data, K, nrows, g, std::min(g + gstep, g1), act + t * stride, stride,
                     std::min(tstep, ntok - t), (float *) op->data + t * ostride, ostride);
            }
        }
        return true;
    }
};

q1k_tensor_traits g_traits;

ggml_status buffer_init_tensor(ggml_backend_buffer_t /*buffer*/, ggml_tensor * tensor) {
    tensor->extra = q1k_eligible(tensor) ? (void *) &g_traits : nullptr;
    return GGML_STATUS_SUCCESS;
}

void buffer_set_tensor(ggml_backend_buffer_t /*buffer*/, ggml_tensor * tensor, const void * data, size_t offset,
                       size_t size) {
    if (tensor->extra == &g_traits) {
        GGML_ASSERT(offset == 0 && size == ggml_nbytes(tensor));
        if (tensor->type == GGML_TYPE_Q2_0) {
            q2k_repack(data, tensor->data, tensor->ne[1], tensor->ne[0]);
        } else if (tensor->type == GGML_TYPE_PQ2_0 || tensor->type == GGML_TYPE_PTQ1_0) {
            q2k_repack_ternary128((int) tensor->type, data, tensor->data, tensor->ne[1], tensor->ne[0]);
        } else {
            q1k_repack(data, tensor->data, tensor->ne[1], tensor->ne[0]);
        }
        const q1k_kernel * k = q1k_select();
        if (k != nullptr && k->relayout != nullptr) {
            k->relayout(tensor->data, tensor->ne[1], kernel_k(tensor));
        }
    } else {
        memcpy((char *) tensor->data + offset, data, size);
    }
}

const char * buft_get_name(ggml_backend_buffer_type_t /*buft*/) {
    return "CPU_PYBONSAI_Q1";
}

// Decode streams every weight once per token: with 4 KiB pages the hardware prefetchers stop at
// each page boundary and every page costs a TLB walk, so the packed weights ask for transparent
// huge pages (Linux, THP "madvise" or "always"), before set_tensor first touches them.
// PYBONSAI_HUGEPAGES=0 leaves the buffer on normal pages (for measuring the difference).
void advise_huge_pages(void * base, size_t size) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const char * env = getenv("PYBONSAI_HUGEPAGES");
    if (env != nullptr && strcmp(env, "0") == 0) {
        return;
    }
    const uintptr_t huge  = (uintptr_t) 2 << 20;
    const uintptr_t begin = ((uintptr_t) base + huge - 1) & ~(huge - 1);
    const uintptr_t end   = ((uintptr_t) base + size) & ~(huge - 1);
    if (end > begin) {
        madvise((void *) begin, end - begin, MADV_HUGEPAGE);  // advice only: failure changes nothing
    }
#else
    (void) base;
    (void) size;
#endif
}

ggml_backend_buffer_t buft_alloc_buffer(ggml_backend_buffer_type_t buft, size_t size) {
    ggml_backend_buffer_t buffer = ggml_backend_buft_alloc_buffer(ggml_backend_cpu_buffer_type(), size);
    if (buffer == nullptr) {
        return nullptr;
    }
    advise_huge_pages(ggml_backend_buffer_get_base(buffer), size);
    buffer->buft              = buft;
    buffer->iface.init_tensor = buffer_init_tensor;
    buffer->iface.set_tensor  = buffer_set_tensor;
    buffer->iface.get_tensor  = nullptr;
    buffer->iface.cpy_tensor  = nullptr;
    return buffer;
}

size_t buft_get_alignment(ggml_backend_buffer_type_t /*buft*/) {
    return 64;
}

size_t buft_get_alloc_size(ggml_backend_buffer_type_t /*buft*/, const ggml_tensor * tensor) {
    if (q1k_eligible(tensor)) {
        return q1k_packed_size(tensor->ne[1], kernel_k(tensor));
    }
    return ggml_nbytes(tensor);
}

class q1k_extra_buffer_type : public ggml::cpu::extra_buffer_type {
    bool supports_op(ggml_backend_dev_t, const ggml_tensor * op) override {
        if (op->op != GGML_OP_MUL_MAT || !op->src[0]->buffer ||
            op->src[0]->buffer->buft != pybonsai_q1_0_buffer_type() || !q1k_eligible(op->src[0])) {
            return false;
        }
        const ggml_tensor * src1 = op->src[1];
        if (src1->buffer && !ggml_backend_buft_is_host(src1->buffer->buft)) {
            return false;
        }
        return src1->type == GGML_TYPE_F32 && src1->nb[0] == sizeof(float) && op->type == GGML_TYPE_F32;
    }

    ggml::cpu::tensor_traits * get_tensor_traits(const ggml_tensor * op) override {
        if (op->op == GGML_OP_MUL_MAT && op->src[0]->buffer &&
            op->src[0]->buffer->buft == pybonsai_q1_0_buffer_type()) {
            return (ggml::cpu::tensor_traits *) op->src[0]->extra;
        }
        return nullptr;
    }
};

}  // namespace

extern "C" ggml_backend_buffer_type_t pybonsai_q1_0_buffer_type(void) {
    static const q1k_kernel * kernel = q1k_select();
    if (kernel == nullptr) {
        return nullptr;  // PYBONSAI_Q1_KERNEL=upstream: leave Q1_0 to upstream's kernels
    }
    static ggml_backend_buffer_type buft = {
        /* .iface = */ {
            /* .get_name       = */ buft_get_name,
            /* .alloc_buffer   = */ buft_alloc_buffer,
            /* .get_alignment  = */ buft_get_alignment,
            /* .get_max_size   = */ nullptr,
            /* .get_alloc_size = */ buft_get_alloc_size,
            /* .is_host        = */ nullptr,
        },
        /* .device  = */ ggml_backend_reg_dev_get(ggml_backend_cpu_reg(), 0),
        /* .context = */ new q1k_extra_buffer_type(),
    };
    static bool logged = [] {
        GGML_LOG_INFO("pybonsai: Q1_0 CPU kernels: %s, Q2_0: %s\n", kernel->name, pybonsai_q2_0_kernel_name());
        const char * v = getenv("PYBONSAI_Q1_VERBOSE");
        if (v && v[0] && strcmp(v, "0") != 0) {
            fprintf(stderr, "pybonsai: Q1_0 CPU kernels: %s, Q2_0: %s\n", kernel->name, pybonsai_q2_0_kernel_name());
        }
        return true;
    }();
    (void) logged;
    return &buft;
}
