// pybonsai Q1_0 kernels: the AVX2 driver over 16-row groups and token tiles, shared by the
// multiply path (q1_0_avx2.cpp) and the table path (q1_0_lut_avx2.cpp).
//
// Include it inside the anonymous namespace of a translation unit compiled for AVX2, after
// <immintrin.h>. Path::tile<NT>(gbits, gscale, nb, act, act_stride, dst, dst_stride, nvalid, pf)
// computes and stores one group's first nvalid rows for NT consecutive tokens (NT = 4, 2, 1);
// pf: prefetch the weight stream ahead (only the group's first tile does).
#ifndef PYBONSAI_Q1_0_AVX2_GROUPS_H
#define PYBONSAI_Q1_0_AVX2_GROUPS_H

// The float epilogue of both paths, in one order so that their results are bit-identical: per
// block, acc += dw * (bf - corr) for rows 0-7 ([0]) and 8-15 ([1]) of every token.
template <int NT>
inline void add_block(__m256 (*accf)[2], const __m256 (*bf)[2], const uint16_t * gscale,
                      const float * const * corr, int64_t b) {
    const __m256 dw0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (gscale + b * Q1K_ROWS)));
    const __m256 dw1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (gscale + b * Q1K_ROWS + 8)));
    for (int t = 0; t < NT; t++) {
        const __m256 cr = _mm256_set1_ps(corr[t][b]);
        accf[t][0]      = _mm256_fmadd_ps(dw0, _mm256_sub_ps(bf[t][0], cr), accf[t][0]);
        accf[t][1]      = _mm256_fmadd_ps(dw1, _mm256_sub_ps(bf[t][1], cr), accf[t][1]);
    }
}

// the 16 row results of one token (rows 0-7, 8-15) -> o[0..nvalid)
inline void store_rows(float * o, __m256 lo, __m256 hi, int nvalid) {
    if (nvalid >= 16) {
        _mm256_storeu_ps(o, lo);
        _mm256_storeu_ps(o + 8, hi);
        return;
    }
    float tmp[16];
    _mm256_storeu_ps(tmp, lo);
    _mm256_storeu_ps(tmp + 8, hi);
    for (int r = 0; r < nvalid; r++) {
        o[r] = tmp[r];
    }
}

// rows of groups [g0, g1) x ntok tokens (q1k_gemm_fn's contract)
template <class Path>
void gemm_groups_avx2(const void * w, int64_t K, int64_t nrows, int64_t g0, int64_t g1, const void * act,
                      size_t act_stride, int64_t ntok, float * dst, size_t dst_stride) {
    const int64_t nb = K / Q1K_QK;
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *  gbits  = (const uint8_t *) w + (size_t) g * nb * Q1K_GROUP_BLOCK_BYTES;
        const uint16_t * gscale = (const uint16_t *) (gbits + (size_t) nb * 256);
        const int64_t    left   = nrows - g * Q1K_ROWS;
        const int        nvalid = left >= 16 ? 16 : (int) left;
        int64_t t = 0;
        while (t < ntok) {
            const uint8_t * a  = (const uint8_t *) act + t * act_stride;
            float *         o  = dst + t * dst_stride + g * Q1K_ROWS;
            const int       nt = ntok - t >= 4 ? 4 : ntok - t >= 2 ? 2 : 1;
            switch (nt) {
                case 4: Path::template tile<4>(gbits, gscale, nb, a, act_stride, o, dst_stride, nvalid, t == 0); break;
                case 2: Path::template tile<2>(gbits, gscale, nb, a, act_stride, o, dst_stride, nvalid, t == 0); break;
                default: Path::template tile<1>(gbits, gscale, nb, a, act_stride, o, dst_stride, nvalid, t == 0); break;
            }
            t += nt;
        }
    }
}

#endif
