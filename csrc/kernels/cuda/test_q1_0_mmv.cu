// pybonsai: correctness check of csrc/kernels/cuda/q1_0_mmv.cu against a CPU scalar reference.
// Random Q1_0 blocks (ggml layout) -> device -> our repack -> both mmv paths (fp32, q8+dp4a) at
// awkward sizes (rows not a multiple of 4*R, k = 128 * odd, ncols 1..8, padded strides), through the
// public API (rows per warp picked by the heuristic) and with every rows-per-warp choice forced.
// Exit 0 + "ALL OK" on success, 1 on a mismatch, 77 when there is no CUDA device.
//
// One translation unit with the kernels (it includes q1_0_mmv.cu, to reach the internal
// entry points). Built two ways, both from these unchanged sources:
//   nvcc -arch=sm_90 -I. test_q1_0_mmv.cu                     -> runs on a GPU (full size list)
//   g++ -x c++ -Iemu -I. test_q1_0_mmv.cu, run with --emulated -> the CUDA execution model on the
//     CPU (emu/cuda_emu.h), a size list chosen to cover every path in seconds
// Other modes: --mode (print pybonsai_q1_0_cuda_mode() for this environment), --route (routing table).
#include "q1_0_mmv.cu"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cuda_fp16.h>
#include <vector>

namespace {

uint64_t g_rng = 0x9E3779B97F4A7C15ull;
uint32_t rnd() {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t) (g_rng >> 16);
}
float rndf() { return (float) (rnd() & 0xFFFFFF) / (float) 0x1000000 * 2.0f - 1.0f; }

#define CHECK(call)                                                                              \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess) {                                                                 \
            std::printf("CUDA error %s at %s:%d: %s\n", cudaGetErrorName(e_), __FILE__, __LINE__, \
                        cudaGetErrorString(e_));                                                 \
            std::exit(1);                                                                        \
        }                                                                                        \
    } while (0)

int g_checks = 0;  // mat-vec runs compared with the reference
int g_cases  = 0;
bool g_fail_fast = false;  // --emulated: stop after the first failing case (its lines are printed)

