// pybonsai Q1_0 kernels: AVX2 (+FMA, F16C) path.
//
// Weights in the AVX2 chunk layout (q1_0_kernels.h: each 64-byte chunk transposed for the table
// path, q1_0_lut_avx2.cpp); 6 shuffles per chunk, shared by the tile's tokens, turn it back into
// two 32-byte halves of 8 rows x 4 bytes (rows 0-7, rows 8-15). For plane p a 16-bit left shift by 7-p moves bit p of every byte into its sign
// bit, vpblendvb selects the broadcast activation where the bit is set, vpmaddubsw against
// 1s adds byte pairs into int16 (exact: at most 32 planes x 254 per block), and one vpmaddwd
// per block widens the per-row sums to int32. Built with a file-level target pragma and called
// only after the runtime cpuid check; internal linkage, C headers only.
#include "q1_0_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

namespace {

#ifndef Q1K_PF
#define Q1K_PF 16384  // software prefetch distance (bytes) for the streaming GEMV
#endif

typedef int32_t i32u __attribute__((aligned(1), may_alias));

inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m        = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m        = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

inline int hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s         = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s         = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

void quant_avx2(const float * x, void * dst, int64_t K, int64_t b0, int64_t b1) {
    const int64_t nb   = K / Q1K_QK;
    int8_t * q         = (int8_t *) dst;
    float * c1         = (float *) (q + nb * Q1K_QK);
    float * corr       = c1 + nb * 4;
    const __m256 signm = _mm256_set1_ps(-0.0f);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    for (int64_t b = b0; b < b1; b++) {
        float cb = 0.0f;
        for (int c = 0; c < 4; c++) {
            const float * xs = x + b * Q1K_QK + 32 * c;
            __m256 v[4];
            __m256 m = _mm256_setzero_ps();
            for (int i = 0; i < 4; i++) {
                v[i] = _mm256_loadu_ps(xs + 8 * i);
                m    = _mm256_max_ps(m, _mm256_andnot_ps(signm, v[i]));
            }
            const float amax = hmax8(m);
            const float d    = q1k_fp16_round(amax / 127.0f);
            const __m256 vid = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
            __m256i qi[4];
            __m256i sum = _mm256_setzero_si256();
            for (int u = 0; u < 4; u++) {
                qi[u] = _mm256_cvtps_epi32(_mm256_mul_ps(v[u], vid));
                qi[u] = _mm256_max_epi32(_mm256_min_epi32(qi[u], hi), lo);
                sum   = _mm256_add_epi32(sum, qi[u]);
            }
            // pack 32 int32 -> 32 int8 in order (packs work per 128-bit lane: fix with a permute)
            const __m256i p01 = _mm256_packs_epi32(qi[0], qi[1]);
            const __m256i p23 = _mm256_packs_epi32(qi[2], qi[3]);
            __m256i p         = _mm256_packs_epi16(p01, p23);
            p                 = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *) (q + b * Q1K_QK + 32 * c), p);
            c1[b * 4 + c] = 2.0f * d;
            cb += d * (float) hsum8i(sum);
        }
        corr[b] = cb;
    }
}

#include "q1_0_avx2_groups.h"

