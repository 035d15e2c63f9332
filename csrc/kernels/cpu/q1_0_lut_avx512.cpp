// pybonsai Q1_0 kernels: table-lookup (LUT) decode path for AVX-512 with VBMI.
//
// The multiply path (q1_0_avx512.cpp) spends per 64-byte chunk of bits (16 rows x 32 columns)
// 8 shift + 8 and + 8 vpdpbusd to turn bits into per-row sums. Here the sums of every subset of
// 4 activations are precomputed once per token (q1_0_kernels.h: "Table-lookup path"), so a
// nibble of weight bits selects a finished partial sum:
//   - idx_lo = (x & 0x0f) | slot, idx_hi = ((x >> 4) & 0x0f) | slot, where slot puts byte j of
//     every dword at table j (byte j of a row's dword uses the activations j, j+4, j+8, j+12);
//   - vpermb looks up 64 bytes at once in a 64-byte register holding 4 tables of 16 entries;
//   - vpdpbusd adds the 4 looked-up bytes of a row (4 tables = 16 columns) into that row's int32
//     lane: once with the ql tables against 1s, once with 16s against the qh tables.
// Per chunk: 3 index ops + 4 vpermb + 4 vpdpbusd instead of 24 ops, for the same integer S1,
// converted and scaled in exactly the multiply path's order, so results are bit-identical.
// The tables cost ~40 ops per 32 activations per token: worth it for few tokens (decode, small
// batches); q1k_lut_max_tokens() decides where the multiply path takes over. They take 1 KiB per
// 128 columns and token, so K is processed in slices whose tables stay in L1 (gemm_lut_avx512).
//
// Compiled with a file-level target pragma; only called after the runtime cpuid check
// (q1_0_dispatch.c: AVX-512 with VBMI); internal linkage, C headers only.
#include "q1_0_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx512vbmi,avx2,fma,f16c")
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // gcc 12 false positive in its intrinsics
#include <immintrin.h>

namespace {

#ifndef Q1K_PF
#define Q1K_PF 16384  // software prefetch distance (bytes), as in the multiply path
#endif

// byte n of table entry vectors: entry idx = n & 15 of table j = n >> 4, so activation i of
// table j contributes where bit i of idx is set
constexpr __mmask64 kBit[4] = { 0xAAAAAAAAAAAAAAAAull, 0xCCCCCCCCCCCCCCCCull, 0xF0F0F0F0F0F0F0F0ull,
                                0xFF00FF00FF00FF00ull };

// index vector picking activation i of table j (= byte n >> 4) of the low (half 0) or high
// (half 1) nibble groups of a 32-column sub-block: q offset 16*half + 4*i + j
inline __m512i pick(int half, int i) {
    alignas(64) uint8_t v[64];
    for (int n = 0; n < 64; n++) {
        v[n] = (uint8_t) (16 * half + 4 * i + (n >> 4));
    }
    return _mm512_load_si512((const void *) v);
}

void lut_build_avx512(void * act, int64_t K, int64_t b0, int64_t b1) {
    const int8_t * q   = (const int8_t *) act;
    uint8_t *      lut = (uint8_t *) act + q1k_act_stride(K);
    __m512i        sel[2][4];
    for (int h = 0; h < 2; h++) {
        for (int i = 0; i < 4; i++) {
            sel[h][i] = pick(h, i);
        }
    }
    const __m512i nib = _mm512_set1_epi8(0x0f), eight = _mm512_set1_epi8(8), flip = _mm512_set1_epi8((char) 0x80);
    for (int64_t s = 4 * b0; s < 4 * b1; s++) {
        const __m512i x  = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *) (q + 32 * s)));
        const __m512i ql = _mm512_and_si512(x, nib);
        // floor(q/16) = ((q + 128) >> 4) - 8, the shift done on 16-bit lanes and masked per byte
        const __m512i qh = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(_mm512_xor_si512(x, flip), 4), nib), eight);
        uint8_t * out = lut + 256 * s;
        for (int h = 0; h < 2; h++) {
            __m512i tl = _mm512_setzero_si512(), th = _mm512_setzero_si512();
            for (int i = 0; i < 4; i++) {
                tl = _mm512_mask_add_epi8(tl, kBit[i], tl, _mm512_permutexvar_epi8(sel[h][i], ql));
                th = _mm512_mask_add_epi8(th, kBit[i], th, _mm512_permutexvar_epi8(sel[h][i], qh));
            }
            _mm512_storeu_si512((void *) (out + 128 * h), tl);
            _mm512_storeu_si512((void *) (out + 128 * h + 64), th);
        }
    }
}

