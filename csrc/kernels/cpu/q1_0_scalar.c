// pybonsai Q1_0 kernels: weight repacking and the portable scalar path (reference for tests).
#include "q1_0_kernels.h"

#include <math.h>
#include <string.h>

static float q1k_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t) (h & 0x8000u) << 16;
    uint32_t exp  = (h >> 10) & 0x1f;
    uint32_t man  = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal: renormalize
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400u));
            bits = sign | ((uint32_t) (112 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

// bits 0, 4, 8, ..., 28 of s -> bits 0..7 of a byte
static inline uint32_t q1k_gather_stride4(uint32_t s) {
    uint32_t x = s & 0x11111111u;
    x          = (x | (x >> 3)) & 0x03030303u;
    x          = (x | (x >> 6)) & 0x000f000fu;
    return (x | (x >> 12)) & 0xffu;
}

void q1k_repack(const void * src, void * dst, int64_t nrows, int64_t K) {
    const int64_t nb     = K / Q1K_QK;
    const int64_t groups = (nrows + Q1K_ROWS - 1) / Q1K_ROWS;
    const uint8_t * s    = (const uint8_t *) src;
    uint8_t * d          = (uint8_t *) dst;
    for (int64_t g = 0; g < groups; g++) {
        uint8_t *  gbits  = d + (size_t) g * nb * Q1K_GROUP_BLOCK_BYTES;
        uint16_t * gscale = (uint16_t *) (gbits + (size_t) nb * 256);
        const int  nr     = nrows - g * Q1K_ROWS < Q1K_ROWS ? (int) (nrows - g * Q1K_ROWS) : Q1K_ROWS;
        if (nr < Q1K_ROWS) {
            memset(gbits, 0, (size_t) nb * Q1K_GROUP_BLOCK_BYTES);  // padding rows: zero scale and bits
        }
        for (int64_t b = 0; b < nb; b++) {
            uint8_t * out = gbits + b * 256;
            for (int r = 0; r < nr; r++) {
                const uint8_t * blk = s + ((size_t) (g * Q1K_ROWS + r) * nb + b) * Q1K_BLOCK_BYTES;
                memcpy(&gscale[b * Q1K_ROWS + r], blk, 2);
                for (int c = 0; c < 4; c++) {
                    // source bit k of w is weight 32c + k = 4p + j; it goes to bit p of byte 4r + j
                    uint32_t w;
                    memcpy(&w, blk + 2 + 4 * c, 4);
                    const uint32_t v = q1k_gather_stride4(w) | (q1k_gather_stride4(w >> 1) << 8) |
                                       (q1k_gather_stride4(w >> 2) << 16) | (q1k_gather_stride4(w >> 3) << 24);
                    const uint8_t le[4] = { (uint8_t) v, (uint8_t) (v >> 8), (uint8_t) (v >> 16), (uint8_t) (v >> 24) };
                    memcpy(out + c * 64 + 4 * r, le, 4);
                }
            }
        }
    }
}

static void quant_scalar(const float * x, void * dst, int64_t K, int64_t b0, int64_t b1) {
    const int64_t nb = K / Q1K_QK;
    int8_t * q       = (int8_t *) dst;
    float * c1       = (float *) (q + nb * Q1K_QK);
    float * corr     = c1 + nb * 4;
    for (int64_t b = b0; b < b1; b++) {
        float cb = 0.0f;
        for (int c = 0; c < 4; c++) {
            const float * xs = x + b * Q1K_QK + 32 * c;
            float amax       = 0.0f;
            for (int i = 0; i < 32; i++) {
                const float a = fabsf(xs[i]);
                amax          = a > amax ? a : amax;
            }
            const float d  = q1k_fp16_round(amax / 127.0f);
            const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
            int sum        = 0;
            for (int i = 0; i < 32; i++) {
                int v = (int) nearbyintf(xs[i] * id);
                v     = v > 127 ? 127 : (v < -127 ? -127 : v);
                q[b * Q1K_QK + 32 * c + i] = (int8_t) v;
                sum += v;
            }
            c1[b * 4 + c] = 2.0f * d;
            cb += d * (float) sum;
        }
        corr[b] = cb;
    }
}

static void gemm_scalar(const void * w, int64_t K, int64_t nrows, int64_t g0, int64_t g1,
                        const void * act, size_t act_stride, int64_t ntok, float * dst, size_t dst_stride) {
    const int64_t nb = K / Q1K_QK;
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *  gbits  = (const uint8_t *) w + (size_t) g * nb * Q1K_GROUP_BLOCK_BYTES;
        const uint16_t * gscale = (const uint16_t *) (gbits + (size_t) nb * 256);
        for (int64_t t = 0; t < ntok; t++) {
            const int8_t * q    = (const int8_t *) ((const uint8_t *) act + t * act_stride);
            const float *  c1   = (const float *) (q + nb * Q1K_QK);
            const float *  corr = c1 + nb * 4;
            float acc[Q1K_ROWS] = { 0 };
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t * bits = gbits + b * 256;
                const int8_t *  qb   = q + b * Q1K_QK;
                for (int r = 0; r < Q1K_ROWS; r++) {
                    float blk = 0.0f;
                    for (int c = 0; c < 4; c++) {
                        int s1 = 0;
                        for (int j = 0; j < 4; j++) {
                            const unsigned byte = bits[c * 64 + 4 * r + j];
                            for (int p = 0; p < 8; p++) {
                                s1 += ((byte >> p) & 1) ? qb[32 * c + 4 * p + j] : 0;
                            }
                        }
                        blk += c1[b * 4 + c] * (float) s1;
                    }
                    const float dw = q1k_half_to_float(gscale[b * Q1K_ROWS + r]);
                    acc[r] += dw * (blk - corr[b]);
                }
            }
            for (int r = 0; r < Q1K_ROWS; r++) {
                const int64_t row = g * Q1K_ROWS + r;
                if (row < nrows) {
                    dst[t * dst_stride + row] = acc[r];
                }
            }
        }
    }
}

const q1k_kernel * q1k_kernel_scalar(void) {
    static const q1k_kernel k = { "scalar", quant_scalar, gemm_scalar, NULL, NULL, NULL };
    return &k;
}
