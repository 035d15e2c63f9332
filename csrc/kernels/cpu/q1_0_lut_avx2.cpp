// pybonsai Q1_0 kernels: table-lookup (LUT) decode path for AVX2.
//
// Same tables as the AVX-512 table path (q1_0_kernels.h, "Table-lookup path"), looked up with
// vpshufb, which indexes one 16-entry table per 128-bit lane. Byte j of a row indexes table j, so
// the AVX2 kernel keeps each 64-byte chunk (16 rows x 32 columns) transposed (relayout_avx2, at
// load time): X = [j0 of rows 0-15 | j1 of rows 0-15], Y = [j2 | j3]. (Transposing in registers
// instead, 2 vpshufb + 4 vpermd + 2 vpblendd per chunk on the shuffle port the lookups use, made
// one token 40% slower.) Per token and chunk:
//   - 8 vpshufb look up the ql sums (TL) and qh sums (TH) of the low and high nibbles of X and Y;
//   - 3 vpaddb each add the 4 lookups: TL sums fit unsigned bytes (4 x 60), TH sums signed
//     bytes (4 x -32..28), made unsigned by xor 0x80 (+128);
//   - vpunpck{l,h}bw pairs TL and TH of a row, vpmaddubsw with (1, 16) gives TL + 16 TH per
//     row and lane in int16, one vperm2i128 pair + vpaddw adds the two lanes (byte positions j
//     even and odd) of each row: S1 + 2*16*128 per row, exact;
//   - the bias is removed and S1 goes through the multiply path's float epilogue in the same
//     order (q1_0_avx2.cpp), so results equal it bit for bit.
// About 38 vector ops per chunk for one token instead of the multiply path's ~86.
//
// Compiled with a file-level target pragma; only called after the runtime cpuid check;
// internal linkage, C headers only.
#include "q1_0_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

namespace {

#ifndef Q1K_PF
#define Q1K_PF 16384  // software prefetch distance (bytes), as in the multiply path
#endif

// pshufb control that builds, in lane l of a 32-byte register, entry idx = n & 15 of table
// j = 2*pair + l from the 16 activations of one nibble half (broadcast to both lanes): the
// activation 4*i + j where bit i of idx is set, else zero (control byte 0x80)
inline __m256i pick(int pair, int i) {
    alignas(32) uint8_t v[32];
    for (int n = 0; n < 32; n++) {
        const int j = 2 * pair + (n >> 4);
        v[n]        = ((n & 15) >> i) & 1 ? (uint8_t) (4 * i + j) : 0x80;
    }
    return _mm256_load_si256((const __m256i *) v);
}

void lut_build_avx2(void * act, int64_t K, int64_t b0, int64_t b1) {
    const int8_t * q   = (const int8_t *) act;
    uint8_t *      lut = (uint8_t *) act + q1k_act_stride(K);
    __m256i        sel[2][4];
    for (int p = 0; p < 2; p++) {
        for (int i = 0; i < 4; i++) {
            sel[p][i] = pick(p, i);
        }
    }
    const __m256i nib = _mm256_set1_epi8(0x0f), eight = _mm256_set1_epi8(8), flip = _mm256_set1_epi8((char) 0x80);
    for (int64_t s = 4 * b0; s < 4 * b1; s++) {
        const __m256i x  = _mm256_loadu_si256((const __m256i *) (q + 32 * s));
        const __m256i ql = _mm256_and_si256(x, nib);
        // floor(q/16) = ((q + 128) >> 4) - 8, the shift done on 16-bit lanes and masked per byte
        const __m256i qh = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(_mm256_xor_si256(x, flip), 4), nib), eight);
        uint8_t * out = lut + 256 * s;
        for (int h = 0; h < 2; h++) {
            // the 16 activations of nibble half h in both lanes
            const __m256i bl = h == 0 ? _mm256_permute2x128_si256(ql, ql, 0x00) : _mm256_permute2x128_si256(ql, ql, 0x11);
            const __m256i bh = h == 0 ? _mm256_permute2x128_si256(qh, qh, 0x00) : _mm256_permute2x128_si256(qh, qh, 0x11);
            for (int p = 0; p < 2; p++) {
                __m256i tl = _mm256_shuffle_epi8(bl, sel[p][0]);
                __m256i th = _mm256_shuffle_epi8(bh, sel[p][0]);
                for (int i = 1; i < 4; i++) {
                    tl = _mm256_add_epi8(tl, _mm256_shuffle_epi8(bl, sel[p][i]));
                    th = _mm256_add_epi8(th, _mm256_shuffle_epi8(bh, sel[p][i]));
                }
                _mm256_storeu_si256((__m256i *) (out + 128 * h + 32 * p), tl);
                _mm256_storeu_si256((__m256i *) (out + 128 * h + 64 + 32 * p), th);
            }
        }
    }
}

