// pybonsai Q1_0 CPU kernels: packed weight layout, activation format and kernel entry points.
// Pure C interface with no ggml dependency, so the kernels can be unit-tested on their own
// (test_q1_0_kernels.c) and linked into every ggml-cpu variant. Q2_0 matrices run on these same
// kernels, unchanged, as virtual Q1_0 matrices of twice the columns (q2_0_kernels.h).
//
// Weights (Q1_0: per 128 weights an fp16 scale d and 128 sign bits, 0 -> -d, 1 -> +d) are
// repacked at load time into groups of Q1K_ROWS = 16 rows. A group holds, for its nb = K/128
// blocks, first all bit planes (nb x 256 bytes) then all scales (nb x 16 fp16 = 32 bytes):
//
//   bits[b*256 + c*64 + 4*r + j], bit p  =  sign of W[row r][128*b + 32*c + 4*p + j]
//   scale[b*16 + r]                       =  d of W[row r], block b
//
// (b block, c 32-column chunk 0..3, r row in the group 0..15, j 0..3, p bit 0..7). Read as
// 32-bit lanes, lane r of a 64-byte chunk holds row r, its 4 bytes four consecutive columns,
// so a 4-byte broadcast of the activation against the expanded bits gives per-row dot
// products in lanes without any horizontal reduction. Rows past the end are zero padded.
// A kernel may keep the chunks in its own order (q1k_kernel.relayout, applied after q1k_repack):
// the AVX2 kernel stores each 64-byte chunk transposed, byte 16*j + r = byte 4*r + j above, so
// that a 32-byte half holds one byte position j of all 16 rows in each 128-bit lane (what its
// vpshufb table lookups index) with no shuffles at run time.
//
// Activations are quantized per token into int8 with one scale per 32 columns, as ggml's Q8_0
// does (d = amax/127 rounded to fp16, q = round(x * 127/amax)), so the int8 values and scales
// equal upstream's (on the tiny model, ~1% logit drift came from the fp16 rounding alone). Stored per
// 32 columns: c1 = 2*d; per 128-block: corr = sum over its 4 sub-blocks of d*sum(q). With S1_c
// the sum of q over set bits in sub-block c, a block contributes
//     dw * (sum_c c1_c * S1_c - corr)      (since sum (2b-1) q = 2*S1 - sum q).
// Token layout (q1k_act_stride bytes): int8 q[nb*128], float c1[nb*4], float corr[nb].
//
// Table-lookup (LUT) decode path, for few tokens at a time: after that record, q1k_lut_bytes(K)
// of tables built from the int8 q. A packed byte holds, for one row, bit p of columns j+4p: its
// low nibble indexes the 16 subset sums of the activations {q[j], q[j+4], q[j+8], q[j+12]}, its
// high nibble those of {q[j+16], ..., q[j+28]} (offsets within a 32-column sub-block). With
// q = 16*qh + ql (ql = q & 15 in 0..15, qh = floor(q/16) in -8..7) each table is stored twice,
// as subset sums of ql (0..60, unsigned bytes) and of qh (-32..28, signed bytes), so every entry
// fits a byte and S1 = sum(TL) + 16*sum(TH) stays exact. Per sub-block s = 4b + c, 256 bytes:
//   [  0, 64) TL of the low-nibble groups,  byte 16j + idx (j = byte position in the row's dword)
//   [ 64,128) TH of the low-nibble groups
//   [128,192) TL of the high-nibble groups
//   [192,256) TH of the high-nibble groups
#ifndef PYBONSAI_Q1_0_KERNELS_H
#define PYBONSAI_Q1_0_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define Q1K_QK 128

#define Q1K_ROWS 16
#define Q1K_BLOCK_BYTES 18                    /* sizeof(block_q1_0) */
#define Q1K_GROUP_BLOCK_BYTES (Q1K_ROWS * 18) /* 256 bits bytes + 32 scale bytes */

/* cache level the SIMD paths' software prefetch of the weight stream targets (expanded where
 * <immintrin.h> is included) */
#ifndef Q1K_PF_HINT
#define Q1K_PF_HINT _MM_HINT_T0
#endif

/* d >= 0 rounded to the nearest fp16 value (ties to even), as a float: the Q8_0 scale */
static inline float q1k_fp16_round(float d) {
    union { float f; uint32_t u; } v;
    v.f = d;
    if (!(d < 65504.0f)) {
        return d < 65520.0f ? 65504.0f : d;  /* d past fp16 range: unreachable for activations */
    }
    if (d >= 6.103515625e-05f) {  /* fp16 normal: keep 10 mantissa bits */
        v.u = (v.u + 0xfffu + ((v.u >> 13) & 1u)) & ~0x1fffu;
        return v.f;
    }
    /* fp16 subnormal: multiples of 2^-24 = the float spacing in [0.5, 1): round there, ties to even */
    return (d + 0.5f) - 0.5f;
}

