// pybonsai: the AVX-512 instance of the decode attention kernel (q1_0_attn_impl.h, 16 floats per
// vector in the head-size loops), chosen by q1k_attn_decode when the CPU has AVX-512 and the head
// size is a multiple of 16. Built with a file-level target pragma; called after the cpuid check.
#include "q1_0_attn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#include <immintrin.h>

#include <vector>

namespace attn_avx512 {

struct simd {
    using v                    = __m512;
    static constexpr int64_t W = 16;
    static v     zero() { return _mm512_setzero_ps(); }
    static v     load(const float * p) { return _mm512_loadu_ps(p); }
    static void  store(float * p, v x) { _mm512_storeu_ps(p, x); }
    static v     half(const uint16_t * p) {  // maskz: GCC 12 warns about _mm512_cvtph_ps's undefined source
        return _mm512_maskz_cvtph_ps((__mmask16) 0xFFFF, _mm256_loadu_si256((const __m256i *) p));
    }
    static v     fma(v a, v b, v c) { return _mm512_fmadd_ps(a, b, c); }
    static v     set1(float x) { return _mm512_set1_ps(x); }
    static v     mul(v a, v b) { return _mm512_mul_ps(a, b); }
    static v     add(v a, v b) { return _mm512_add_ps(a, b); }
    static float sum(v x) { return _mm512_reduce_add_ps(x); }
};

#include "q1_0_attn_impl.h"

}  // namespace attn_avx512

extern "C" void q1k_attn_decode_avx512(const q1k_attn_args * a, int64_t w0, int64_t w1) {
    attn_avx512::decode_range(a, w0, w1);
}

#pragma GCC pop_options

extern "C" int q1k_attn_avx512_usable(void) {
    static int state = -1;  // read once; racing first calls compute the same value
    if (state < 0) {
        const char * env = getenv("PYBONSAI_ATTN");
        __builtin_cpu_init();
        state = !(env != NULL && strcmp(env, "avx2") == 0) && __builtin_cpu_supports("avx512f") &&
                __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx2") &&
                __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    }
    return state;
}

#else

extern "C" int q1k_attn_avx512_usable(void) {
    return 0;
}

extern "C" void q1k_attn_decode_avx512(const q1k_attn_args * a, int64_t w0, int64_t w1) {
    (void) a;
    (void) w0;
    (void) w1;
}

#endif
