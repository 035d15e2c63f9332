// pybonsai: the decode attention kernel's body (q1_0_attn.h), written once for any vector width.
// Included by q1_0_attn.cpp (AVX2) and q1_0_attn_avx512.cpp (AVX-512) inside a namespace of their
// own, after their target pragma and their `simd` struct: v (the vector type), W (its floats),
// zero, load, store (unaligned), half (W f16 -> f32), fma, set1, mul, add, sum. The softmax works
// on 8 cells at a time with AVX2 in both. Not a standalone header.

constexpr int B = 8;  // KV cells per softmax step (one vector of scores per head)
#ifndef Q1K_ATTN_PF
#define Q1K_ATTN_PF 16  // K and V rows prefetched this many cells ahead
#endif

inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s        = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s        = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m        = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m        = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

// e^x for x <= 0: x = n ln2 + t (|t| <= ln2/2, ln2 in two parts), e^t by its degree-6 Taylor
// polynomial (relative error < 2e-7), 2^n added to the exponent. x below -87 gives ~1e-38.
inline __m256 exp_nonpositive(__m256 x) {
    x              = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 t       = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    t              = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), t);
    __m256 p       = _mm256_set1_ps(1.0f / 720);
    p              = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.0f / 120));
    p              = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.0f / 24));
    p              = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.0f / 6));
    p              = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.5f));
    p              = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.0f));
    p              = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

inline __m256 load_half8(const uint16_t * p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) p));
}

// NH query heads sharing KV head g: their scaled queries and f32 outputs ([NH][D] each, in a
// buffer of the caller), running max and sum, and the K/V rows of head g
template <int NH> struct heads {
    float *           q;
    float *           o;
    alignas(32) float p[NH][B];
    float             m[NH], s[NH];
    const uint16_t *  k0;
    const uint16_t *  v0;
};