#include "q1_0_avx512_groups.h"

// 16 rows (one group) x NT tokens over all nb blocks; res[t] = 16 row results of token t
struct table_path {
template <int NT>
static inline void tile(const uint8_t * gbits, const uint16_t * gscale, int64_t nb, const uint8_t * act,
                 size_t act_stride, __m512 * res, bool pf) {
    for (int t = 0; t < NT; t++) {
        res[t] = _mm512_setzero_ps();
    }
    blocks<NT>(gbits, gscale, nb, 0, nb, act, act_stride, res, pf ? Q1K_PF : 0);
}

// blocks [b0, b1) of one group x NT tokens, added to accf[t] in block order (the float epilogue's
// order, so splitting the blocks into ranges changes no result); pf: prefetch distance in bytes
// (0: none), applied to the bits and, when the stream is not linear, the scales
template <int NT>
static inline void blocks(const uint8_t * gbits, const uint16_t * gscale, int64_t nb, int64_t b0, int64_t b1,
                          const uint8_t * act, size_t act_stride, __m512 * io, size_t pf) {
    const __m512i nib = _mm512_set1_epi8(0x0f), ones = _mm512_set1_epi8(1), sixteen = _mm512_set1_epi8(16);
    const __m512i slot = _mm512_set1_epi32(0x30201000);
    const size_t  rec  = q1k_act_stride(nb * Q1K_QK);
    const float *  c1[NT];
    const float *  corr[NT];
    const uint8_t * lut[NT];
    __m512 accf[NT];
    for (int t = 0; t < NT; t++) {
        const uint8_t * a = act + t * act_stride;
        c1[t]   = (const float *) (a + nb * Q1K_QK);
        corr[t] = c1[t] + nb * 4;
        lut[t]  = a + rec;
        accf[t] = io[t];
    }
    for (int64_t b = b0; b < b1; b++) {
        const uint8_t * bits = gbits + b * 256;
        __m512 bf[NT];
        if (pf > Q1K_PF && (b & 1) == 0) {  // sliced: the scales of a later group, one line per 2 blocks
            _mm_prefetch((const char *) (gscale + b * Q1K_ROWS) + pf, Q1K_PF_HINT);
        }
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            const __m512i x = _mm512_loadu_si512((const void *) (bits + c * 64));
            if (pf > 0) {
                _mm_prefetch((const char *) (bits + c * 64 + pf), Q1K_PF_HINT);
            }
            // 0xEA: (x & nib) | slot
            const __m512i ilo = _mm512_ternarylogic_epi32(x, nib, slot, 0xEA);
            const __m512i ihi = _mm512_ternarylogic_epi32(_mm512_srli_epi16(x, 4), nib, slot, 0xEA);
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                const uint8_t * L  = lut[t] + (size_t) (b * 4 + c) * 256;
                const __m512i   tl = _mm512_loadu_si512((const void *) L);
                const __m512i   th = _mm512_loadu_si512((const void *) (L + 64));
                const __m512i   ul = _mm512_loadu_si512((const void *) (L + 128));
                const __m512i   uh = _mm512_loadu_si512((const void *) (L + 192));
                __m512i sa = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_permutexvar_epi8(ilo, tl), ones);
                __m512i sb = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_permutexvar_epi8(ihi, ul), ones);
                sa = _mm512_dpbusd_epi32(sa, sixteen, _mm512_permutexvar_epi8(ilo, th));
                sb = _mm512_dpbusd_epi32(sb, sixteen, _mm512_permutexvar_epi8(ihi, uh));
                bf[t] = add_subblock(bf[t], _mm512_add_epi32(sa, sb), c1[t][b * 4 + c], c);
            }
        }
        add_block<NT>(accf, bf, gscale, corr, b);
    }
    for (int t = 0; t < NT; t++) {
        io[t] = accf[t];
    }
}
};

