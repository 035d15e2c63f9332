// pybonsai Q2_0 CPU kernels: a Q2_0 matrix runs on the Q1_0 kernels (q1_0_kernels.h) unchanged,
// as a "virtual" Q1_0 matrix of twice the columns.
//
// Q2_0 (upstream block_q2_0): per 64 weights an fp16 scale d and 16 bytes of 2-bit codes, weight
// j of a block has code c = (qs[j/4] >> 2*(j%4)) & 3 and value (c - 1)*d. Writing c = 2h + l
// with bit planes h and l, a block's dot product with activations q (int8, scale da per 32
// columns, as Q1_0's) is
//     d * sum_{s=0,1} da_s * (2*S_h,s + S_l,s - sum_s q)
// where S_h,s / S_l,s are the sums of q over the set bits of a plane in 32-column half s: exactly
// the S1 of the Q1_0 kernels. So every Q2_0 block becomes one virtual Q1_0 block of 128 bits
// with the Q2_0 block's scale:
//     virtual bits   0.. 31 = h of weights  0..31     (sub-block c = 0)
//                   32.. 63 = h of weights 32..63     (c = 1)
//                   64.. 95 = l of weights  0..31     (c = 2)
//                   96..127 = l of weights 32..63     (c = 3)
// and a token's activation record is the Q1_0 record of a virtual token of 2K columns, each
// 64-column block's int8 values written twice (for the h and the l plane), with
//     c1 = { 2*da_0, 2*da_1, da_0, da_1 }   (the Q1_0 kernels weigh S1_c by c1_c)
//     corr = da_0*sum_0 q + da_1*sum_1 q    (what Q1_0's corr is for a block whose 3rd and 4th
//                                           sub-blocks are zero)
// so that the Q1_0 formula dw * (sum_c c1_c*S1_c - corr) is the Q2_0 block's dot product. The
// packed weights are q1k_repack's layout for the virtual matrix (nrows x 2K): per 16-row group
// and 64 real columns 256 bits bytes and 16 fp16 scales, 2.25 bits per weight as in the GGUF,
// and every Q1_0 path (scalar, AVX2 and AVX-512, multiply and table-lookup, their relayouts,
// their bit-identity) serves Q2_0 with K' = 2K. Real block b (64 columns) = virtual block b.
// Requires K % 128 == 0 (all Bonsai shapes; other shapes stay on upstream's kernels).
#ifndef PYBONSAI_Q2_0_KERNELS_H
#define PYBONSAI_Q2_0_KERNELS_H

#include "q1_0_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define Q2K_QK 64
#define Q2K_BLOCK_BYTES 18 /* sizeof(block_q2_0) */

/* columns of the virtual Q1_0 matrix that a Q2_0 matrix of K columns runs as */
static inline int64_t q2k_virtual_k(int64_t K) {
    return 2 * K;
}

/* bytes of one repacked Q2_0 tensor (rows padded up to a multiple of Q1K_ROWS) */
static inline size_t q2k_packed_size(int64_t nrows, int64_t K) {
    return q1k_packed_size(nrows, q2k_virtual_k(K));
}

/* src: nrows rows of K/64 Q2_0 blocks -> dst (q2k_packed_size bytes, q1k_repack's layout of the
 * virtual matrix; a kernel's relayout then takes (dst, nrows, q2k_virtual_k(K))) */
void q2k_repack(const void * src, void * dst, int64_t nrows, int64_t K);

/* PrismML's ternary types of 128 weights per fp16 scale (PQ2_0, ggml type 142; PTQ1_0, 143) hold a
 * subset of Q2_0's values ({-d, 0, +d}): a row of them becomes K/64 Q2_0 blocks (each block of 128 ->
 * two Q2_0 blocks with its scale) and runs on the Q2_0 path above (2.25 bits per weight in memory,
 * where the files hold 2.125 and 1.75). q2k_repack_ternary128(type, ...) takes rows of such blocks.
 * (q2_0_prism.c) */
#define Q2K_TYPE_PQ2_0 142
#define Q2K_TYPE_PTQ1_0 143
void q2k_repack_ternary128(int type, const void * src, void * dst, int64_t nrows, int64_t K);
/* one block of 128 (34 or 28 bytes) -> two Q2_0 blocks (36 bytes) */
void q2k_ternary128_to_q2_0(int type, const uint8_t * src, uint8_t * dst);

/* one token, Q2_0 blocks [b0, b1) of it: x[K] floats -> dst, a q1k_act_stride(q2k_virtual_k(K))
 * record, with kernel k's quantization (so the int8 values and scales are that path's) */
void q2k_quant(const q1k_kernel * k, const float * x, void * dst, int64_t K, int64_t b0, int64_t b1);

/* the Q1_0 kernel that Q2_0 MUL_MATs run on, or NULL (leave Q2_0 to upstream): q1k_select()'s
 * path (PYBONSAI_Q1_KERNEL, so =upstream turns Q2_0 off too) unless PYBONSAI_Q2_KERNEL=upstream
 * (only Q2_0 off); PYBONSAI_Q2_KERNEL=auto or unset: on. Cached. */
const q1k_kernel * q2k_select(void);

/* name of the path Q2_0 runs on, or "upstream" (exported from ggml-cpu) */
const char * pybonsai_q2_0_kernel_name(void);

#ifdef __cplusplus
}
#endif

#endif
