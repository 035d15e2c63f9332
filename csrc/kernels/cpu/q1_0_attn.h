// pybonsai: decode attention over an f16 KV cache (the FLASH_ATTN_EXT of a few query tokens).
//
// Upstream's CPU flash attention runs every query head on its own: per KV cell one f16 dot
// product, one expf and one f16 multiply-add into an f16 accumulator. At a depth of 1,000 cells
// that is about half of a Bonsai-8B decode token (benchmarks/op_profile.py). Here the query heads
// that share a KV head (GQA) run together, so each K and V row is read and converted once for all
// of them; scores go through an online softmax 8 cells at a time with a vector exp, and the
// output accumulates in f32. Masked cells (-inf) are skipped, as upstream does.
//
// Work item w of n_q * n_head_kv: token w / n_head_kv, KV head g = w % n_head_kv, query heads
// g*r .. g*r + r-1 (r = n_head / n_head_kv, ggml's broadcast). Items write disjoint rows of dst,
// so threads take contiguous ranges of items with no synchronization.
// Pure C interface, no ggml headers (tests build it alone); the ggml glue is q1_0_attn_glue.cpp.
// (In csrc/kernels/cpu with a q1_0_ name because that is what vendor/patches/0001 compiles.)
#ifndef PYBONSAI_Q1_0_ATTN_H
#define PYBONSAI_Q1_0_ATTN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define Q1K_ATTN_MAX_D 512  // head size limit (a multiple of 8)

typedef struct {
    int64_t D;                     // head size of K and V
    int64_t n_kv, n_q, n_head, n_head_kv;
    float   scale;                 // applied to q.k
    const float *    q;            // f32; element d of token i, head h at q + (i*q_tok + h*q_head)/4 + d
    size_t           q_tok, q_head;                      // strides in bytes
    const uint16_t * k;            // f16 rows: cell j, KV head g at k + (j*k_row + g*k_head)/2
    size_t           k_row, k_head;
    const uint16_t * v;            // f16, as k
    size_t           v_row, v_head;
    const uint16_t * mask;         // f16, added to the scores: row of token i at mask + i*mask_row/2; NULL: none
    size_t           mask_row;
    float *          dst;          // f32 output row of token i, head h at dst + (i*dst_tok + h*dst_head)/4
    size_t           dst_tok, dst_head;
    // NULL, or the n_kv cells in the order their scores are accumulated (a permutation of
    // 0..n_kv-1). The sums depend on that order; llama.cpp's KV cache passes its cells sorted by
    // position where a sequence's cells are not in position order (a reused prefix left cells
    // behind newer ones), so that a token's attention is computed alike wherever its cells lie.
    const int32_t *  order;
} q1k_attn_args;

// What llama.cpp's KV cache hangs on the f16 KQ mask it fills (ggml_tensor.extra, through
// csrc/llama/kv_cell_order.cpp and vendor/patches/0012) where a sequence's cells are not in
// position order: the glue passes `order` on as q1k_attn_args.order.
#define Q1K_CELL_ORDER_MAGIC 0x7079626f6e736169ull  // "pybonsai"
typedef struct {
    uint64_t        magic;  // Q1K_CELL_ORDER_MAGIC
    int64_t         n_kv;   // the mask's row length (the cells in view)
    const int32_t * order;  // cells 0..n_kv-1, sorted by position (empty cells last)
} q1k_cell_order;

// The fast path can run here: x86-64 with AVX2, FMA and F16C, and PYBONSAI_ATTN is not "upstream".
int q1k_attn_available(void);
// Work items [w0, w1) (see above). Needs q1k_attn_available(), D % 8 == 0, D <= Q1K_ATTN_MAX_D,
// n_head % n_head_kv == 0.
void q1k_attn_decode(const q1k_attn_args * a, int64_t w0, int64_t w1);
// The same attention in plain C with double sums and a two-pass softmax: the tests' reference.
void q1k_attn_reference(const q1k_attn_args * a);
// The two instances q1k_attn_decode chooses from (AVX-512 when usable and D % 16 == 0), for tests;
// PYBONSAI_ATTN=avx2 keeps the AVX2 one.
int  q1k_attn_avx512_usable(void);
void q1k_attn_decode_avx2(const q1k_attn_args * a, int64_t w0, int64_t w1);
void q1k_attn_decode_avx512(const q1k_attn_args * a, int64_t w0, int64_t w1);

#ifdef __cplusplus
}
#endif

#endif
