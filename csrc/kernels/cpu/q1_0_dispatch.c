// pybonsai Q1_0 kernels: runtime selection of the path (cpuid + PYBONSAI_Q1_KERNEL).
#include "q1_0_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#    include <cpuid.h>
#endif

#if defined(__GNUC__)
#    define Q1K_EXPORT __attribute__((visibility("default")))
#else
#    define Q1K_EXPORT
#endif

int q1k_cpu_has_avx2(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
}

int q1k_cpu_has_avx512(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return q1k_cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

int q1k_cpu_has_avx512vbmi(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return q1k_cpu_has_avx512() && __builtin_cpu_supports("avx512vbmi");
#else
    return 0;
#endif
}

static const q1k_kernel * q1k_best(void) {
    if (q1k_kernel_avx512() && q1k_cpu_has_avx512()) {
        return q1k_kernel_avx512();
    }
    if (q1k_kernel_avx2() && q1k_cpu_has_avx2()) {
        return q1k_kernel_avx2();
    }
    // No SIMD path: the scalar one is a reference, far slower than upstream's own kernels
    // (NEON etc.), so leave Q1_0 to upstream unless scalar is asked for explicitly.
    return NULL;
}

static const q1k_kernel * q1k_choose(void) {
    const char * env = getenv("PYBONSAI_Q1_KERNEL");
    if (env == NULL || env[0] == '\0' || strcmp(env, "auto") == 0) {
        return q1k_best();
    }
    if (strcmp(env, "upstream") == 0) {
        return NULL;
    }
    if (strcmp(env, "scalar") == 0) {
        return q1k_kernel_scalar();
    }
    if (strcmp(env, "avx2") == 0) {
        if (q1k_kernel_avx2() && q1k_cpu_has_avx2()) {
            return q1k_kernel_avx2();
        }
    } else if (strcmp(env, "avx512") == 0) {
        if (q1k_kernel_avx512() && q1k_cpu_has_avx512()) {
            return q1k_kernel_avx512();
        }
    } else {
        fprintf(stderr, "pybonsai: PYBONSAI_Q1_KERNEL=%s is not one of avx512, avx2, scalar, upstream, auto; "
                        "using the best available path\n", env);
        return q1k_best();
    }
    const q1k_kernel * k = q1k_best();
    fprintf(stderr, "pybonsai: PYBONSAI_Q1_KERNEL=%s is not supported on this CPU/build; using %s\n", env,
            k ? k->name : "upstream");
    return k;
}

const q1k_kernel * q1k_select(void) {
    // benign race: every thread computes the same answer
    static int                 chosen = 0;
    static const q1k_kernel *  kernel = NULL;
    if (!chosen) {
        kernel = q1k_choose();
        chosen = 1;
    }
    return kernel;
}

#ifndef Q1K_LUT_MAX_DEFAULT
#define Q1K_LUT_MAX_DEFAULT 8  // tokens per MUL_MAT up to which the table path runs: kernel-only it wins
                              // up to 16 and loses at 32 (the tables no longer fit L2), model-level
                              // pp16 was faster on the multiply path (benchmarks/RESULTS.md)
#endif

/* AMD family 1Ah (Zen 5) or later: full-width 512-bit vpdpbusd makes the multiply path fast enough
 * that it beat the AVX-512 table path from 5 tokens on in the 8B model (pp8 49 vs 42 t/s, one
 * thread), while the table path won at 1-4 tokens (benchmarks/RESULTS.md). */
static int q1k_cpu_is_amd_zen5_or_later(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned int a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d) || b != 0x68747541u || d != 0x69746e65u || c != 0x444d4163u) {
        return 0;  // not "AuthenticAMD"
    }
    if (!__get_cpuid(1, &a, &b, &c, &d)) {
        return 0;
    }
    const unsigned int base = (a >> 8) & 0xf;
    const unsigned int fam  = base == 0xf ? base + ((a >> 20) & 0xff) : base;
    return fam >= 0x1a;
#else
    return 0;
#endif
}

#ifndef Q1K_LUT_MAX_AVX2
#define Q1K_LUT_MAX_AVX2 256  // the AVX2 table path beat the AVX2 multiply path at every size up to
                              // 256 tokens in the 8B model (pp256 39 vs 32 t/s) and lost at 512 (27 vs
                              // 30) on Zen 5 (benchmarks/RESULTS.md)
#endif

/* the selected kernel's table-path limit when PYBONSAI_Q1_LUT_MAX is not set */
static int q1k_lut_default(const q1k_kernel * k) {
    if (k != NULL && strcmp(k->name, "avx2") == 0) {
        return Q1K_LUT_MAX_AVX2;
    }
    if (k != NULL && strcmp(k->name, "avx512") == 0 && q1k_cpu_is_amd_zen5_or_later()) {
        return 4;
    }
    return Q1K_LUT_MAX_DEFAULT;
}

int q1k_lut_max_tokens(void) {
    static int chosen = 0;
    static int value  = 0;
    if (!chosen) {
        const q1k_kernel * k   = q1k_select();
        const char *       env = getenv("PYBONSAI_Q1_LUT_MAX");
        int                n   = q1k_lut_default(k);
        if (env != NULL && env[0] != '\0') {
            char * end = NULL;
            long   v   = strtol(env, &end, 10);
            if (*end != '\0' || v < 0 || v > 4096) {
                fprintf(stderr, "pybonsai: PYBONSAI_Q1_LUT_MAX=%s is not a token count 0..4096; using %d\n", env, n);
            } else {
                n = (int) v;
            }
        }
        value  = (k != NULL && k->lut_build != NULL && k->gemm_lut != NULL) ? n : 0;
        chosen = 1;
    }
    return value;
}

Q1K_EXPORT const char * pybonsai_q1_0_kernel_name(void) {
    const q1k_kernel * k = q1k_select();
    return k ? k->name : "upstream";
}

Q1K_EXPORT int pybonsai_q1_0_lut_max_tokens(void) {
    return q1k_lut_max_tokens();
}
