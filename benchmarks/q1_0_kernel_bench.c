// Kernel-only timing of the Q1_0 and Q2_0 SIMD paths (no ggml, one thread): the multiply path and
// the table path on one matrix shape and token count, from cache (copies=1, a matrix that fits L2)
// or from DRAM (enough copies to exceed the last-level cache, used in turn).
//   cc -O2 -march=native -Icsrc/kernels/cpu benchmarks/q1_0_kernel_bench.c csrc/kernels/cpu/q1_0_scalar.c \
//      csrc/kernels/cpu/q1_0_dispatch.c csrc/kernels/cpu/q2_0_kernels.c -x c++ csrc/kernels/cpu/q1_0_avx2.cpp \
//      csrc/kernels/cpu/q1_0_avx512.cpp csrc/kernels/cpu/q1_0_lut_avx512.cpp csrc/kernels/cpu/q1_0_lut_avx2.cpp \
//      -x none -lstdc++ -lm -o build/q1k_bench
//   build/q1k_bench K ROWS NTOK ITERS PATH COPIES     (PATH: 0 multiply, 1 table, 2 plain read)
// Q1K_BENCH_KERNEL=avx2 times the AVX2 kernels (default: avx512). Q1K_BENCH_TYPE=q2_0: the matrix is
// Q2_0 (2.25 bits per weight, run as a virtual Q1_0 matrix of 2K columns, q2_0_kernels.h).
// Prints the time of one matrix x NTOK tokens, the weights' read rate, and the cycles per 2048
// weights per token at the clock given by Q1K_BENCH_GHZ (default 2.3).
#include "q1_0_kernels.h"
#include "q2_0_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char ** argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s K ROWS NTOK ITERS PATH(0 multiply, 1 table, 2 plain read) COPIES\n", argv[0]);
        return 2;
    }
    const int64_t K = atoll(argv[1]), rows = atoll(argv[2]);
    const int ntok = atoi(argv[3]), iters = atoi(argv[4]), path = atoi(argv[5]), copies = atoi(argv[6]);
    const char * kname = getenv("Q1K_BENCH_KERNEL");
    const int avx2 = kname != NULL && strcmp(kname, "avx2") == 0;
    const q1k_kernel * k = avx2 ? q1k_kernel_avx2() : q1k_kernel_avx512();
    if (K % Q1K_QK || rows < 1 || ntok < 1 || iters < 2 || path < 0 || path > 2 || copies < 1 || copies > 64 ||
        !k || !(avx2 ? q1k_cpu_has_avx2() : q1k_cpu_has_avx512()) || (path == 1 && !k->gemm_lut)) {
        fprintf(stderr, "bad arguments, or this CPU lacks the path\n");
        return 2;
    }
    const char * ghz_env = getenv("Q1K_BENCH_GHZ");
    const double ghz = ghz_env ? atof(ghz_env) : 2.3;
    const char *  tname = getenv("Q1K_BENCH_TYPE");
    const int     q2    = tname != NULL && strcmp(tname, "q2_0") == 0;
    const int64_t KV    = q2 ? q2k_virtual_k(K) : K;  // the columns the kernels run
    const int64_t nb    = KV / Q1K_QK;                // source blocks per row (18 bytes each, both types)
    const size_t  ps    = q1k_packed_size(rows, KV);
    uint8_t * src = malloc((size_t) (rows * nb * 18));
    for (size_t i = 0; i < (size_t) (rows * nb * 18); i++) src[i] = (uint8_t) rand();
    for (int64_t i = 0; i < rows * nb; i++) {
        const uint16_t one = 0x3c00;
        memcpy(src + i * 18, &one, 2);
    }
    const char * huge_env = getenv("Q1K_BENCH_HUGE");
    const int huge = huge_env != NULL && strcmp(huge_env, "1") == 0;
    uint8_t * w[64];
    for (int c = 0; c < copies; c++) {
        // Q1K_BENCH_HUGE=1: 2 MiB-aligned buffers advised for transparent huge pages
        const size_t al = huge ? (size_t) 2 << 20 : 64;
        w[c] = aligned_alloc(al, (ps + al - 1) / al * al);
        if (huge) madvise(w[c], (ps + al - 1) / al * al, MADV_HUGEPAGE);
        if (q2) q2k_repack(src, w[c], rows, K);
        else q1k_repack(src, w[c], rows, K);
        if (k->relayout) k->relayout(w[c], rows, KV);
    }
    float * x = malloc(sizeof(float) * (size_t) (K * ntok));
    for (int64_t i = 0; i < K * ntok; i++) x[i] = (float) (rand() % 1000 - 500) / 100.0f;
    const size_t st  = q1k_act_stride(KV) + (path == 1 ? q1k_lut_bytes(KV) : 0);
    uint8_t *    act = aligned_alloc(64, st * (size_t) ntok);
    float *      out = malloc(sizeof(float) * (size_t) (rows * ntok));
    const int64_t groups = (rows + Q1K_ROWS - 1) / Q1K_ROWS;
    double tq = 0, tg = 0;
    for (int it = 0; it < iters; it++) {
        const double t0 = now();
        for (int t = 0; t < ntok; t++) {
            if (q2) q2k_quant(k, x + t * K, act + t * st, K, 0, nb);
            else k->quant(x + t * K, act + t * st, K, 0, nb);
            if (path == 1) k->lut_build(act + t * st, KV, 0, nb);
        }
        const double t1 = now();
        if (path == 2) {
            const uint64_t * p = (const uint64_t *) w[it % copies];
            uint64_t s[8] = { 0 };
            for (size_t i = 0; i + 8 <= ps / 8; i += 8)
                for (int j = 0; j < 8; j++) s[j] += p[i + j];
            out[0] = (float) (s[0] + s[5]);
        } else {
            (path == 1 ? k->gemm_lut : k->gemm)(w[it % copies], KV, rows, 0, groups, act, st, ntok, out, (size_t) rows);
        }
        const double t2 = now();
        if (it > 0) {  // the first pass warms up
            tq += t1 - t0;
            tg += t2 - t1;
        }
    }
    const int n = iters - 1;
    printf("%s %s K=%lld rows=%lld ntok=%d path=%s copies=%d: activations %.1f us, matrix %.1f us = %.2f GB/s of "
           "weights (%.4f bytes/weight), %.1f cycles per 2048 weights per token at %.2f GHz\n", q2 ? "q2_0" : "q1_0",
           k->name, (long long) K, (long long) rows, ntok, path == 0 ? "multiply" : path == 1 ? "table" : "read",
           copies, tq / n * 1e6, tg / n * 1e6, (double) ps / (tg / n) / 1e9, (double) ps / ((double) rows * K),
           (tg / n) * ghz * 1e9 / ((double) rows * (double) K / 2048) / ntok, ghz);
    return 0;
}
