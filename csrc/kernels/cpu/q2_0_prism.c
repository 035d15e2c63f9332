// pybonsai: PrismML's ternary types PQ2_0 and PTQ1_0 (Bonsai 2) on the Q2_0 path: each block of 128
// weights is rewritten as two Q2_0 blocks with the same scale, then packed by q2k_repack (layouts:
// vendor/patches/BONSAI2_FORMAT.md; why this is exact: q2_0_kernels.h).
#include "q2_0_kernels.h"

#include <stdlib.h>
#include <string.h>

#define PQ2_BYTES 34
#define PTQ1_BYTES 28

// digit n (0 = most significant) of a PTQ1_0 byte: multiplying by 3^n (mod 256) moves digit n to
// the top base-3 place, "* 3 >> 8" reads that place
static int ptq1_digit(uint8_t b, int n) {
    static const uint8_t pow3[5] = { 1, 3, 9, 27, 81 };
    return ((unsigned) (uint8_t) (b * pow3[n]) * 3u) >> 8;
}

void q2k_ternary128_to_q2_0(int type, const uint8_t * src, uint8_t * dst) {
    if (type == Q2K_TYPE_PQ2_0) {  // d, qs[32]: the same 2-bit codes in the same order
        memcpy(dst, src, 2);
        memcpy(dst + 2, src + 2, 16);
        memcpy(dst + 18, src, 2);
        memcpy(dst + 20, src + 18, 16);
        return;
    }
    uint8_t codes[128];
    for (int e = 0; e < 80; e++) {
        codes[e] = (uint8_t) ptq1_digit(src[e % 16], e / 16);
    }
    for (int e = 80; e < 120; e++) {
        codes[e] = (uint8_t) ptq1_digit(src[16 + (e - 80) % 8], (e - 80) / 8);
    }
    for (int e = 120; e < 128; e++) {
        codes[e] = (uint8_t) ptq1_digit(src[24 + (e - 120) % 2], (e - 120) / 2);
    }
    for (int half = 0; half < 2; half++) {
        uint8_t * b = dst + 18 * half;
        memcpy(b, src + 26, 2);  // the scale sits last in a PTQ1_0 block
        for (int j = 0; j < 16; j++) {
            const uint8_t * c = codes + 64 * half + 4 * j;
            b[2 + j] = (uint8_t) (c[0] | (c[1] << 2) | (c[2] << 4) | (c[3] << 6));
        }
    }
}

void q2k_repack_ternary128(int type, const void * src, void * dst, int64_t nrows, int64_t K) {
    const int64_t nb     = K / 128;
    const size_t  sbytes = type == Q2K_TYPE_PQ2_0 ? PQ2_BYTES : PTQ1_BYTES;
    const size_t  groupb = q2k_packed_size(Q1K_ROWS, K);
    uint8_t *     tmp    = (uint8_t *) malloc((size_t) nb * 2 * Q2K_BLOCK_BYTES * Q1K_ROWS);  // one row group as Q2_0
    if (tmp == NULL) {
        abort();
    }
    for (int64_t g = 0; g * Q1K_ROWS < nrows; g++) {
        const int64_t   nr = nrows - g * Q1K_ROWS < Q1K_ROWS ? nrows - g * Q1K_ROWS : Q1K_ROWS;
        const uint8_t * s  = (const uint8_t *) src + (size_t) g * Q1K_ROWS * nb * sbytes;
        for (int64_t i = 0; i < nr * nb; i++) {
            q2k_ternary128_to_q2_0(type, s + i * sbytes, tmp + i * 2 * Q2K_BLOCK_BYTES);
        }
        q2k_repack(tmp, (uint8_t *) dst + g * groupb, nr, K);
    }
    free(tmp);
}
