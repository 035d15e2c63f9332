// pybonsai: Q1_0 x activation matrix-vector kernels for decode (1..8 columns) on a repacked layout.
// See q1_0_cuda.h for the API and the layout. Written for sm_80..sm_90 (works on any sm_61+).
//
// Work split: a CTA of 4 warps; each warp owns R consecutive rows (R = 1, 2 or 4, picked on the host
// so the grid still fills the GPU). Lane l walks the row's 128-weight blocks b = l, l+32, ...: one
// 128-bit load of sign bits per row per block (a warp step reads 512 contiguous bytes per row, all of
// them used) plus the block's fp16 scale; the activations of the block's four 32-weight groups are
// read with 128-bit loads and reused across the warp's R rows from registers. Per-lane partial sums
// are reduced with warp shuffles at the end; lane 0 writes R*ncols outputs.
#include "q1_0_cuda.h"

#include <cuda_fp16.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

// Kernel launches go through this macro so that the file is also plain C++ for the CPU emulation of
// the CUDA execution model (csrc/kernels/cuda/emu), which defines its own; nvcc sees <<< >>>.
#ifndef PYBONSAI_LAUNCH
#define PYBONSAI_LAUNCH(grid, block, shmem, stream, ...) __VA_ARGS__<<<grid, block, shmem, stream>>>
#endif

namespace {

constexpr int kWarp          = 32;
constexpr int kWarpsPerBlock = 4;
constexpr int kQK            = 128;  // weights per Q1_0 block
constexpr int kQG            = 32;   // weights per group (one uint32 of sign bits)

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = kWarp / 2; off > 0; off >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, off);
    }
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int off = kWarp / 2; off > 0; off >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    }
    return v;
}

// sum of the 4 byte products of a (0/1 bytes) and b (int8 bytes), plus c
__device__ __forceinline__ int dot4_u01_s8(int a, int b, int c) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 610
    return __dp4a(a, b, c);
#else  // pre-Pascal builds (ggml-cuda's 50-virtual with CUDA < 13): correct, slow
    for (int i = 0; i < 4; ++i) {
        c += ((a >> (8 * i)) & 0xff) * (int) (int8_t) ((b >> (8 * i)) & 0xff);
    }
    return c;
#endif
}

// ---- repack: ggml block_q1_0 (18 bytes, 2-byte aligned) -> 16-byte bit plane + half scale ----------
__global__ void q1_0_repack_kernel(const uint16_t * __restrict__ src, uint4 * __restrict__ bits,
                                   __half * __restrict__ scales, int64_t nblocks) {
    const int64_t i = (int64_t) blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= nblocks) {
        return;
    }
    const uint16_t * b = src + i * 9;  // 18 bytes = 9 halfwords: d, then 16 bytes of bits
    uint4 w;
    w.x = (uint32_t) b[1] | ((uint32_t) b[2] << 16);
    w.y = (uint32_t) b[3] | ((uint32_t) b[4] << 16);
    w.z = (uint32_t) b[5] | ((uint32_t) b[6] << 16);
    w.w = (uint32_t) b[7] | ((uint32_t) b[8] << 16);
    bits[i] = w;
    scales[i] = __ushort_as_half(b[0]);
}

// ---- fp32 activations ----------------------------------------------------------------------------
// sum_e s_e x_e over one group: flip x_e's sign bit where the weight bit is 0.
__device__ __forceinline__ float q1_group_dot_f32(uint32_t w, const float (&xs)[kQG]) {
    const uint32_t nw = ~w;
    float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
    for (int e = 0; e < kQG; e += 2) {
        s0 += __uint_as_float(__float_as_uint(xs[e])     ^ ((nw << (31 - e)) & 0x80000000u));
        s1 += __uint_as_float(__float_as_uint(xs[e + 1]) ^ ((nw << (30 - e)) & 0x80000000u));
    }
    return s0 + s1;
}