// 16 rows (one group) x NT tokens over all nb blocks -> dst[t*dst_stride + r], r < nvalid
#include "q1_0_avx2_groups.h"

struct table_path {
template <int NT>
static inline void tile(const uint8_t * gbits, const uint16_t * gscale, int64_t nb, const uint8_t * act,
                 size_t act_stride, float * dst, size_t dst_stride, int nvalid, bool pf) {
    const __m256i nib   = _mm256_set1_epi8(0x0f), flip = _mm256_set1_epi8((char) 0x80);
    const __m256i w116  = _mm256_set1_epi16(0x1001);  // bytes (1, 16): TL + 16*TH
    const __m256i bias  = _mm256_set1_epi16(2 * 16 * 128);
    const size_t  rec  = q1k_act_stride(nb * Q1K_QK);
    const float *   c1[NT];
    const float *   corr[NT];
    const uint8_t * lut[NT];
    __m256 accf[NT][2];
    for (int t = 0; t < NT; t++) {
        const uint8_t * a = act + t * act_stride;
        c1[t]      = (const float *) (a + nb * Q1K_QK);
        corr[t]    = c1[t] + nb * 4;
        lut[t]     = a + rec;
        accf[t][0] = _mm256_setzero_ps();
        accf[t][1] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t * bits = gbits + b * 256;
        __m256 bf[NT][2];
        for (int c = 0; c < 4; c++) {
            // X = [byte 0 of rows 0-15 | byte 1], Y = [byte 2 | byte 3] (the AVX2 chunk layout)
            const __m256i X = _mm256_loadu_si256((const __m256i *) (bits + c * 64));
            const __m256i Y = _mm256_loadu_si256((const __m256i *) (bits + c * 64 + 32));
            if (Q1K_PF > 0 && pf) {
                _mm_prefetch((const char *) (bits + c * 64 + Q1K_PF), Q1K_PF_HINT);
            }
            const __m256i xl = _mm256_and_si256(X, nib), xh = _mm256_and_si256(_mm256_srli_epi16(X, 4), nib);
            const __m256i yl = _mm256_and_si256(Y, nib), yh = _mm256_and_si256(_mm256_srli_epi16(Y, 4), nib);
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                const uint8_t * L  = lut[t] + (size_t) (b * 4 + c) * 256;
                __m256i tl = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *) L), xl);
                __m256i th = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *) (L + 64)), xl);
                tl = _mm256_add_epi8(tl, _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *) (L + 32)), yl));
                th = _mm256_add_epi8(th, _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *) (L + 96)), yl));
                tl = _mm256_add_epi8(tl, _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *) (L + 128)), xh));
                th = _mm256_add_epi8(th, _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *) (L + 192)), xh));
                tl = _mm256_add_epi8(tl, _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *) (L + 160)), yh));
                th = _mm256_add_epi8(th, _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *) (L + 224)), yh));
                th = _mm256_xor_si256(th, flip);
                // per lane: rows 0-7 (lo) and 8-15 (hi), TL + 16*TH in int16
                const __m256i lo = _mm256_maddubs_epi16(_mm256_unpacklo_epi8(tl, th), w116);
                const __m256i hi = _mm256_maddubs_epi16(_mm256_unpackhi_epi8(tl, th), w116);
                // add the two lanes (byte positions j even, j odd) of each row: rows 0-15 in order
                const __m256i s = _mm256_sub_epi16(_mm256_add_epi16(_mm256_permute2x128_si256(lo, hi, 0x20),
                                                                    _mm256_permute2x128_si256(lo, hi, 0x31)), bias);
                const __m256  cc = _mm256_set1_ps(c1[t][b * 4 + c]);
                const __m256  s0 = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(s)));
                const __m256  s1 = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(s, 1)));
                bf[t][0] = c == 0 ? _mm256_mul_ps(s0, cc) : _mm256_fmadd_ps(s0, cc, bf[t][0]);
                bf[t][1] = c == 0 ? _mm256_mul_ps(s1, cc) : _mm256_fmadd_ps(s1, cc, bf[t][1]);
            }
        }
        add_block<NT>(accf, bf, gscale, corr, b);
    }
    for (int t = 0; t < NT; t++) {
        store_rows(dst + t * dst_stride, accf[t][0], accf[t][1], nvalid);
    }
}
};