// One case: returns the number of failures. rpw: the rows-per-warp values to force (0 = the
// public API, which picks one).
int run_case(int64_t rows, int64_t k, int ncols, int64_t x_pad, int64_t y_pad,
             std::vector<int> rpw = {0}) {
    static int failed_before = 0;
    if (g_fail_fast && failed_before) {
        return 0;
    }
    ++g_cases;
    const int64_t nb = k / 128;
    std::vector<uint8_t> w((size_t) (rows * nb * 18));
    std::vector<float>   wd((size_t) (rows * k));  // dequantized reference weights
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t b = 0; b < nb; ++b) {
            uint8_t *    blk = &w[(size_t) ((r * nb + b) * 18)];
            const float  dv  = 0.01f + 0.05f * (float) (rnd() % 1000) / 1000.0f;
            const __half h   = __float2half(dv);
            std::memcpy(blk, &h, 2);
            const float d = __half2float(h);
            for (int i = 0; i < 16; ++i) {
                blk[2 + i] = (uint8_t) rnd();
                for (int j = 0; j < 8; ++j) {
                    wd[(size_t) (r * k + b * 128 + 8 * i + j)] = ((blk[2 + i] >> j) & 1) ? d : -d;
                }
            }
        }
    }
    const int64_t xs = k + x_pad, ys = rows + y_pad;
    std::vector<float> x((size_t) (xs * ncols), 1e30f);  // padding poisoned
    for (int c = 0; c < ncols; ++c) {
        for (int64_t i = 0; i < k; ++i) {
            x[(size_t) (c * xs + i)] = rndf() * (i % 97 == 0 ? 8.0f : 1.0f);  // a few outliers
        }
    }
    // ref: exact-ish sum; mag: sum |w x| (fp32 rounding scale); qerr: worst case of the int8 step,
    // sum |w_i| * amax(group of i) / 254 (round-to-nearest of x_i / (amax/127)).
    std::vector<double> ref((size_t) (rows * ncols)), mag((size_t) (rows * ncols)), qerr((size_t) (rows * ncols));
    for (int c = 0; c < ncols; ++c) {
        std::vector<double> amax((size_t) (k / 32), 0.0);
        for (int64_t i = 0; i < k; ++i) {
            amax[(size_t) (i / 32)] = std::fmax(amax[(size_t) (i / 32)], std::fabs(x[(size_t) (c * xs + i)]));
        }
        for (int64_t r = 0; r < rows; ++r) {
            double s = 0, m = 0, q = 0;
            for (int64_t i = 0; i < k; ++i) {
                const double wv = wd[(size_t) (r * k + i)];
                const double p  = wv * x[(size_t) (c * xs + i)];
                s += p;
                m += std::fabs(p);
                q += std::fabs(wv) * amax[(size_t) (i / 32)] / 254.0;
            }
            ref[(size_t) (c * rows + r)]  = s;
            mag[(size_t) (c * rows + r)]  = m;
            qerr[(size_t) (c * rows + r)] = q;
        }
    }

    void *  d_w = nullptr, *d_bits = nullptr, *d_scales = nullptr, *d_scratch = nullptr;
    float * d_x = nullptr, *d_y = nullptr;
    const size_t scratch_bytes = pybonsai_q1_0_cuda_mmv_q8_scratch_bytes(k, ncols);
    CHECK(cudaMalloc(&d_w, w.size()));
    CHECK(cudaMalloc(&d_bits, pybonsai_q1_0_cuda_bits_bytes(rows, k)));
    CHECK(cudaMalloc(&d_scales, pybonsai_q1_0_cuda_scales_bytes(rows, k)));
    CHECK(cudaMalloc(&d_scratch, scratch_bytes));
    CHECK(cudaMalloc(&d_x, x.size() * sizeof(float)));
    CHECK(cudaMalloc(&d_y, (size_t) (ys * ncols) * sizeof(float)));
    CHECK(cudaMemcpy(d_w, w.data(), w.size(), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(d_x, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice));
    CHECK(pybonsai_q1_0_cuda_repack(d_w, d_bits, d_scales, rows, k, 0));

    // the repacked layout itself, bit for bit
    int fails = 0;
    {
        std::vector<uint8_t>  bits(pybonsai_q1_0_cuda_bits_bytes(rows, k));
        std::vector<uint16_t> sc((size_t) (rows * nb));
        CHECK(cudaMemcpy(bits.data(), d_bits, bits.size(), cudaMemcpyDeviceToHost));
        CHECK(cudaMemcpy(sc.data(), d_scales, sc.size() * 2, cudaMemcpyDeviceToHost));
        for (int64_t i = 0; i < rows * nb && fails < 5; ++i) {
            if (std::memcmp(&bits[(size_t) (i * 16)], &w[(size_t) (i * 18 + 2)], 16) != 0 ||
                std::memcmp(&sc[(size_t) i], &w[(size_t) (i * 18)], 2) != 0) {
                std::printf("FAIL repack rows=%lld k=%lld block %lld\n", (long long) rows, (long long) k, (long long) i);
                ++fails;
            }
        }
    }

    std::vector<float> y((size_t) (ys * ncols));
    for (int variant = 0; variant < 2 * (int) rpw.size(); ++variant) {
        const int path = variant % 2, R = rpw[(size_t) (variant / 2)];
        if (path == 0 && R == 4) {
            continue;  // the fp32 path runs R = 4 as 2
        }
        ++g_checks;
        CHECK(cudaMemset(d_y, 0xFF, y.size() * sizeof(float)));  // NaN pattern: padding must stay untouched
        cudaError_t e;
        if (R == 0) {
            e = path == 0 ? pybonsai_q1_0_cuda_mmv(d_bits, d_scales, d_x, d_y, rows, k, ncols, xs, ys, 0)
                          : pybonsai_q1_0_cuda_mmv_q8(d_bits, d_scales, d_x, d_y, rows, k, ncols, xs, ys, d_scratch, 0);
        } else {
            e = path == 0 ? mmv_f32_rows(R, d_bits, d_scales, d_x, d_y, rows, k, ncols, xs, ys, 0)
                          : mmv_q8_rows(R, d_bits, d_scales, d_x, d_y, rows, k, ncols, xs, ys, d_scratch, 0);
        }
        CHECK(e);
        CHECK(cudaDeviceSynchronize());
        CHECK(cudaMemcpy(y.data(), d_y, y.size() * sizeof(float), cudaMemcpyDeviceToHost));
        // fp32: rounding only; q8: plus the int8 activation step (per-32 absmax scale)
        for (int c = 0; c < ncols && fails < 10; ++c) {
            for (int64_t r = 0; r < rows && fails < 10; ++r) {
                const double got = y[(size_t) (c * ys + r)];
                const double want = ref[(size_t) (c * rows + r)];
                const double tol = 1e-5 * mag[(size_t) (c * rows + r)] + 1e-6 +
                                   (path == 1 ? 1.01 * qerr[(size_t) (c * rows + r)] : 0.0);
                if (!(std::fabs(got - want) <= tol)) {
                    std::printf("FAIL %s R=%d rows=%lld k=%lld ncols=%d col=%d row=%lld got=%.6g want=%.6g tol=%.3g\n",
                                path == 0 ? "f32" : "q8", R, (long long) rows, (long long) k, ncols, c,
                                (long long) r, got, want, tol);
                    ++fails;
                }
            }
            for (int64_t r = rows; r < ys && fails < 10; ++r) {
                uint32_t u;
                std::memcpy(&u, &y[(size_t) (c * ys + r)], 4);
                if (u != 0xFFFFFFFFu) {
                    std::printf("FAIL %s wrote padding rows=%lld col=%d row=%lld\n", path == 0 ? "f32" : "q8",
                                (long long) rows, c, (long long) r);
                    ++fails;
                }
            }
        }
    }
    CHECK(cudaFree(d_w));
    CHECK(cudaFree(d_bits));
    CHECK(cudaFree(d_scales));
    CHECK(cudaFree(d_scratch));
    CHECK(cudaFree(d_x));
    CHECK(cudaFree(d_y));
    std::printf("%s rows=%lld k=%lld ncols=%d xs=%lld ys=%lld R=", fails ? "FAIL" : "ok  ", (long long) rows,
                (long long) k, ncols, (long long) xs, (long long) ys);
    for (int R : rpw) {
        std::printf(R ? "%d," : "auto(%d),", R ? R : pick_rows_per_warp(rows, ncols));
    }
    std::printf("\n");
    failed_before += fails;
    return fails;
}