template <int R, int NC, bool VEC>
__global__ void __launch_bounds__(kWarp * kWarpsPerBlock)
q1_0_mmv_f32_kernel(const uint32_t * __restrict__ bits, const __half * __restrict__ scales,
                    const float * __restrict__ x, float * __restrict__ y,
                    int64_t rows, int64_t k, int64_t x_stride, int64_t y_stride) {
    const int lane = threadIdx.x % kWarp;
    const int64_t row0 = ((int64_t) blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarp) * R;
    if (row0 >= rows) {
        return;
    }
    const int64_t nb = k / kQK;

    int64_t rr[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        rr[r] = row0 + r < rows ? row0 + r : rows - 1;  // clamp: loads stay in bounds, no write
    }

    float acc[R][NC];
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            acc[r][c] = 0.0f;
        }
    }

    const uint4 * bits4 = reinterpret_cast<const uint4 *>(bits);
    for (int64_t b = lane; b < nb; b += kWarp) {
        uint4 w4[R];
        float d[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            w4[r] = __ldg(bits4 + rr[r] * nb + b);
            d[r]  = __half2float(scales[rr[r] * nb + b]);
        }
        float part[R][NC];
#pragma unroll
        for (int r = 0; r < R; ++r) {
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                part[r][c] = 0.0f;
            }
        }
#pragma unroll
        for (int g = 0; g < kQK / kQG; ++g) {
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                const float * xp = x + c * x_stride + b * kQK + g * kQG;
                float xs[kQG];
                if constexpr (VEC) {
#pragma unroll
                    for (int i = 0; i < kQG / 4; ++i) {
                        const float4 v = __ldg(reinterpret_cast<const float4 *>(xp) + i);
                        xs[4 * i + 0] = v.x;
                        xs[4 * i + 1] = v.y;
                        xs[4 * i + 2] = v.z;
                        xs[4 * i + 3] = v.w;
                    }
                } else {
#pragma unroll
                    for (int i = 0; i < kQG; ++i) {
                        xs[i] = __ldg(xp + i);
                    }
                }
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const uint32_t w = g == 0 ? w4[r].x : g == 1 ? w4[r].y : g == 2 ? w4[r].z : w4[r].w;
                    part[r][c] += q1_group_dot_f32(w, xs);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                acc[r][c] = fmaf(d[r], part[r][c], acc[r][c]);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            const float v = warp_sum(acc[r][c]);
            if (lane == 0 && row0 + r < rows) {
                y[c * y_stride + row0 + r] = v;
            }
        }
    }
}

// ---- int8 activations + dp4a -------------------------------------------------------------------
// Scratch layout for column c: qx + c*k bytes, group q at +32q as 8 int32 words; byte t of word j is
// the int8 of element 32q + 8t + j, so (w >> j) & 0x01010101 selects exactly the weight bits of the
// four elements in word j. Then ds[c*G + q] = (scale, sum of the int8 values) at an aligned offset.
__host__ __device__ inline size_t q8_ds_offset(int64_t k, int ncols) {
    return ((size_t) k * (size_t) ncols + 15) & ~(size_t) 15;
}

__global__ void q1_0_quantize_x_kernel(const float * __restrict__ x, int8_t * __restrict__ qx,
                                       float2 * __restrict__ ds, int64_t k, int ncols, int64_t x_stride) {
    const int     lane = threadIdx.x % kWarp;
    const int64_t gid  = (int64_t) blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp;
    const int64_t G    = k / kQG;
    if (gid >= G * ncols) {
        return;
    }
    const int64_t c = gid / G;
    const int64_t q = gid % G;

    const float v    = x[c * x_stride + q * kQG + lane];
    const float amax = warp_max(fabsf(v));
    const float dx   = amax / 127.0f;
    const int   qv   = amax == 0.0f ? 0 : __float2int_rn(v / dx);
    const float sumq = warp_sum((float) qv);  // exact: |sum| <= 32*127

    qx[c * k + q * kQG + (lane & 7) * 4 + (lane >> 3)] = (int8_t) qv;
    if (lane == 0) {
        ds[c * G + q] = make_float2(dx, sumq);
    }
}

