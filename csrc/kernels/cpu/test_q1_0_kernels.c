// Standalone check of the pybonsai Q1_0 and Q2_0 kernels (no ggml): every path the CPU supports is
// compared on fresh random data against a direct computation from the unpacked Q1_0 (Q2_0) blocks,
// at awkward sizes (rows not a multiple of 16, K = 128 x odd, 1..17 tokens, split group ranges).
// A Q2_0 matrix goes through q2k_repack and q2k_quant and runs on the same kernels as a virtual
// Q1_0 matrix of 2K columns (q2_0_kernels.h). Built and run by tests/test_cpu_kernels.py:
//   gcc -O2 test_q1_0_kernels.c q1_0_scalar.c q1_0_dispatch.c q2_0_kernels.c q1_0_avx2.cpp ... -lm
#include "q1_0_kernels.h"
#include "q2_0_kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t) (rng >> 16);
}
static float rndf(void) { return (float) (rnd() & 0xffffff) / 16777216.0f; }

static float half_to_float(uint16_t h) {  // normal halves only (that is all we generate)
    uint32_t bits = ((uint32_t) (h & 0x8000u) << 16) | ((((h >> 10) & 0x1fu) + 112) << 23) | ((h & 0x3ffu) << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// row r of the unpacked weights (nb 18-byte blocks per row) dotted with x, and with the int8 values
// q and scales c1/2 of a record: Q1_0 blocks (q2 = 0) or Q2_0 blocks of 64 (q2 = 1); x and q index
// the real columns (a Q2_0 record holds each block's 64 values twice: the first copy is read)
static void direct(int q2, const uint8_t * wq, int64_t r, int64_t nb, const int8_t * q, const float * c1,
                   const float * x, double * ref, double * exact, double * scale) {
    const int qk = q2 ? Q2K_QK : Q1K_QK;
    *ref = *exact = *scale = 0;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t * blk = wq + (r * nb + b) * 18;
        uint16_t h;
        memcpy(&h, blk, 2);
        const double d = half_to_float(h);
        double s = 0, sx = 0;
        for (int i = 0; i < qk; i++) {
            const int v = q2 ? ((blk[2 + i / 4] >> (2 * (i % 4))) & 3) - 1 : ((blk[2 + i / 8] >> (i % 8)) & 1 ? 1 : -1);
            s += v * q[b * Q1K_QK + i] * (c1[b * 4 + i / 32] * 0.5);
            sx += v * x[b * qk + i];
            *scale += fabs(d * x[b * qk + i]);
        }
        *ref += d * s;
        *exact += d * sx;
    }
}

// K: real columns; q2: the weights are Q2_0 (run as the virtual Q1_0 matrix of KV = 2K columns)
static int check(const q1k_kernel * k, int q2, int64_t nrows, int64_t K, int64_t ntok) {
    const int64_t KV = q2 ? q2k_virtual_k(K) : K;
    const int64_t nb = KV / Q1K_QK;  // source blocks per row (18 bytes, both types)
    uint8_t * wq     = malloc((size_t) (nrows * nb * 18));
    uint8_t * wp     = malloc(q1k_packed_size(nrows, KV));
    float *   x      = malloc(sizeof(float) * (size_t) (K * ntok));
    size_t    st     = q1k_act_stride(KV);
    uint8_t * act    = malloc(st * (size_t) ntok);
    uint8_t * act_s  = malloc(st * (size_t) ntok);
    float *   out    = malloc(sizeof(float) * (size_t) (nrows * ntok));
    float *   out2   = malloc(sizeof(float) * (size_t) (nrows * ntok));
    for (int64_t i = 0; i < nrows * nb; i++) {
        uint16_t h = (uint16_t) (((rnd() & 1) << 15) | ((8 + rnd() % 7) << 10) | (rnd() & 0x3ff));
        memcpy(wq + i * 18, &h, 2);
        for (int j = 0; j < 16; j++) wq[i * 18 + 2 + j] = (uint8_t) rnd();
    }
    for (int64_t i = 0; i < K * ntok; i++) x[i] = (rndf() - 0.5f) * (i % 37 == 0 ? 20.0f : 2.0f);
    if (ntok > 1) memset(x + K, 0, sizeof(float) * (size_t) K);  // an all-zero token
    if (q2) q2k_repack(wq, wp, nrows, K);
    else q1k_repack(wq, wp, nrows, K);
    if (k->relayout) k->relayout(wp, nrows, KV);
    for (int64_t t = 0; t < ntok; t++) {  // the path's quant in two block ranges (the thread split)
        if (q2) {
            q2k_quant(k, x + t * K, act + t * st, K, nb / 2, nb);
            q2k_quant(k, x + t * K, act + t * st, K, 0, nb / 2);
            q2k_quant(q1k_kernel_scalar(), x + t * K, act_s + t * st, K, 0, nb);
        } else {
            k->quant(x + t * K, act + t * st, K, nb / 2, nb);
            k->quant(x + t * K, act + t * st, K, 0, nb / 2);
            q1k_kernel_scalar()->quant(x + t * K, act_s + t * st, K, 0, nb);
        }
    }
    int bad = 0;
    for (int64_t t = 0; t < ntok && !bad; t++) {  // same int8 and scales on every path
        const uint8_t * a = act + t * st, * r = act_s + t * st;
        const float * corr_a = (const float *) (a + nb * (Q1K_QK + 16));
        const float * corr_r = (const float *) (r + nb * (Q1K_QK + 16));
        int differs = memcmp(a, r, (size_t) nb * (Q1K_QK + 16)) != 0;
        for (int64_t b = 0; b < nb; b++) {  // corr may differ in rounding (fma contraction)
            differs |= !(fabsf(corr_a[b] - corr_r[b]) <= 1e-5f * (fabsf(corr_r[b]) + 1.0f));
        }
        if (differs) {
            printf("  %s quant differs from scalar (token %lld)\n", k->name, (long long) t);
            bad = 1;
        }
    }
    // whole range in one call, then split in two uneven ranges (the thread split)
    const int64_t groups = (nrows + 15) / 16;
    for (int64_t i = 0; i < nrows * ntok; i++) out[i] = out2[i] = NAN;
    k->gemm(wp, KV, nrows, 0, groups, act, st, ntok, out, (size_t) nrows);
    const int64_t mid = groups / 3;
    k->gemm(wp, KV, nrows, 0, mid, act, st, ntok, out2, (size_t) nrows);
    k->gemm(wp, KV, nrows, mid, groups, act, st, ntok, out2, (size_t) nrows);
    double max_err = 0, max_qerr = 0;
    for (int64_t t = 0; t < ntok; t++) {
        const int8_t * q  = (const int8_t *) (act_s + t * st);
        const float *  c1 = (const float *) (q + nb * Q1K_QK);
        for (int64_t r = 0; r < nrows; r++) {
            double ref, exact, scale;
            direct(q2, wq, r, nb, q, c1, x + t * K, &ref, &exact, &scale);
            const double got = out[t * nrows + r];
            const double err = fabs(got - ref) / (scale + 1e-30);
            max_err          = err > max_err ? err : max_err;
            const double qe  = fabs(got - exact) / (scale + 1e-30);
            max_qerr         = qe > max_qerr ? qe : max_qerr;
            if (!(err < 1e-5) || out2[t * nrows + r] != out[t * nrows + r] || !(qe < 2e-2)) {
                if (!bad) printf("  %s row %lld tok %lld: got %g ref %g exact %g split %g\n", k->name, (long long) r,
                                 (long long) t, got, ref, exact, out2[t * nrows + r]);
                bad = 1;
            }
        }
    }
    int lut_bad = -1;  // -1: this path has no table path
    if (k->lut_build && k->gemm_lut) {
        // table path: records carry the tables; results must equal the multiply path's bit for bit
        const size_t lst = st + q1k_lut_bytes(KV);
        uint8_t * lact   = malloc(lst * (size_t) ntok);
        float *   lout   = malloc(sizeof(float) * (size_t) (nrows * ntok));
        for (int64_t t = 0; t < ntok; t++) {
            if (q2) q2k_quant(k, x + t * K, lact + t * lst, K, 0, nb);
            else k->quant(x + t * K, lact + t * lst, K, 0, nb);
            k->lut_build(lact + t * lst, KV, 1 + nb / 2 < nb ? 1 + nb / 2 : nb, nb);  // two uneven block ranges
            k->lut_build(lact + t * lst, KV, 0, 1 + nb / 2 < nb ? 1 + nb / 2 : nb);
        }
        for (int64_t i = 0; i < nrows * ntok; i++) lout[i] = NAN;
        k->gemm_lut(wp, KV, nrows, 0, mid, lact, lst, ntok, lout, (size_t) nrows);
        k->gemm_lut(wp, KV, nrows, mid, groups, lact, lst, ntok, lout, (size_t) nrows);
        lut_bad = memcmp(lout, out, sizeof(float) * (size_t) (nrows * ntok)) != 0;
        if (lut_bad) {
            for (int64_t i = 0; i < nrows * ntok; i++) {
                if (lout[i] != out[i]) {
                    printf("  %s table path differs at %lld: %g vs %g\n", k->name, (long long) i, lout[i], out[i]);
                    break;
                }
            }
        }
        bad |= lut_bad;
        free(lact); free(lout);
    }
    printf("%s %-6s rows=%-4lld K=%-5lld ntok=%-3lld rel_err=%.2e vs_fp32=%.2e%s %s\n", q2 ? "q2_0" : "q1_0", k->name,
           (long long) nrows,
           (long long) K, (long long) ntok, max_err, max_qerr, lut_bad < 0 ? "" : lut_bad ? " lut=DIFF" : " lut=same",
           bad ? "FAIL" : "ok");
    free(wq); free(wp); free(x); free(act); free(act_s); free(out); free(out2);
    return bad;
}

// PrismML's ternary blocks of 128 (q2_0_prism.c) -> two Q2_0 blocks: every code of the converted
// blocks against a decode written here (PTQ1_0: the byte's value v = byte * 243 / 256 rounded down,
// its base-3 digits by division, most significant first; PQ2_0: every byte value), and the packed
// matrix of q2k_repack_ternary128 byte-identical to q2k_repack of the converted rows (37 rows: a
// partial row group)
static int q2_code(const uint8_t * q2blocks, int e) {  // code of weight e (0..127) of two Q2_0 blocks
    const uint8_t * b = q2blocks + 18 * (e / 64);
    return (b[2 + (e % 64) / 4] >> (2 * (e % 4))) & 3;
}

static int check_ternary128(void) {
    int bad = 0;
    uint8_t blk[34], out[36];
    for (int t = 0; t < 64; t++) {  // PQ2_0: bytes 4t..4t+3 spread over the block, scale 0x3c00 (1.0)
        blk[0] = 0x00; blk[1] = 0x3c;
        for (int j = 0; j < 32; j++) blk[2 + j] = (uint8_t) (4 * t + j * 37);
        q2k_ternary128_to_q2_0(Q2K_TYPE_PQ2_0, blk, out);
        for (int e = 0; e < 128; e++) bad += q2_code(out, e) != ((blk[2 + e / 4] >> (2 * (e % 4))) & 3);
        bad += out[0] != 0x00 || out[1] != 0x3c || out[18] != 0x00 || out[19] != 0x3c;
    }
    for (int v0 = 0; v0 < 243; v0++) {  // PTQ1_0: every 5-digit value in every qs byte, every 4-digit one in qh
        uint8_t p[28], codes[128];
        for (int j = 0; j < 24; j++) {
            const int v = (v0 + 17 * j) % 243;
            p[j] = (uint8_t) ((v * 256 + 242) / 243);
        }
        for (int j = 0; j < 2; j++) {
            const int v = (v0 + 29 * j) % 81;
            p[24 + j] = (uint8_t) ((3 * v * 256 + 242) / 243);
        }
        p[26] = 0x66; p[27] = 0x2e;
        for (int j = 0; j < 26; j++) {
            const int v = p[j] * 243 / 256, nd = j < 24 ? 5 : 5;  // qh: 4 digits and a 0
            const int stride = j < 16 ? 16 : j < 24 ? 8 : 2, base = j < 16 ? 0 : j < 24 ? 80 : 120;
            const int m = j < 16 ? j : j < 24 ? j - 16 : j - 24;
            int rest = v;
            for (int d = nd - 1; d >= 0; d--) {
                const int digit = rest % 3;
                rest /= 3;
                if (j >= 24 && d == 4) continue;  // the padding digit
                codes[base + m + stride * d] = (uint8_t) digit;
            }
        }
        q2k_ternary128_to_q2_0(Q2K_TYPE_PTQ1_0, p, out);
        for (int e = 0; e < 128; e++) bad += q2_code(out, e) != codes[e];
        bad += out[0] != 0x66 || out[1] != 0x2e || out[18] != 0x66 || out[19] != 0x2e;
    }
    const int64_t nrows = 37, K = 384, nb = K / 128;
    for (int type = Q2K_TYPE_PQ2_0; type <= Q2K_TYPE_PTQ1_0; type++) {
        const int sb = type == Q2K_TYPE_PQ2_0 ? 34 : 28;
        uint8_t * src = malloc((size_t) (nrows * nb * sb));
        uint8_t * conv = malloc((size_t) (nrows * nb * 36));
        uint8_t * a = malloc(q2k_packed_size(nrows, K));
        uint8_t * b = malloc(q2k_packed_size(nrows, K));
        for (int64_t i = 0; i < nrows * nb * sb; i++) src[i] = (uint8_t) (rand() & 0xff);
        for (int64_t i = 0; i < nrows * nb; i++) {
            if (type == Q2K_TYPE_PTQ1_0) src[i * sb + 27] &= 0x3f;  // a finite scale
            q2k_ternary128_to_q2_0(type, src + i * sb, conv + i * 36);
        }
        memset(a, 0, q2k_packed_size(nrows, K));
        memset(b, 0, q2k_packed_size(nrows, K));
        q2k_repack_ternary128(type, src, a, nrows, K);
        q2k_repack(conv, b, nrows, K);
        bad += memcmp(a, b, q2k_packed_size(nrows, K)) != 0;
        free(src); free(conv); free(a); free(b);
    }
    printf("ternary128 (PQ2_0, PTQ1_0 -> Q2_0): %s\n", bad ? "FAIL" : "ok");
    return bad != 0;
}

int main(int argc, char ** argv) {
    const q1k_kernel * paths[3] = { q1k_kernel_scalar(), NULL, NULL };
    if (q1k_kernel_avx2() && q1k_cpu_has_avx2()) paths[1] = q1k_kernel_avx2();
    else printf("avx2 path: not supported here, skipped\n");
    if (q1k_kernel_avx512() && q1k_cpu_has_avx512()) paths[2] = q1k_kernel_avx512();
    else printf("avx512 path: not supported here, skipped\n");
    const int64_t rows[] = { 16, 5, 37, 67 };
    // 9 and 17 blocks: table-path K slices of 8 + a rest (Q2_0: 2x the virtual blocks)
    const int64_t ks[]   = { 128, 384, 640, 1152, 2176 };
    const int64_t toks[] = { 1, 2, 3, 5, 8, 9, 17 };
    int fails = 0;
    for (int p = 0; p < 3; p++) {
        if (!paths[p]) continue;
        if (argc > 1 && strcmp(argv[1], paths[p]->name) != 0) continue;
        for (size_t a = 0; a < sizeof rows / sizeof *rows; a++)
            for (size_t b = 0; b < sizeof ks / sizeof *ks; b++)
                for (size_t c = 0; c < sizeof toks / sizeof *toks; c++)
                    for (int q2 = 0; q2 < 2; q2++) fails += check(paths[p], q2, rows[a], ks[b], toks[c]);
    }
    fails += check_ternary128();
    printf("selected: %s, q2_0: %s\n%s\n", pybonsai_q1_0_kernel_name(), pybonsai_q2_0_kernel_name(),
           fails ? "FAILED" : "ALL OK");
    return fails != 0;
}