// q1k_repack's chunks -> the AVX2 layout: per 64-byte chunk, byte 16*j + r = byte 4*r + j
void relayout_avx2(void * w, int64_t nrows, int64_t K) {
    // in each lane: 4 rows x 4 bytes -> 4 dwords, dword j = byte j of the 4 rows
    const __m256i tbyte = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                           0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m256i pj01  = _mm256_setr_epi32(0, 4, 0, 4, 1, 5, 1, 5);
    const __m256i pj23  = _mm256_setr_epi32(2, 6, 2, 6, 3, 7, 3, 7);
    const int64_t nb     = K / Q1K_QK;
    const int64_t groups = (nrows + Q1K_ROWS - 1) / Q1K_ROWS;
    for (int64_t g = 0; g < groups; g++) {
        uint8_t * gbits = (uint8_t *) w + (size_t) g * nb * Q1K_GROUP_BLOCK_BYTES;
        for (int64_t i = 0; i < nb * 4; i++) {
            uint8_t *     chunk = gbits + i * 64;
            const __m256i x0    = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *) chunk), tbyte);
            const __m256i x1    = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *) (chunk + 32)), tbyte);
            _mm256_storeu_si256((__m256i *) chunk, _mm256_blend_epi32(_mm256_permutevar8x32_epi32(x0, pj01),
                                                                      _mm256_permutevar8x32_epi32(x1, pj01), 0xCC));
            _mm256_storeu_si256((__m256i *) (chunk + 32), _mm256_blend_epi32(_mm256_permutevar8x32_epi32(x0, pj23),
                                                                             _mm256_permutevar8x32_epi32(x1, pj23), 0xCC));
        }
    }
}

void gemm_lut_avx2(const void * w, int64_t K, int64_t nrows, int64_t g0, int64_t g1, const void * act,
                   size_t act_stride, int64_t ntok, float * dst, size_t dst_stride) {
    gemm_groups_avx2<table_path>(w, K, nrows, g0, g1, act, act_stride, ntok, dst, dst_stride);
}

}  // namespace

#pragma GCC pop_options

extern "C" q1k_lut_fn q1k_lut_build_avx2(void) {
    return lut_build_avx2;
}

extern "C" q1k_gemm_fn q1k_gemm_lut_avx2(void) {
    return gemm_lut_avx2;
}

extern "C" q1k_relayout_fn q1k_relayout_avx2(void) {
    return relayout_avx2;
}

#else

extern "C" q1k_lut_fn q1k_lut_build_avx2(void) {
    return 0;
}

extern "C" q1k_gemm_fn q1k_gemm_lut_avx2(void) {
    return 0;
}

extern "C" q1k_relayout_fn q1k_relayout_avx2(void) {
    return 0;
}

#endif