struct multiply_path {
template <int NT>
static inline void tile(const uint8_t * gbits, const uint16_t * gscale, int64_t nb, const uint8_t * act,
                 size_t act_stride, float * dst, size_t dst_stride, int nvalid, bool pf) {
    const __m256i ones8  = _mm256_set1_epi8(1);
    const __m256i ones16 = _mm256_set1_epi16(1);
    const __m256i zero   = _mm256_setzero_si256();
    // after unpack{lo,hi}_epi8(X, Y) and the qword order 0,2,1,3, a lane holds 4 rows' (j0, j2)
    // byte pairs, then their (j1, j3) pairs: gather each row's j0..j3
    const __m256i untr = _mm256_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,
                                          0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    const int8_t * q[NT];
    const float *  c1[NT];
    const float *  corr[NT];
    __m256 accf[NT][2];
    for (int t = 0; t < NT; t++) {
        q[t]       = (const int8_t *) (act + t * act_stride);
        c1[t]      = (const float *) (q[t] + nb * Q1K_QK);
        corr[t]    = c1[t] + nb * 4;
        accf[t][0] = _mm256_setzero_ps();
        accf[t][1] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t * bits = gbits + b * 256;
        __m256 bf[NT][2];
        for (int c = 0; c < 4; c++) {
            __m256i acc[NT][2];
            for (int t = 0; t < NT; t++) {
                acc[t][0] = zero;
                acc[t][1] = zero;
            }
            // X = [byte 0 of rows 0-15 | byte 1], Y = [byte 2 | byte 3] -> rows 0-7 and 8-15, 4 bytes each
            const __m256i X  = _mm256_loadu_si256((const __m256i *) (bits + c * 64));
            const __m256i Y  = _mm256_loadu_si256((const __m256i *) (bits + c * 64 + 32));
            const __m256i x0 = _mm256_shuffle_epi8(_mm256_permute4x64_epi64(_mm256_unpacklo_epi8(X, Y), 0xD8), untr);
            const __m256i x1 = _mm256_shuffle_epi8(_mm256_permute4x64_epi64(_mm256_unpackhi_epi8(X, Y), 0xD8), untr);
            if (Q1K_PF > 0 && pf) {
                _mm_prefetch((const char *) (bits + c * 64 + Q1K_PF), Q1K_PF_HINT);
            }
#pragma GCC unroll 8
            for (int p = 0; p < 8; p++) {
                const __m256i y0 = p == 7 ? x0 : _mm256_slli_epi16(x0, 7 - p);
                const __m256i y1 = p == 7 ? x1 : _mm256_slli_epi16(x1, 7 - p);
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) {
                    const __m256i a = _mm256_set1_epi32(*(const i32u *) (q[t] + b * Q1K_QK + c * 32 + 4 * p));
                    acc[t][0] = _mm256_add_epi16(acc[t][0], _mm256_maddubs_epi16(ones8, _mm256_blendv_epi8(zero, a, y0)));
                    acc[t][1] = _mm256_add_epi16(acc[t][1], _mm256_maddubs_epi16(ones8, _mm256_blendv_epi8(zero, a, y1)));
                }
            }
            for (int t = 0; t < NT; t++) {
                const __m256 cc = _mm256_set1_ps(c1[t][b * 4 + c]);
                for (int h = 0; h < 2; h++) {
                    const __m256 sf = _mm256_cvtepi32_ps(_mm256_madd_epi16(acc[t][h], ones16));
                    bf[t][h]        = c == 0 ? _mm256_mul_ps(sf, cc) : _mm256_fmadd_ps(sf, cc, bf[t][h]);
                }
            }
        }
        add_block<NT>(accf, bf, gscale, corr, b);
    }
    for (int t = 0; t < NT; t++) {
        store_rows(dst + t * dst_stride, accf[t][0], accf[t][1], nvalid);
    }
}
};

void gemm_avx2(const void * w, int64_t K, int64_t nrows, int64_t g0, int64_t g1, const void * act,
               size_t act_stride, int64_t ntok, float * dst, size_t dst_stride) {
    gemm_groups_avx2<multiply_path>(w, K, nrows, g0, g1, act, act_stride, ntok, dst, dst_stride);
}

}  // namespace

#pragma GCC pop_options

extern "C" q1k_lut_fn q1k_lut_build_avx2(void);  // q1_0_lut_avx2.cpp
extern "C" q1k_gemm_fn q1k_gemm_lut_avx2(void);
extern "C" q1k_relayout_fn q1k_relayout_avx2(void);

extern "C" const q1k_kernel * q1k_kernel_avx2(void) {
    static const q1k_kernel k = { "avx2", quant_avx2, gemm_avx2, q1k_lut_build_avx2(), q1k_gemm_lut_avx2(),
                                  q1k_relayout_avx2() };
    return &k;
}

#else

extern "C" const q1k_kernel * q1k_kernel_avx2(void) {
    return 0;
}

#endif