// The routing decision (pybonsai_q1_0_cuda_route_mode): what ggml nodes our kernels take.
int check_routing() {
    pybonsai_q1_0_cuda_node base = {};
    base.src0_q1_0 = base.src1_f32 = base.dst_f32 = base.src0_contiguous = base.src0_weights = 1;
    const int64_t k = 4096, rows = 1024;
    const int64_t ne0[4] = {k, rows, 1, 1}, ne1[4] = {k, 1, 1, 1};
    std::memcpy(base.src0_ne, ne0, sizeof ne0);
    std::memcpy(base.src1_ne, ne1, sizeof ne1);
    base.src1_nb[0] = base.dst_nb[0] = 4;
    base.src1_nb[1] = k * 4;
    base.dst_nb[1]  = rows * 4;
    struct Case {
        const char * what;
        void (*edit)(pybonsai_q1_0_cuda_node &);
        bool ours;
    };
    const Case cases[] = {
        {"decode 1 column", [](pybonsai_q1_0_cuda_node &) {}, true},
        {"8 columns", [](pybonsai_q1_0_cuda_node & n) { n.src1_ne[1] = 8; n.src1_nb[1] = 4096 * 4 + 64; }, true},
        {"9 columns (prefill: upstream MMQ)", [](pybonsai_q1_0_cuda_node & n) { n.src1_ne[1] = 9; }, false},
        {"strided activations (row stride > k)", [](pybonsai_q1_0_cuda_node & n) { n.src1_ne[1] = 3; n.src1_nb[1] = 4096 * 4 * 2; }, true},
        {"activation row stride not a float multiple", [](pybonsai_q1_0_cuda_node & n) { n.src1_ne[1] = 2; n.src1_nb[1] = 4096 * 4 + 2; }, false},
        {"non-unit element stride (transposed view)", [](pybonsai_q1_0_cuda_node & n) { n.src1_nb[0] = 8; }, false},
        {"overlapping activation rows", [](pybonsai_q1_0_cuda_node & n) { n.src1_ne[1] = 2; n.src1_nb[1] = 4; }, false},
        {"not Q1_0", [](pybonsai_q1_0_cuda_node & n) { n.src0_q1_0 = 0; }, false},
        {"F16 activations", [](pybonsai_q1_0_cuda_node & n) { n.src1_f32 = 0; }, false},
        {"F16 output", [](pybonsai_q1_0_cuda_node & n) { n.dst_f32 = 0; }, false},
        {"weight not contiguous", [](pybonsai_q1_0_cuda_node & n) { n.src0_contiguous = 0; }, false},
        {"weight in a compute buffer", [](pybonsai_q1_0_cuda_node & n) { n.src0_weights = 0; }, false},
        {"k not a multiple of 128", [](pybonsai_q1_0_cuda_node & n) { n.src0_ne[0] = n.src1_ne[0] = 4000; }, false},
        {"batched weight (ne2 > 1)", [](pybonsai_q1_0_cuda_node & n) { n.src0_ne[2] = 2; n.src1_ne[2] = 2; }, false},
        {"batched activations (ne2 > 1)", [](pybonsai_q1_0_cuda_node & n) { n.src1_ne[2] = 2; }, false},
        {"output row stride < rows", [](pybonsai_q1_0_cuda_node & n) { n.src1_ne[1] = 2; n.dst_nb[1] = 4; }, false},
    };
    int fails = 0;
    for (const Case & c : cases) {
        pybonsai_q1_0_cuda_node n = base;
        c.edit(n);
        for (int mode : {PYBONSAI_Q1_0_CUDA_UPSTREAM, PYBONSAI_Q1_0_CUDA_OURS_Q8, PYBONSAI_Q1_0_CUDA_OURS_F32}) {
            const int want = c.ours ? mode : PYBONSAI_Q1_0_CUDA_UPSTREAM;
            const int got  = pybonsai_q1_0_cuda_route_mode(&n, mode);
            if (got != want) {
                std::printf("FAIL route %s mode=%d: got %d want %d\n", c.what, mode, got, want);
                ++fails;
            }
        }
        std::printf("route %-45s -> %s\n", c.what, c.ours ? "ours (when opted in)" : "upstream");
    }
    return fails;
}

}  // namespace

