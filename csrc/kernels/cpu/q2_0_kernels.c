// pybonsai Q2_0 kernels: the repack of Q2_0 weights into a virtual Q1_0 matrix of 2K columns, the
// matching activation records, and the switch (layout and formula: q2_0_kernels.h).
#include "q2_0_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
#    define Q2K_EXPORT __attribute__((visibility("default")))
#else
#    define Q2K_EXPORT
#endif

// bits 0, 2, 4, ..., 62 of v -> bits 0..31
static uint32_t q2k_even_bits(uint64_t v) {
    v &= 0x5555555555555555ull;
    v = (v | (v >> 1)) & 0x3333333333333333ull;
    v = (v | (v >> 2)) & 0x0f0f0f0f0f0f0f0full;
    v = (v | (v >> 4)) & 0x00ff00ff00ff00ffull;
    v = (v | (v >> 8)) & 0x0000ffff0000ffffull;
    return (uint32_t) (v | (v >> 16));
}

static void q2k_put_le32(uint8_t * p, uint32_t v) {
    p[0] = (uint8_t) v;
    p[1] = (uint8_t) (v >> 8);
    p[2] = (uint8_t) (v >> 16);
    p[3] = (uint8_t) (v >> 24);
}

static uint64_t q2k_get_le64(const uint8_t * p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

// one Q2_0 block (18 bytes) -> the virtual Q1_0 block (18 bytes): same scale, then the h plane
// of weights 0..63 and the l plane of weights 0..63 as 128 sign bits
static void q2k_block_to_virtual(const uint8_t * src, uint8_t * dst) {
    memcpy(dst, src, 2);
    const uint64_t lo = q2k_get_le64(src + 2);   // weights 0..31: code of weight j at bits 2j, 2j+1
    const uint64_t hi = q2k_get_le64(src + 10);  // weights 32..63
    q2k_put_le32(dst + 2, q2k_even_bits(lo >> 1));
    q2k_put_le32(dst + 6, q2k_even_bits(hi >> 1));
    q2k_put_le32(dst + 10, q2k_even_bits(lo));
    q2k_put_le32(dst + 14, q2k_even_bits(hi));
}

void q2k_repack(const void * src, void * dst, int64_t nrows, int64_t K) {
    const int64_t nb     = K / Q2K_QK;  // Q2_0 blocks per row = virtual Q1_0 blocks per row
    const size_t  rowb   = (size_t) nb * Q2K_BLOCK_BYTES;
    const size_t  groupb = q2k_packed_size(Q1K_ROWS, K);
    uint8_t *     tmp    = (uint8_t *) malloc(rowb * Q1K_ROWS);  // one group's rows as virtual Q1_0
    if (tmp == NULL) {
        abort();
    }
    for (int64_t g = 0; g * Q1K_ROWS < nrows; g++) {
        const int64_t nr = nrows - g * Q1K_ROWS < Q1K_ROWS ? nrows - g * Q1K_ROWS : Q1K_ROWS;
        const uint8_t * s = (const uint8_t *) src + (size_t) g * Q1K_ROWS * rowb;
        for (int64_t i = 0; i < nr * nb; i++) {
            q2k_block_to_virtual(s + i * Q2K_BLOCK_BYTES, tmp + i * Q2K_BLOCK_BYTES);
        }
        q1k_repack(tmp, (uint8_t *) dst + g * groupb, nr, q2k_virtual_k(K));
    }
    free(tmp);
}

// sum of n int8 values
static int q2k_sum(const int8_t * q, int n) {
    int s = 0;
    for (int i = 0; i < n; i++) {
        s += q[i];
    }
    return s;
}

void q2k_quant(const q1k_kernel * k, const float * x, void * dst, int64_t K, int64_t b0, int64_t b1) {
    const int64_t nb = K / Q2K_QK;  // virtual blocks of the record
    int8_t *      q  = (int8_t *) dst;
    float *       c1 = (float *) (q + nb * Q1K_QK);
    float *       cr = c1 + nb * 4;
    // each pair of blocks (128 columns) through the path's own Q1_0 quantization, into a
    // one-block record whose int8 values and scales are then spread over the two virtual blocks
    _Alignas(64) uint8_t rec[(Q1K_QK + 20 + 63) & ~63];
    const int8_t * rq  = (const int8_t *) rec;
    const float *  rc1 = (const float *) (rec + Q1K_QK);
    for (int64_t pair = b0 / 2; 2 * pair < b1; pair++) {
        k->quant(x + pair * Q1K_QK, rec, Q1K_QK, 0, 1);
        for (int64_t b = 2 * pair; b < 2 * pair + 2; b++) {
            if (b < b0 || b >= b1) {
                continue;  // the pair's other block is outside this range
            }
            const int8_t * qb = rq + (b - 2 * pair) * Q2K_QK;
            const float    d0 = 0.5f * rc1[2 * (b - 2 * pair)];  // exact: halving a float
            const float    d1 = 0.5f * rc1[2 * (b - 2 * pair) + 1];
            memcpy(q + b * Q1K_QK, qb, Q2K_QK);           // for the h plane
            memcpy(q + b * Q1K_QK + Q2K_QK, qb, Q2K_QK);  // for the l plane
            c1[b * 4 + 0] = 2.0f * d0;
            c1[b * 4 + 1] = 2.0f * d1;
            c1[b * 4 + 2] = d0;
            c1[b * 4 + 3] = d1;
            const float s0 = d0 * (float) q2k_sum(qb, 32);
            cr[b]          = s0 + d1 * (float) q2k_sum(qb + 32, 32);
        }
    }
}

static const q1k_kernel * q2k_choose(void) {
    const char * env = getenv("PYBONSAI_Q2_KERNEL");
    if (env != NULL && strcmp(env, "upstream") == 0) {
        return NULL;
    }
    if (env != NULL && env[0] != '\0' && strcmp(env, "auto") != 0) {
        fprintf(stderr, "pybonsai: PYBONSAI_Q2_KERNEL=%s is not one of upstream, auto; using auto\n", env);
    }
    return q1k_select();
}

const q1k_kernel * q2k_select(void) {
    static int                chosen = 0;  // benign race: every thread computes the same answer
    static const q1k_kernel * kernel = NULL;
    if (!chosen) {
        kernel = q2k_choose();
        chosen = 1;
    }
    return kernel;
}

Q2K_EXPORT const char * pybonsai_q2_0_kernel_name(void) {
    const q1k_kernel * k = q2k_select();
    return k ? k->name : "upstream";
}
