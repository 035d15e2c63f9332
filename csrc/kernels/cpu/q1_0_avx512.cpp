// pybonsai Q1_0 kernels: AVX-512 (F+BW+VL+VNNI) path.
//
// Compiled with a file-level target pragma so it exists in every ggml-cpu variant build; it
// is only ever called after the runtime cpuid check in q1_0_dispatch.c. Everything here has
// internal linkage and only C headers are included, so no AVX-512 code can leak into inline
// functions shared with other translation units.
//
// Inner step, per 64-byte chunk of bits (16 rows x 4 columns x 8 planes): for plane p, a
// 16-bit right shift by p and an AND with 1s leave bit p of every byte as a 0/1 byte, and
// vpdpbusd against a 4-byte broadcast of the activation adds, in lane r, the activation values
// over the set bits of row r. The expanded bits are shared by NT tokens. (Expanding through a
// mask register, vptestmb + zero-masked move, measured ~1.7x slower on Zen 4.)
#include "q1_0_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // gcc 12 false positive in its intrinsics
#include <immintrin.h>

namespace {

#ifndef Q1K_PF
#define Q1K_PF 16384  // software prefetch distance (bytes) for the streaming GEMV: 2 KiB gave
                      // 20 t/s, 16-32 KiB 29 t/s on the 8B decode (Zen 4, 2 threads). The first
                      // tile of each group prefetches, whatever its size: when only 1- and 2-token
                      // tiles did, the 4-token tile from DRAM took 30 instead of 19 cycles per 2048
                      // weights per token (Zen 5, benchmarks/RESULTS.md)
#endif

typedef int32_t i32u __attribute__((aligned(1), may_alias));

void quant_avx512(const float * x, void * dst, int64_t K, int64_t b0, int64_t b1) {
    const int64_t nb = K / Q1K_QK;
    int8_t * q       = (int8_t *) dst;
    float * c1       = (float *) (q + nb * Q1K_QK);
    float * corr     = c1 + nb * 4;
    for (int64_t b = b0; b < b1; b++) {
        float cb = 0.0f;
        for (int c = 0; c < 4; c++) {
            const float * xs  = x + b * Q1K_QK + 32 * c;
            const __m512  v0  = _mm512_loadu_ps(xs);
            const __m512  v1  = _mm512_loadu_ps(xs + 16);
            const float  amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            const float  d    = q1k_fp16_round(amax / 127.0f);
            const __m512 vid  = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
            const __m512i lo  = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
            const __m512i q0  = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v0, vid)), hi), lo);
            const __m512i q1  = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v1, vid)), hi), lo);
            _mm_storeu_si128((__m128i *) (q + b * Q1K_QK + 32 * c), _mm512_cvtepi32_epi8(q0));
            _mm_storeu_si128((__m128i *) (q + b * Q1K_QK + 32 * c + 16), _mm512_cvtepi32_epi8(q1));
            c1[b * 4 + c] = 2.0f * d;
            cb += d * (float) _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        }
        corr[b] = cb;
    }
}

// 16 rows (one group) x NT tokens over all nb blocks; res[t] = 16 row results of token t.
#include "q1_0_avx512_groups.h"

struct multiply_path {
template <int NT>
static inline void tile(const uint8_t * gbits, const uint16_t * gscale, int64_t nb, const uint8_t * act,
                 size_t act_stride, __m512 * res, bool pf) {
    constexpr int NA = NT == 1 ? 2 : 1;  // int accumulators per token (dpbusd latency)
    const __m512i ones = _mm512_set1_epi8(1);
    const int8_t * q[NT];
    const float *  c1[NT];
    const float *  corr[NT];
    __m512 accf[NT];
    for (int t = 0; t < NT; t++) {
        q[t]    = (const int8_t *) (act + t * act_stride);
        c1[t]   = (const float *) (q[t] + nb * Q1K_QK);
        corr[t] = c1[t] + nb * 4;
        accf[t] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t * bits = gbits + b * 256;
        __m512 bf[NT];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            __m512i acc[NT][NA];
            for (int t = 0; t < NT; t++) {
                for (int a = 0; a < NA; a++) {
                    acc[t][a] = _mm512_setzero_si512();
                }
            }
            const __m512i x = _mm512_loadu_si512((const void *) (bits + c * 64));
            if (Q1K_PF > 0 && pf) {
                _mm_prefetch((const char *) (bits + c * 64 + Q1K_PF), Q1K_PF_HINT);
            }
#pragma GCC unroll 8
            for (int p = 0; p < 8; p++) {
                const __m512i wv = _mm512_and_si512(_mm512_srli_epi16(x, p), ones);
#pragma GCC unroll 8
                for (int t = 0; t < NT; t++) {
                    const int32_t av = *(const i32u *) (q[t] + b * Q1K_QK + c * 32 + 4 * p);
                    acc[t][p % NA]   = _mm512_dpbusd_epi32(acc[t][p % NA], wv, _mm512_set1_epi32(av));
                }
            }
            for (int t = 0; t < NT; t++) {
                __m512i s = acc[t][0];
                for (int a = 1; a < NA; a++) {
                    s = _mm512_add_epi32(s, acc[t][a]);
                }
                bf[t] = add_subblock(bf[t], s, c1[t][b * 4 + c], c);
            }
        }
        add_block<NT>(accf, bf, gscale, corr, b);
    }
    for (int t = 0; t < NT; t++) {
        res[t] = accf[t];
    }
}
};

void gemm_avx512(const void * w, int64_t K, int64_t nrows, int64_t g0, int64_t g1, const void * act,
                 size_t act_stride, int64_t ntok, float * dst, size_t dst_stride) {
    gemm_groups<multiply_path>(w, K, nrows, g0, g1, act, act_stride, ntok, dst, dst_stride);
}

}  // namespace

#pragma GCC diagnostic pop
#pragma GCC pop_options

extern "C" q1k_lut_fn q1k_lut_build_avx512(void);  // q1_0_lut_avx512.cpp
extern "C" q1k_gemm_fn q1k_gemm_lut_avx512(void);

extern "C" const q1k_kernel * q1k_kernel_avx512(void) {
    // the table path needs VBMI's vpermb on top of this file's AVX-512 set
    static const bool vbmi = q1k_cpu_has_avx512vbmi() != 0;
    static const q1k_kernel k = { "avx512", quant_avx512, gemm_avx512, vbmi ? q1k_lut_build_avx512() : nullptr,
                                  vbmi ? q1k_gemm_lut_avx512() : nullptr, nullptr };
    return &k;
}

#else

extern "C" const q1k_kernel * q1k_kernel_avx512(void) {
    return 0;
}

#endif