int main(int argc, char ** argv) {
    const bool emulated = argc > 1 && std::strcmp(argv[1], "--emulated") == 0;
    if (argc > 1 && std::strcmp(argv[1], "--mode") == 0) {
        std::printf("mode=%d\n", pybonsai_q1_0_cuda_mode());
        return 0;
    }
    if (argc > 1 && std::strcmp(argv[1], "--route") == 0) {
        const int f = check_routing();
        std::printf(f ? "ROUTING FAILURES\n" : "ROUTING OK\n");
        return f ? 1 : 0;
    }
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        std::printf("no CUDA device: skipping\n");
        return 77;
    }
    // invalid arguments are refused, not launched
    if (pybonsai_q1_0_cuda_mmv(nullptr, nullptr, nullptr, nullptr, 4, 100, 1, 100, 4, 0) != cudaErrorInvalidValue ||
        pybonsai_q1_0_cuda_mmv(nullptr, nullptr, nullptr, nullptr, 4, 128, 9, 128, 4, 0) != cudaErrorInvalidValue) {
        std::printf("FAIL argument checks\n");
        return 1;
    }
    int fails = check_routing();
    const std::vector<int> all_r = {0, 1, 2, 4};
    g_fail_fast = emulated;
    if (emulated) {
        // Every path at every rows-per-warp choice, 1..8 columns, odd row counts, K 128..12288, both
        // activation load paths (16-byte vectors when the column stride allows, scalar otherwise).
        for (int nc = 1; nc <= PYBONSAI_Q1_0_CUDA_MAX_COLS; ++nc) {
            fails += run_case(37, 384, nc, (nc % 2) ? 0 : 3, (nc % 3) ? 0 : 5, all_r);
        }
        for (int64_t k : {128, 1152, 4224, 12288}) {
            for (int nc : {1, 3, 8}) {
                fails += run_case(9, k, nc, nc == 3 ? 4 : 0, nc == 8 ? 2 : 0, all_r);
            }
        }
        fails += run_case(1, 256, 2, 1, 0, all_r);
        fails += run_case(5, 640, 4, 4 * 128 + 1, 3, all_r);  // a column stride of 5 k + 1 floats
        // the heuristic's picks (PYBONSAI_EMU_SM_COUNT=1: >= 16 warps wanted): R = 1, 2 and 4 taken
        fails += run_case(29, 256, 1, 0, 0);   // R = 1
        fails += run_case(61, 256, 2, 0, 0);   // R = 2
        fails += run_case(67, 256, 4, 0, 0);   // R = 4
        fails += run_case(131, 256, 7, 0, 0);  // R = 2 (7..8 columns)
    }
    const int64_t rows_list[] = {1, 3, 17, 33, 127, 1001, 4099};
    const int64_t k_list[]    = {128, 384, 1152, 2560 + 128, 4224};
    for (int64_t rows : emulated ? std::vector<int64_t>{} : std::vector<int64_t>(std::begin(rows_list), std::end(rows_list))) {
        for (int64_t k : k_list) {
            if (rows * k > 4099LL * 1152) {
                continue;  // keep the CPU reference quick
            }
            for (int nc = 1; nc <= PYBONSAI_Q1_0_CUDA_MAX_COLS; ++nc) {
                fails += run_case(rows, k, nc, (nc % 2) ? 0 : 3, (nc % 3) ? 0 : 5);
            }
        }
    }
    if (!emulated) {
        // every rows-per-warp choice at a few shapes, then a decode-sized matrix (with the many-warps
        // R=1 pick) and big ones (R=2/4 picks)
        fails += run_case(1001, 1152, 3, 0, 0, all_r);
        fails += run_case(4099, 12288, 8, 4, 1, all_r);
        fails += run_case(2048, 2048 + 128 * 3, 1, 0, 0);
        fails += run_case(6001, 384, 2, 0, 2);
        fails += run_case(24001, 640, 5, 4, 1);
        fails += run_case(40000, 384, 8, 0, 0);
    }
    // the repack cache used by the ggml hook: miss without build, build, hit, evict
    {
        const int64_t rows = 77, k = 640, nb = k / 128;
        std::vector<uint8_t> w((size_t) (rows * nb * 18));
        for (auto & b : w) {
            b = (uint8_t) rnd();
        }
        for (int64_t i = 0; i < rows * nb; ++i) {
            const __half h = __float2half(0.03f);
            std::memcpy(&w[(size_t) (i * 18)], &h, 2);
        }
        void * d_w = nullptr;
        CHECK(cudaMalloc(&d_w, w.size()));
        CHECK(cudaMemcpy(d_w, w.data(), w.size(), cudaMemcpyHostToDevice));
        const void *b1 = nullptr, *s1 = nullptr, *b2 = nullptr, *s2 = nullptr;
        CHECK(pybonsai_q1_0_cuda_cache_get(d_w, rows, k, 0, 0, &b1, &s1));
        const bool miss_ok = b1 == nullptr && s1 == nullptr;
        CHECK(pybonsai_q1_0_cuda_cache_get(d_w, rows, k, 0, 1, &b1, &s1));
        CHECK(pybonsai_q1_0_cuda_cache_get(d_w, rows, k, 0, 0, &b2, &s2));
        std::vector<uint8_t> bits(pybonsai_q1_0_cuda_bits_bytes(rows, k));
        CHECK(cudaDeviceSynchronize());
        CHECK(cudaMemcpy(bits.data(), b1, bits.size(), cudaMemcpyDeviceToHost));
        bool same = true;
        for (int64_t i = 0; i < rows * nb; ++i) {
            same = same && std::memcmp(&bits[(size_t) (i * 16)], &w[(size_t) (i * 18 + 2)], 16) == 0;
        }
        pybonsai_q1_0_cuda_cache_evict((const char *) d_w + 18 * 5, 1);
        const void *b3 = nullptr, *s3 = nullptr;
        CHECK(pybonsai_q1_0_cuda_cache_get(d_w, rows, k, 0, 0, &b3, &s3));
        if (!miss_ok || b1 == nullptr || b1 != b2 || s1 != s2 || !same || b3 != nullptr) {
            std::printf("FAIL repack cache (miss=%d hit=%d same=%d evicted=%d)\n", miss_ok, b1 != nullptr && b1 == b2,
                        same, b3 == nullptr);
            ++fails;
        } else {
            std::printf("ok   repack cache\n");
        }
        CHECK(cudaFree(d_w));
    }
    std::printf("%d cases, %d mat-vec runs checked against the reference\n", g_cases, g_checks);
    if (fails) {
        std::printf("%d FAILURES\n", fails);
        return 1;
    }
    std::printf("ALL OK\n");
    return 0;
}