template <int R, int NC>
__global__ void __launch_bounds__(kWarp * kWarpsPerBlock)
q1_0_mmv_q8_kernel(const uint32_t * __restrict__ bits, const __half * __restrict__ scales,
                   const int8_t * __restrict__ qx, const float2 * __restrict__ ds, float * __restrict__ y,
                   int64_t rows, int64_t k, int64_t y_stride) {
    const int lane = threadIdx.x % kWarp;
    const int64_t row0 = ((int64_t) blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarp) * R;
    if (row0 >= rows) {
        return;
    }
    const int64_t G  = k / kQG;
    const int64_t nb = k / kQK;

    int64_t rr[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        rr[r] = row0 + r < rows ? row0 + r : rows - 1;
    }

    float acc[R][NC];
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            acc[r][c] = 0.0f;
        }
    }

    const uint4 * bits4 = reinterpret_cast<const uint4 *>(bits);
    for (int64_t b = lane; b < nb; b += kWarp) {
        uint4 w4[R];
        float d[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            w4[r] = __ldg(bits4 + rr[r] * nb + b);
            d[r]  = __half2float(scales[rr[r] * nb + b]);
        }
#pragma unroll
        for (int g = 0; g < kQK / kQG; ++g) {
            const int64_t q = b * (kQK / kQG) + g;
            uint32_t m[R][8];  // per row: the 8 byte-lane bit masks of this group's sign word
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const uint32_t w = g == 0 ? w4[r].x : g == 1 ? w4[r].y : g == 2 ? w4[r].z : w4[r].w;
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    m[r][j] = (w >> j) & 0x01010101u;
                }
            }
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                const int4 * xp = reinterpret_cast<const int4 *>(qx + c * k + q * kQG);
                const int4   a0 = __ldg(xp);
                const int4   a1 = __ldg(xp + 1);
                const float2 s  = __ldg(ds + c * G + q);
                const int    xw[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    int dp = 0;
#pragma unroll
                    for (int j = 0; j < 8; ++j) {
                        dp = dot4_u01_s8((int) m[r][j], xw[j], dp);
                    }
                    acc[r][c] = fmaf(d[r] * s.x, (float) (2 * dp) - s.y, acc[r][c]);
                }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            const float v = warp_sum(acc[r][c]);
            if (lane == 0 && row0 + r < rows) {
                y[c * y_stride + row0 + r] = v;
            }
        }
    }
}

// ---- host side -----------------------------------------------------------------------------------
int sm_count() {
    int dev = 0;
    int n   = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) {
        n = 108;
    }
    return n;
}

// Rows per warp: more rows amortize each activation load over more weights; fewer keep enough warps
// (and bytes in flight) to saturate HBM on small matrices. Aim for >= 4 CTAs of 4 warps per SM.
int pick_rows_per_warp(int64_t rows, int ncols) {
    const int64_t min_warps = (int64_t) sm_count() * kWarpsPerBlock * 4;
    // R = 4 costs 134..174 registers/thread at ncols >= 3 with the q8 kernel (ptxas -v, sm_90); at 7..8
    // columns R = 2 (<= 110) keeps 4 CTAs per SM. Untuned: measure on a GPU.
    int r = (ncols <= 2 || ncols >= 7) ? 2 : 4;
    while (r > 1 && (rows + r - 1) / r < min_warps) {
        r /= 2;
    }
    return r;
}

bool args_ok(int64_t rows, int64_t k, int ncols) {
    return rows > 0 && k > 0 && k % kQK == 0 && ncols >= 1 && ncols <= PYBONSAI_Q1_0_CUDA_MAX_COLS;
}

template <int R, int NC>
void launch_f32(const uint32_t * bits, const __half * scales, const float * x, float * y,
                int64_t rows, int64_t k, int64_t xs, int64_t ys, cudaStream_t st) {
    const int64_t warps = (rows + R - 1) / R;
    const dim3    grid((unsigned) ((warps + kWarpsPerBlock - 1) / kWarpsPerBlock));
    const dim3    block(kWarp * kWarpsPerBlock);
    const bool    vec = ((uintptr_t) x % 16 == 0) && (xs % 4 == 0);
    if (vec) {
        PYBONSAI_LAUNCH(grid, block, 0, st, q1_0_mmv_f32_kernel<R, NC, true>)(bits, scales, x, y, rows, k, xs, ys);
    } else {
        PYBONSAI_LAUNCH(grid, block, 0, st, q1_0_mmv_f32_kernel<R, NC, false>)(bits, scales, x, y, rows, k, xs, ys);
    }
}

template <int R, int NC>
void launch_q8(const uint32_t * bits, const __half * scales, const int8_t * qx, const float2 * ds, float * y,
               int64_t rows, int64_t k, int64_t ys, cudaStream_t st) {
    const int64_t warps = (rows + R - 1) / R;
    const dim3    grid((unsigned) ((warps + kWarpsPerBlock - 1) / kWarpsPerBlock));
    const dim3    block(kWarp * kWarpsPerBlock);
    PYBONSAI_LAUNCH(grid, block, 0, st, q1_0_mmv_q8_kernel<R, NC>)(bits, scales, qx, ds, y, rows, k, ys);
}