#ifndef Q1K_LUT_SLICE_BYTES
#define Q1K_LUT_SLICE_BYTES 16384  // tables of all tokens of a tile per K slice: they stay in L1 while
                                   // the slice sweeps the groups (a row's whole tables, 32-96 KiB per
                                   // token for the 8B shapes, were evicted by the weight stream: from
                                   // DRAM, one token took 26-42 cycles per 2048 weights at K = 4096
                                   // and 17 at K = 1024, Zen 5)
#endif

template <int NT>
inline void sliced_tile(const uint8_t * gbits, const uint16_t * gscale, int64_t nb, int64_t b0, int64_t b1,
                        const uint8_t * act, size_t act_stride, float * dst, size_t dst_stride, __mmask16 rows,
                        size_t pf) {
    __m512 acc[NT];
    for (int t = 0; t < NT; t++) {  // the partial sums of the earlier slices, kept in dst
        acc[t] = b0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(rows, dst + t * dst_stride);
    }
    table_path::blocks<NT>(gbits, gscale, nb, b0, b1, act, act_stride, acc, pf);
    for (int t = 0; t < NT; t++) {
        _mm512_mask_storeu_ps(dst + t * dst_stride, rows, acc[t]);
    }
}

// rows of groups [g0, g1) x ntok tokens, K in slices of blocks whose tables (1 KiB per block and
// token) fill Q1K_LUT_SLICE_BYTES for the largest tile: each slice runs over all the groups before
// the next, so its tables stay in L1; partial sums wait in dst
void gemm_lut_avx512(const void * w, int64_t K, int64_t nrows, int64_t g0, int64_t g1, const void * act,
                     size_t act_stride, int64_t ntok, float * dst, size_t dst_stride) {
    const int64_t nb    = K / Q1K_QK;
    const int64_t tile  = tile_tokens(ntok);
    const int64_t slice = Q1K_LUT_SLICE_BYTES / (1024 * tile) > 2 ? Q1K_LUT_SLICE_BYTES / (1024 * tile) : 2;
    if (nb <= slice) {
        gemm_groups<table_path>(w, K, nrows, g0, g1, act, act_stride, ntok, dst, dst_stride);
        return;
    }
    const size_t gstride = (size_t) nb * Q1K_GROUP_BLOCK_BYTES;
    // the same slice of the group that many groups ahead: about Q1K_PF bytes of stream ahead
    const size_t pf_groups = (Q1K_PF + (size_t) slice * 256 - 1) / ((size_t) slice * 256);
    const size_t pf        = Q1K_PF > 0 ? pf_groups * gstride : 0;
    for (int64_t b0 = 0; b0 < nb; b0 += slice) {
        const int64_t b1 = b0 + slice < nb ? b0 + slice : nb;
        for (int64_t g = g0; g < g1; g++) {
            const uint8_t *  gbits  = (const uint8_t *) w + (size_t) g * gstride;
            const uint16_t * gscale = (const uint16_t *) (gbits + (size_t) nb * 256);
            const __mmask16  rows   = group_rows(nrows, g);
            int64_t t = 0;
            while (t < ntok) {
                const uint8_t * a  = (const uint8_t *) act + t * act_stride;
                float *         o  = dst + t * dst_stride + g * Q1K_ROWS;
                const int       nt = tile_tokens(ntok - t);
                const size_t    p  = t == 0 ? pf : 0;
                switch (nt) {
                    case 8: sliced_tile<8>(gbits, gscale, nb, b0, b1, a, act_stride, o, dst_stride, rows, p); break;
                    case 4: sliced_tile<4>(gbits, gscale, nb, b0, b1, a, act_stride, o, dst_stride, rows, p); break;
                    case 2: sliced_tile<2>(gbits, gscale, nb, b0, b1, a, act_stride, o, dst_stride, rows, p); break;
                    default: sliced_tile<1>(gbits, gscale, nb, b0, b1, a, act_stride, o, dst_stride, rows, p); break;
                }
                t += nt;
            }
        }
    }
}

}  // namespace

#pragma GCC diagnostic pop
#pragma GCC pop_options

extern "C" q1k_lut_fn q1k_lut_build_avx512(void) {
    return lut_build_avx512;
}

extern "C" q1k_gemm_fn q1k_gemm_lut_avx512(void) {
    return gemm_lut_avx512;
}

#else

extern "C" q1k_lut_fn q1k_lut_build_avx512(void) {
    return 0;
}

extern "C" q1k_gemm_fn q1k_gemm_lut_avx512(void) {
    return 0;
}

#endif