/* bytes of one repacked tensor: rows padded up to a multiple of Q1K_ROWS */
static inline size_t q1k_packed_size(int64_t nrows, int64_t K) {
    int64_t groups = (nrows + Q1K_ROWS - 1) / Q1K_ROWS;
    return (size_t) groups * (size_t) (K / Q1K_QK) * Q1K_GROUP_BLOCK_BYTES;
}

/* bytes of one quantized activation row (64-byte multiple) */
static inline size_t q1k_act_stride(int64_t K) {
    size_t nb = (size_t) (K / Q1K_QK);
    return (nb * (Q1K_QK + 20) + 63) & ~(size_t) 63;
}

/* bytes of the LUT tables appended to a token's record on the table path */
static inline size_t q1k_lut_bytes(int64_t K) {
    return (size_t) (K / 32) * 256;
}

/* src: nrows rows of K/128 Q1_0 blocks (18 bytes each) -> dst (q1k_packed_size bytes) */
void q1k_repack(const void * src, void * dst, int64_t nrows, int64_t K);

/* one token, blocks [b0, b1) of it: x[K] floats -> dst (a q1k_act_stride(K)-byte record); a
 * token is complete once every block range of it is done, in any order or on any thread */
typedef void (*q1k_quant_fn)(const float * x, void * dst, int64_t K, int64_t b0, int64_t b1);

/* LUT path: tables of blocks [b0, b1) of a quantized token record (its q must be done) */
typedef void (*q1k_lut_fn)(void * act, int64_t K, int64_t b0, int64_t b1);

/* rows of groups [g0, g1) of the packed weights w (nrows rows in all) times ntok quantized
 * tokens (act, act_stride bytes apart) -> dst[t*dst_stride + row] (floats). */
typedef void (*q1k_gemm_fn)(const void * w, int64_t K, int64_t nrows, int64_t g0, int64_t g1,
                            const void * act, size_t act_stride, int64_t ntok,
                            float * dst, size_t dst_stride);

/* in place: the nrows x K packed weights of q1k_repack -> the kernel's own chunk order */
typedef void (*q1k_relayout_fn)(void * w, int64_t nrows, int64_t K);

typedef struct {
    const char *  name;   /* "avx512", "avx2", "scalar" */
    q1k_quant_fn  quant;
    q1k_gemm_fn   gemm;
    /* optional table-lookup path (NULL when absent): act records carry q1k_lut_bytes(K) more
     * bytes, filled by lut_build, and gemm_lut reads them; results equal gemm's bit for bit */
    q1k_lut_fn    lut_build;
    q1k_gemm_fn   gemm_lut;
    /* NULL: gemm and gemm_lut read q1k_repack's layout; else weights go through it after repacking */
    q1k_relayout_fn relayout;
} q1k_kernel;

/* the paths compiled in; NULL entries are absent on this build/architecture */
const q1k_kernel * q1k_kernel_scalar(void);
const q1k_kernel * q1k_kernel_avx2(void);
const q1k_kernel * q1k_kernel_avx512(void);

/* CPU support for a path (runtime cpuid) */
int q1k_cpu_has_avx2(void);
int q1k_cpu_has_avx512(void);
int q1k_cpu_has_avx512vbmi(void);

/* most tokens per MUL_MAT that take the table path of the selected kernel: 0 when it has none
 * or PYBONSAI_Q1_LUT_MAX=0; by default 256 for the AVX2 kernel, Q1K_LUT_MAX_DEFAULT (8) for the
 * AVX-512 one (4 on AMD Zen 5 and later, where its multiply path measured faster from 5 tokens);
 * PYBONSAI_Q1_LUT_MAX=n overrides. Cached. */
int q1k_lut_max_tokens(void);

/* selected path: the best SIMD path the CPU has, or NULL (leave Q1_0 to upstream) when it has
 * none; PYBONSAI_Q1_KERNEL=avx512|avx2|scalar forces one (falls back with a message on stderr
 * when the CPU lacks it); =upstream returns NULL; =auto or unset: the default. Cached. */
const q1k_kernel * q1k_select(void);

/* name of the selected path, or "upstream" when disabled (exported from ggml-cpu) */
const char * pybonsai_q1_0_kernel_name(void);

/* q1k_lut_max_tokens() of the selected path (exported from ggml-cpu) */
int pybonsai_q1_0_lut_max_tokens(void);

#ifdef __cplusplus
}
#endif

#endif