template <int R>
void dispatch_f32(int nc, const uint32_t * b, const __half * s, const float * x, float * y,
                  int64_t rows, int64_t k, int64_t xs, int64_t ys, cudaStream_t st) {
    switch (nc) {
        case 1: launch_f32<R, 1>(b, s, x, y, rows, k, xs, ys, st); break;
        case 2: launch_f32<R, 2>(b, s, x, y, rows, k, xs, ys, st); break;
        case 3: launch_f32<R, 3>(b, s, x, y, rows, k, xs, ys, st); break;
        case 4: launch_f32<R, 4>(b, s, x, y, rows, k, xs, ys, st); break;
        case 5: launch_f32<R, 5>(b, s, x, y, rows, k, xs, ys, st); break;
        case 6: launch_f32<R, 6>(b, s, x, y, rows, k, xs, ys, st); break;
        case 7: launch_f32<R, 7>(b, s, x, y, rows, k, xs, ys, st); break;
        default: launch_f32<R, 8>(b, s, x, y, rows, k, xs, ys, st); break;
    }
}

template <int R>
void dispatch_q8(int nc, const uint32_t * b, const __half * s, const int8_t * qx, const float2 * ds, float * y,
                 int64_t rows, int64_t k, int64_t ys, cudaStream_t st) {
    switch (nc) {
        case 1: launch_q8<R, 1>(b, s, qx, ds, y, rows, k, ys, st); break;
        case 2: launch_q8<R, 2>(b, s, qx, ds, y, rows, k, ys, st); break;
        case 3: launch_q8<R, 3>(b, s, qx, ds, y, rows, k, ys, st); break;
        case 4: launch_q8<R, 4>(b, s, qx, ds, y, rows, k, ys, st); break;
        case 5: launch_q8<R, 5>(b, s, qx, ds, y, rows, k, ys, st); break;
        case 6: launch_q8<R, 6>(b, s, qx, ds, y, rows, k, ys, st); break;
        case 7: launch_q8<R, 7>(b, s, qx, ds, y, rows, k, ys, st); break;
        default: launch_q8<R, 8>(b, s, qx, ds, y, rows, k, ys, st); break;
    }
}

}  // namespace

extern "C" size_t pybonsai_q1_0_cuda_bits_bytes(int64_t rows, int64_t k) {
    return (size_t) rows * (size_t) (k / kQK) * 16;
}

extern "C" size_t pybonsai_q1_0_cuda_scales_bytes(int64_t rows, int64_t k) {
    return (size_t) rows * (size_t) (k / kQK) * sizeof(__half);
}

extern "C" cudaError_t pybonsai_q1_0_cuda_repack(const void * q1_0_blocks, void * bits, void * scales,
                                                 int64_t rows, int64_t k, cudaStream_t stream) {
    if (rows <= 0 || k <= 0 || k % kQK != 0 || (uintptr_t) q1_0_blocks % 2 != 0 || (uintptr_t) bits % 16 != 0 ||
        (uintptr_t) scales % 2 != 0) {
        return cudaErrorInvalidValue;
    }
    const int64_t n = rows * (k / kQK);
    const int     threads = 256;
    PYBONSAI_LAUNCH((unsigned) ((n + threads - 1) / threads), threads, 0, stream, q1_0_repack_kernel)(
        static_cast<const uint16_t *>(q1_0_blocks), static_cast<uint4 *>(bits), static_cast<__half *>(scales), n);
    return cudaGetLastError();
}

