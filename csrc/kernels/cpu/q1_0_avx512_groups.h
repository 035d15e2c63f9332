// pybonsai Q1_0 kernels: the AVX-512 driver over 16-row groups and token tiles, shared by the
// multiply path (q1_0_avx512.cpp) and the table path (q1_0_lut_avx512.cpp).
//
// Include it inside the anonymous namespace of a translation unit compiled for AVX-512, after
// <immintrin.h>. Path::tile<NT>(gbits, gscale, nb, act, act_stride, res, pf) computes one group's 16
// rows for NT consecutive tokens (NT = 8, 4, 2, 1) into res[0..NT); pf: prefetch the weight stream
// ahead (only the group's first tile does: the later ones find the group in cache).
#ifndef PYBONSAI_Q1_0_AVX512_GROUPS_H
#define PYBONSAI_Q1_0_AVX512_GROUPS_H

// The float epilogue of both paths, in one order so that their results are bit-identical:
// per 32-column sub-block c, bf = sum_c S1_c * c1_c; per block, acc += dw * (bf - corr).
inline __m512 add_subblock(__m512 bf, __m512i s1, float c1, int c) {
    const __m512 sf = _mm512_cvtepi32_ps(s1);
    const __m512 cc = _mm512_set1_ps(c1);
    return c == 0 ? _mm512_mul_ps(sf, cc) : _mm512_fmadd_ps(sf, cc, bf);
}

template <int NT>
inline void add_block(__m512 * accf, const __m512 * bf, const uint16_t * gscale, const float * const * corr,
                      int64_t b) {
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) (gscale + b * Q1K_ROWS)));
    for (int t = 0; t < NT; t++) {
        accf[t] = _mm512_fmadd_ps(dw, _mm512_sub_ps(bf[t], _mm512_set1_ps(corr[t][b])), accf[t]);
    }
}

// the valid rows of group g (rows past nrows are padding)
inline __mmask16 group_rows(int64_t nrows, int64_t g) {
    const int64_t left = nrows - g * Q1K_ROWS;
    return left >= 16 ? (__mmask16) 0xffff : (__mmask16) ((1u << left) - 1);
}

// tokens in the next tile, n tokens being left: 8, 4, 2 or 1
inline int tile_tokens(int64_t n) {
    return n >= 8 ? 8 : n >= 4 ? 4 : n >= 2 ? 2 : 1;
}

template <class Path, int NT>
inline void store_tile(const uint8_t * gbits, const uint16_t * gscale, int64_t nb, const uint8_t * act,
                       size_t act_stride, float * dst, size_t dst_stride, __mmask16 rows, bool pf) {
    __m512 r[NT];
    Path::template tile<NT>(gbits, gscale, nb, act, act_stride, r, pf);
    for (int t = 0; t < NT; t++) {
        _mm512_mask_storeu_ps(dst + t * dst_stride, rows, r[t]);
    }
}

// rows of groups [g0, g1) x ntok tokens (q1k_gemm_fn's contract)
template <class Path>
void gemm_groups(const void * w, int64_t K, int64_t nrows, int64_t g0, int64_t g1, const void * act,
                 size_t act_stride, int64_t ntok, float * dst, size_t dst_stride) {
    const int64_t nb = K / Q1K_QK;
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *  gbits  = (const uint8_t *) w + (size_t) g * nb * Q1K_GROUP_BLOCK_BYTES;
        const uint16_t * gscale = (const uint16_t *) (gbits + (size_t) nb * 256);
        const __mmask16  rows   = group_rows(nrows, g);
        int64_t t = 0;
        while (t < ntok) {
            const uint8_t * a  = (const uint8_t *) act + t * act_stride;
            float *         o  = dst + t * dst_stride + g * Q1K_ROWS;
            const int       nt = tile_tokens(ntok - t);
            switch (nt) {
                case 8: store_tile<Path, 8>(gbits, gscale, nb, a, act_stride, o, dst_stride, rows, t == 0); break;
                case 4: store_tile<Path, 4>(gbits, gscale, nb, a, act_stride, o, dst_stride, rows, t == 0); break;
                case 2: store_tile<Path, 2>(gbits, gscale, nb, a, act_stride, o, dst_stride, rows, t == 0); break;
                default: store_tile<Path, 1>(gbits, gscale, nb, a, act_stride, o, dst_stride, rows, t == 0); break;
            }
            t += nt;
        }
    }
}

#endif