// one softmax step of one head group over nc <= B live cells (indices j, mask values mv)
template <int NH>
void step(heads<NH> & hd, const q1k_attn_args * a, int nc, const int64_t * j, const float * mv) {
    const int64_t     D = a->D;
    alignas(32) float sc[NH][B];
    for (int c = 0; c < B; c++) {
        if (c >= nc) {
            for (int h = 0; h < NH; h++) {
                sc[h][c] = -INFINITY;
            }
            continue;
        }
        const uint16_t * krow = hd.k0 + j[c] * a->k_row / 2;
        simd::v          acc[NH], acc2[NH];  // two chains per head
        for (int h = 0; h < NH; h++) {
            acc[h]  = simd::zero();
            acc2[h] = simd::zero();
        }
        for (int64_t d = 0; d < D; d += 2 * simd::W) {
            const simd::v k0 = simd::half(krow + d);
            const simd::v k1 = d + simd::W < D ? simd::half(krow + d + simd::W) : simd::zero();
            for (int h = 0; h < NH; h++) {
                acc[h] = simd::fma(simd::load(hd.q + h * D + d), k0, acc[h]);
                if (d + simd::W < D) {
                    acc2[h] = simd::fma(simd::load(hd.q + h * D + d + simd::W), k1, acc2[h]);
                }
            }
        }
        for (int h = 0; h < NH; h++) {
            sc[h][c] = simd::sum(simd::add(acc[h], acc2[h])) + mv[c];
        }
    }
    const __m256 live = _mm256_castsi256_ps(
        _mm256_cmpgt_epi32(_mm256_set1_epi32(nc), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    for (int h = 0; h < NH; h++) {
        const __m256 sv    = _mm256_load_ps(sc[h]);
        const float  mnew  = fmaxf(hd.m[h], hmax8(sv));
        const float  alpha = mnew == hd.m[h] ? 1.0f : hd.m[h] == -INFINITY ? 0.0f : expf(hd.m[h] - mnew);
        const __m256 p     = _mm256_and_ps(exp_nonpositive(_mm256_sub_ps(sv, _mm256_set1_ps(mnew))), live);
        _mm256_store_ps(hd.p[h], p);
        hd.s[h] = hd.s[h] * alpha + hsum8(p);
        hd.m[h] = mnew;
        if (alpha != 1.0f) {
            const simd::v av = simd::set1(alpha);
            for (int64_t d = 0; d < D; d += simd::W) {
                simd::store(hd.o + h * D + d, simd::mul(simd::load(hd.o + h * D + d), av));
            }
        }
    }
    const uint16_t * vrow[B];
    for (int c = 0; c < nc; c++) {
        vrow[c] = hd.v0 + j[c] * a->v_row / 2;
    }
    for (int64_t d = 0; d < D; d += simd::W) {
        simd::v o[NH], o2[NH];  // even and odd cells: two chains per head
        for (int h = 0; h < NH; h++) {
            o[h]  = simd::load(hd.o + h * D + d);
            o2[h] = simd::zero();
        }
        int c = 0;
        for (; c + 2 <= nc; c += 2) {
            const simd::v v0 = simd::half(vrow[c] + d);
            const simd::v v1 = simd::half(vrow[c + 1] + d);
            for (int h = 0; h < NH; h++) {
                o[h]  = simd::fma(simd::set1(hd.p[h][c]), v0, o[h]);
                o2[h] = simd::fma(simd::set1(hd.p[h][c + 1]), v1, o2[h]);
            }
        }
        if (c < nc) {
            const simd::v v0 = simd::half(vrow[c] + d);
            for (int h = 0; h < NH; h++) {
                o[h] = simd::fma(simd::set1(hd.p[h][c]), v0, o[h]);
            }
        }
        for (int h = 0; h < NH; h++) {
            simd::store(hd.o + h * D + d, simd::add(o[h], o2[h]));
        }
    }
}

// Token i, KV heads [g0, g1) with NH = n_head / n_head_kv query heads each. The cells are the
// outer loop, so one pass reads each K/V row's part for all these heads (adjacent in the cache).
template <int NH> void run_token(const q1k_attn_args * a, int64_t i, int64_t g0, int64_t g1) {
    const int64_t      D  = a->D;
    const int64_t      ng = g1 - g0;
    std::vector<float> buf((size_t) (2 * NH * D * ng));
    std::vector<heads<NH>> hs((size_t) ng);
    for (int64_t g = 0; g < ng; g++) {
        heads<NH> & hd = hs[(size_t) g];
        hd.q           = buf.data() + 2 * NH * D * g;
        hd.o           = hd.q + NH * D;
        hd.k0          = a->k + (g0 + g) * a->k_head / 2;
        hd.v0          = a->v + (g0 + g) * a->v_head / 2;
        for (int h = 0; h < NH; h++) {
            const float * q  = a->q + (i * a->q_tok + ((g0 + g) * NH + h) * a->q_head) / 4;
            const simd::v sc = simd::set1(a->scale);
            for (int64_t d = 0; d < D; d += simd::W) {
                simd::store(hd.q + h * D + d, simd::mul(simd::load(q + d), sc));
                simd::store(hd.o + h * D + d, simd::zero());
            }
            hd.m[h] = -INFINITY;
            hd.s[h] = 0.0f;
        }
    }
    int64_t j[B];
    float   mv[B];
    int     nc  = 0;
    auto    prefetch = [&](int64_t cell) {  // the rows of a cell a few steps ahead, from memory
        for (int64_t g = 0; g < ng; g++) {
            const char * kp = (const char *) (hs[(size_t) g].k0 + cell * a->k_row / 2);
            const char * vp = (const char *) (hs[(size_t) g].v0 + cell * a->v_row / 2);
            for (int64_t off = 0; off < D * 2; off += 64) {
                _mm_prefetch(kp + off, _MM_HINT_T0);
                _mm_prefetch(vp + off, _MM_HINT_T0);
            }
        }
    };
    auto    add = [&](int64_t cell, float m) {
        if (!a->order && cell + Q1K_ATTN_PF < a->n_kv) {
            prefetch(cell + Q1K_ATTN_PF);
        }
        j[nc]  = cell;
        mv[nc] = m;
        if (++nc == B) {
            for (auto & hd : hs) {
                step<NH>(hd, a, nc, j, mv);
            }
            nc = 0;
        }
    };
    const uint16_t * mrow = a->mask ? a->mask + i * a->mask_row / 2 : NULL;
    int64_t          c0   = 0;
    if (a->order) {  // the caller's order (q1_0_attn.h): the visible cells first, then their rows
        std::vector<std::pair<int64_t, float>> seen;
        for (; c0 < a->n_kv; c0++) {
            const int64_t cell = a->order[c0];
            const float   m    = mrow ? _cvtsh_ss(mrow[cell]) : 0.0f;
            if (m != -INFINITY) {
                seen.emplace_back(cell, m);
            }
        }
        for (size_t n = 0; n < seen.size(); n++) {
            if (n + Q1K_ATTN_PF < seen.size()) {
                prefetch(seen[n + Q1K_ATTN_PF].first);
            }
            add(seen[n].first, seen[n].second);
        }
    } else if (mrow) {
        alignas(32) float m8[8];
        for (; c0 + 8 <= a->n_kv; c0 += 8) {  // 8 mask values at a time: skip the -inf cells
            const __m256 m  = load_half8(mrow + c0);
            unsigned     on = ~(unsigned) _mm256_movemask_ps(_mm256_cmp_ps(m, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ)) & 0xFF;
            if (on == 0) {
                continue;
            }
            _mm256_store_ps(m8, m);
            for (; on; on &= on - 1) {
                const int c = __builtin_ctz(on);
                add(c0 + c, m8[c]);
            }
        }
        for (; c0 < a->n_kv; c0++) {
            const float m = _cvtsh_ss(mrow[c0]);
            if (m != -INFINITY) {
                add(c0, m);
            }
        }
    } else {
        for (; c0 < a->n_kv; c0++) {
            add(c0, 0.0f);
        }
    }
    if (nc > 0) {
        for (auto & hd : hs) {
            step<NH>(hd, a, nc, j, mv);
        }
    }
    for (int64_t g = 0; g < ng; g++) {
        const heads<NH> & hd = hs[(size_t) g];
        for (int h = 0; h < NH; h++) {
            float *      out = a->dst + (i * a->dst_tok + ((g0 + g) * NH + h) * a->dst_head) / 4;
            const simd::v inv = simd::set1(hd.s[h] > 0.0f ? 1.0f / hd.s[h] : 0.0f);
            for (int64_t d = 0; d < D; d += simd::W) {
                simd::store(out + d, simd::mul(simd::load(hd.o + h * D + d), inv));
            }
        }
    }
}

// r query heads per KV head, not a power of two up to 8: each query head on its own (NH = 1)
void run_token_any(const q1k_attn_args * a, int64_t i, int64_t g0, int64_t g1, int64_t r) {
    q1k_attn_args one = *a;  // the same attention seen as r times as many KV heads of 1 query head
    one.n_head_kv     = a->n_head;
    one.k_head        = 0;
    one.v_head        = 0;
    for (int64_t g = g0; g < g1; g++) {
        one.k = a->k + g * a->k_head / 2;
        one.v = a->v + g * a->v_head / 2;
        one.q = a->q + g * r * a->q_head / 4;
        one.dst = a->dst + g * r * a->dst_head / 4;
        run_token<1>(&one, i, 0, r);
    }
}

void decode_range(const q1k_attn_args * a, int64_t w0, int64_t w1) {
    const int64_t r = a->n_head / a->n_head_kv;
    for (int64_t w = w0; w < w1;) {
        const int64_t i  = w / a->n_head_kv;
        const int64_t g0 = w % a->n_head_kv;
        const int64_t g1 = (w1 - i * a->n_head_kv) < a->n_head_kv ? w1 - i * a->n_head_kv : a->n_head_kv;
        switch (r) {
            case 1: run_token<1>(a, i, g0, g1); break;
            case 2: run_token<2>(a, i, g0, g1); break;
            case 4: run_token<4>(a, i, g0, g1); break;
            case 8: run_token<8>(a, i, g0, g1); break;
            default: run_token_any(a, i, g0, g1, r); break;
        }
        w = i * a->n_head_kv + g1;
    }
}