namespace {

// The two mat-vec paths with the rows per warp R given (1, 2 or 4; the fp32 path runs 4 as 2).
cudaError_t mmv_f32_rows(int R, const void * bits, const void * scales, const float * x, float * y, int64_t rows,
                         int64_t k, int ncols, int64_t x_stride, int64_t y_stride, cudaStream_t stream) {
    if (!args_ok(rows, k, ncols) || (uintptr_t) bits % 16 != 0) {
        return cudaErrorInvalidValue;
    }
    const uint32_t * b = static_cast<const uint32_t *>(bits);
    const __half *   s = static_cast<const __half *>(scales);
    // R = 4 with fp32 activations needs ~240 registers per thread (ptxas -v, sm_90): at most 2 here
    switch (R) {
        case 4:
        case 2:  dispatch_f32<2>(ncols, b, s, x, y, rows, k, x_stride, y_stride, stream); break;
        default: dispatch_f32<1>(ncols, b, s, x, y, rows, k, x_stride, y_stride, stream); break;
    }
    return cudaGetLastError();
}

cudaError_t mmv_q8_rows(int R, const void * bits, const void * scales, const float * x, float * y, int64_t rows,
                        int64_t k, int ncols, int64_t x_stride, int64_t y_stride, void * scratch,
                        cudaStream_t stream) {
    if (!args_ok(rows, k, ncols) || (uintptr_t) bits % 16 != 0 || scratch == nullptr ||
        (uintptr_t) scratch % 16 != 0) {
        return cudaErrorInvalidValue;
    }
    int8_t * qx = static_cast<int8_t *>(scratch);
    float2 * ds = reinterpret_cast<float2 *>(static_cast<char *>(scratch) + q8_ds_offset(k, ncols));

    const int64_t groups      = (k / kQG) * ncols;
    const int     warps_per_b = 8;
    PYBONSAI_LAUNCH((unsigned) ((groups + warps_per_b - 1) / warps_per_b), kWarp * warps_per_b, 0, stream,
                    q1_0_quantize_x_kernel)(x, qx, ds, k, ncols, x_stride);

    const uint32_t * b = static_cast<const uint32_t *>(bits);
    const __half *   s = static_cast<const __half *>(scales);
    switch (R) {
        case 4:  dispatch_q8<4>(ncols, b, s, qx, ds, y, rows, k, y_stride, stream); break;
        case 2:  dispatch_q8<2>(ncols, b, s, qx, ds, y, rows, k, y_stride, stream); break;
        default: dispatch_q8<1>(ncols, b, s, qx, ds, y, rows, k, y_stride, stream); break;
    }
    return cudaGetLastError();
}

}  // namespace

extern "C" cudaError_t pybonsai_q1_0_cuda_mmv(const void * bits, const void * scales, const float * x, float * y,
                                              int64_t rows, int64_t k, int ncols, int64_t x_stride,
                                              int64_t y_stride, cudaStream_t stream) {
    return mmv_f32_rows(args_ok(rows, k, ncols) ? pick_rows_per_warp(rows, ncols) : 1, bits, scales, x, y, rows, k,
                        ncols, x_stride, y_stride, stream);
}

extern "C" size_t pybonsai_q1_0_cuda_mmv_q8_scratch_bytes(int64_t k, int ncols) {
    return q8_ds_offset(k, ncols) + (size_t) ncols * (size_t) (k / kQG) * sizeof(float2);
}

extern "C" cudaError_t pybonsai_q1_0_cuda_mmv_q8(const void * bits, const void * scales, const float * x, float * y,
                                                 int64_t rows, int64_t k, int ncols, int64_t x_stride,
                                                 int64_t y_stride, void * scratch, cudaStream_t stream) {
    return mmv_q8_rows(args_ok(rows, k, ncols) ? pick_rows_per_warp(rows, ncols) : 1, bits, scales, x, y, rows, k,
                       ncols, x_stride, y_stride, scratch, stream);
}

// ---- repack cache for the ggml-cuda hook ---------------------------------------------------------
namespace {

struct CacheEntry {
    int64_t rows  = 0;
    int64_t k     = 0;
    size_t  src_bytes = 0;
    int     device    = 0;
    void *  mem       = nullptr;  // bits, then scales at bits_bytes (16-aligned)
};

struct Cache {
    std::mutex mu;
    std::map<std::pair<int, const void *>, CacheEntry> entries;
};

Cache & cache() {
    static Cache * c = new Cache();  // never destroyed: no cudaFree after the driver shut down at exit
    return *c;
}

void free_entry(const CacheEntry & e) {
    int cur = -1;
    cudaGetDevice(&cur);
    if (cur != e.device) {
        cudaSetDevice(e.device);
    }
    cudaFree(e.mem);
    if (cur >= 0 && cur != e.device) {
        cudaSetDevice(cur);
    }
}

}  // namespace

extern "C" int pybonsai_q1_0_cuda_parse_mode(const char * v) {
    if (v == nullptr || *v == '\0' || std::strcmp(v, "upstream") == 0) {
        return PYBONSAI_Q1_0_CUDA_UPSTREAM;  // the default until ours is measured on a GPU
    }
    if (std::strcmp(v, "ours") == 0 || std::strcmp(v, "q8") == 0) {
        return PYBONSAI_Q1_0_CUDA_OURS_Q8;
    }
    if (std::strcmp(v, "f32") == 0) {
        return PYBONSAI_Q1_0_CUDA_OURS_F32;
    }
    return -1;
}

