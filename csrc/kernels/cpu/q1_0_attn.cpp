// pybonsai: decode attention over an f16 KV cache (q1_0_attn.h): the scalar reference, the AVX2 +
// FMA + F16C instance of q1_0_attn_impl.h and the choice between it and the AVX-512 one
// (q1_0_attn_avx512.cpp). Built with a file-level target pragma and called only after the runtime
// cpuid check (q1k_attn_available).
#include "q1_0_attn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

namespace {

// IEEE half -> float, for the reference (no F16C needed)
float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t) (h >> 15) << 31;
    const int      exp  = (h >> 10) & 31;
    const uint32_t man  = h & 1023;
    float          f;
    if (exp == 0) {
        f = ldexpf((float) man, -24);  // zero or subnormal
    } else if (exp == 31) {
        f = man ? NAN : INFINITY;
    } else {
        f = ldexpf((float) (man | 1024), exp - 25);
    }
    uint32_t bits;
    memcpy(&bits, &f, 4);
    bits |= sign;
    memcpy(&f, &bits, 4);
    return f;
}

}  // namespace

extern "C" void q1k_attn_reference(const q1k_attn_args * a) {
    const int64_t r = a->n_head / a->n_head_kv;
    double *      w = (double *) malloc(sizeof(double) * (size_t) (a->n_kv > 0 ? a->n_kv : 1));
    for (int64_t i = 0; i < a->n_q; i++) {
        const uint16_t * mrow = a->mask ? a->mask + i * a->mask_row / 2 : NULL;
        for (int64_t h = 0; h < a->n_head; h++) {
            const float * q = a->q + (i * a->q_tok + h * a->q_head) / 4;
            const int64_t g = h / r;
            double        m = -INFINITY;
            for (int64_t j = 0; j < a->n_kv; j++) {
                const double mv = mrow ? half_to_float(mrow[j]) : 0.0;
                w[j]            = -INFINITY;
                if (mv == -INFINITY) {
                    continue;
                }
                const uint16_t * k   = a->k + (j * a->k_row + g * a->k_head) / 2;
                double           dot = 0;
                for (int64_t d = 0; d < a->D; d++) {
                    dot += (double) q[d] * half_to_float(k[d]);
                }
                w[j] = dot * a->scale + mv;
                m    = w[j] > m ? w[j] : m;
            }
            float * out = a->dst + (i * a->dst_tok + h * a->dst_head) / 4;
            double  sum = 0;
            for (int64_t j = 0; j < a->n_kv; j++) {
                w[j] = m == -INFINITY || w[j] == -INFINITY ? 0.0 : exp(w[j] - m);
                sum += w[j];
            }
            for (int64_t d = 0; d < a->D; d++) {
                double acc = 0;
                for (int64_t j = 0; j < a->n_kv; j++) {
                    if (w[j] != 0.0) {
                        acc += w[j] * half_to_float(a->v[(j * a->v_row + g * a->v_head) / 2 + d]);
                    }
                }
                out[d] = sum > 0 ? (float) (acc / sum) : 0.0f;
            }
        }
    }
    free(w);
}

#if defined(__x86_64__) && defined(__GNUC__)

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

#include <vector>

namespace attn_avx2 {

struct simd {
    using v                     = __m256;
    static constexpr int64_t W  = 8;
    static v     zero() { return _mm256_setzero_ps(); }
    static v     load(const float * p) { return _mm256_loadu_ps(p); }
    static void  store(float * p, v x) { _mm256_storeu_ps(p, x); }
    static v     half(const uint16_t * p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) p)); }
    static v     fma(v a, v b, v c) { return _mm256_fmadd_ps(a, b, c); }
    static v     set1(float x) { return _mm256_set1_ps(x); }
    static v     mul(v a, v b) { return _mm256_mul_ps(a, b); }
    static v     add(v a, v b) { return _mm256_add_ps(a, b); }
    static float sum(v x);
};

#include "q1_0_attn_impl.h"

inline float simd::sum(v x) {
    return hsum8(x);
}

}  // namespace attn_avx2

extern "C" void q1k_attn_decode_avx2(const q1k_attn_args * a, int64_t w0, int64_t w1) {
    attn_avx2::decode_range(a, w0, w1);
}

extern "C" void q1k_attn_decode(const q1k_attn_args * a, int64_t w0, int64_t w1) {
    if (a->D % 16 == 0 && q1k_attn_avx512_usable()) {
        q1k_attn_decode_avx512(a, w0, w1);
    } else {
        attn_avx2::decode_range(a, w0, w1);
    }
}

#pragma GCC pop_options

extern "C" int q1k_attn_available(void) {
    static int state = -1;  // read once; racing first calls compute the same value
    if (state < 0) {
        const char * env = getenv("PYBONSAI_ATTN");
        __builtin_cpu_init();
        state = !(env != NULL && strcmp(env, "upstream") == 0) && __builtin_cpu_supports("avx2") &&
                __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    }
    return state;
}

#else

extern "C" int q1k_attn_available(void) {
    return 0;
}

extern "C" void q1k_attn_decode(const q1k_attn_args * a, int64_t w0, int64_t w1) {
    (void) a;
    (void) w0;
    (void) w1;
}

extern "C" void q1k_attn_decode_avx2(const q1k_attn_args * a, int64_t w0, int64_t w1) {
    (void) a;
    (void) w0;
    (void) w1;
}

#endif