extern "C" int pybonsai_q1_0_cuda_mode(void) {
    static const int mode = [] {
        const char * v = std::getenv("PYBONSAI_CUDA_Q1");
        const int    m = pybonsai_q1_0_cuda_parse_mode(v);
        if (m < 0) {
            std::fprintf(stderr, "pybonsai: unknown PYBONSAI_CUDA_Q1=%s (expected upstream|ours|f32); using upstream\n", v);
            return (int) PYBONSAI_Q1_0_CUDA_UPSTREAM;
        }
        return m;
    }();
    return mode;
}

extern "C" int pybonsai_q1_0_cuda_route_mode(const pybonsai_q1_0_cuda_node * n, int mode) {
    const bool ours = mode == PYBONSAI_Q1_0_CUDA_OURS_Q8 || mode == PYBONSAI_Q1_0_CUDA_OURS_F32;
    const bool fits = n->src0_q1_0 && n->src1_f32 && n->dst_f32 && n->src0_weights && n->src0_contiguous &&
                      n->src0_ne[0] > 0 && n->src0_ne[0] % kQK == 0 && n->src0_ne[1] > 0 &&
                      n->src0_ne[2] == 1 && n->src0_ne[3] == 1 && n->src1_ne[0] == n->src0_ne[0] &&
                      n->src1_ne[1] >= 1 && n->src1_ne[1] <= PYBONSAI_Q1_0_CUDA_MAX_COLS &&
                      n->src1_ne[2] == 1 && n->src1_ne[3] == 1 &&
                      n->src1_nb[0] == sizeof(float) && n->src1_nb[1] % sizeof(float) == 0 &&
                      n->src1_nb[1] >= (size_t) n->src1_ne[0] * sizeof(float) &&
                      n->dst_nb[0] == sizeof(float) && n->dst_nb[1] % sizeof(float) == 0 &&
                      n->dst_nb[1] >= (size_t) n->src0_ne[1] * sizeof(float);
    return ours && fits ? mode : PYBONSAI_Q1_0_CUDA_UPSTREAM;
}

extern "C" int pybonsai_q1_0_cuda_route(const pybonsai_q1_0_cuda_node * n) {
    return pybonsai_q1_0_cuda_route_mode(n, pybonsai_q1_0_cuda_mode());
}

extern "C" cudaError_t pybonsai_q1_0_cuda_cache_get(const void * q1_0_blocks, int64_t rows, int64_t k,
                                                    cudaStream_t stream, int may_build, const void ** bits,
                                                    const void ** scales) {
    *bits   = nullptr;
    *scales = nullptr;
    if (rows <= 0 || k <= 0 || k % kQK != 0) {
        return cudaErrorInvalidValue;
    }
    int dev = 0;
    cudaError_t err = cudaGetDevice(&dev);
    if (err != cudaSuccess) {
        return err;
    }
    const size_t bits_bytes = pybonsai_q1_0_cuda_bits_bytes(rows, k);
    Cache & c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    const auto key = std::make_pair(dev, q1_0_blocks);
    auto it = c.entries.find(key);
    if (it != c.entries.end() && (it->second.rows != rows || it->second.k != k)) {
        free_entry(it->second);  // same address, other shape: a stale entry
        c.entries.erase(it);
        it = c.entries.end();
    }
    if (it == c.entries.end()) {
        if (!may_build) {
            return cudaSuccess;
        }
        CacheEntry e;
        e.rows      = rows;
        e.k         = k;
        e.src_bytes = (size_t) rows * (size_t) (k / kQK) * 18;
        e.device    = dev;
        err = cudaMalloc(&e.mem, bits_bytes + pybonsai_q1_0_cuda_scales_bytes(rows, k));
        if (err != cudaSuccess) {
            return err;
        }
        err = pybonsai_q1_0_cuda_repack(q1_0_blocks, e.mem, static_cast<char *>(e.mem) + bits_bytes, rows, k, stream);
        if (err != cudaSuccess) {
            cudaFree(e.mem);
            return err;
        }
        it = c.entries.emplace(key, e).first;
    }
    *bits   = it->second.mem;
    *scales = static_cast<const char *>(it->second.mem) + bits_bytes;
    return cudaSuccess;
}

extern "C" void pybonsai_q1_0_cuda_cache_evict(const void * begin, size_t size) {
    const char * lo = static_cast<const char *>(begin);
    const char * hi = lo + size;
    Cache & c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    for (auto it = c.entries.begin(); it != c.entries.end();) {
        const char * s = static_cast<const char *>(it->first.second);
        if (s < hi && s + it->second.src_bytes > lo) {
            free_entry(it->second);
            it = c.entries.erase(it);
        } else {
            ++it;
        }
    }
}
