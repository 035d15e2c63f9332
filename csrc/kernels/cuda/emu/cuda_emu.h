// pybonsai: the CUDA execution model on the CPU, for testing our CUDA sources (csrc/kernels/cuda/*.cu)
// without a GPU. The sources are compiled unchanged as host C++ (g++ -x c++ -I csrc/kernels/cuda/emu):
// this directory's cuda_runtime.h / cuda_fp16.h stand in for the toolkit's and include this file.
//
// What it models:
//  - a launch runs every block of the grid, one after the other; the threads of a block run
//    CONCURRENTLY as cooperative fibers (ucontext), each on its own stack, switched at every
//    synchronization point: __syncthreads, __syncwarp, __shfl_*_sync, __ballot/any/all_sync. So
//    warp-synchronous code (shuffle reductions) exchanges values exactly as on a GPU, and the result
//    does not depend on the order the threads happen to run in. Deterministic; one OS thread.
//  - warps of 32 (lane = linear thread index % 32). A *_sync with a mask that leaves out the calling
//    lane, names a lane that has exited, or a lane waiting for partners that never come (deadlock)
//    aborts with a message: those are undefined behaviour on a GPU.
//  - __shared__ is per block (static storage, reused by the next block, like uninitialized smem).
//  - the intrinsics our kernels use with their documented semantics: __dp4a, __byte_perm, __ldg,
//    __half <-> float (round to nearest even), bit casts, __float2int_rn, vector types.
//  - a runtime API subset: cudaMalloc/Free/Memcpy/Memset (host memory), streams are synchronous,
//    one device whose SM count is PYBONSAI_EMU_SM_COUNT (default 4: steers our launch heuristics).
// Not modelled: memory coalescing, timing, occupancy, __launch_bounds__ (accepted, ignored).
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

// ---- qualifiers ------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __constant__ static
#define __launch_bounds__(...)
#ifndef __restrict__
#define __restrict__ __restrict
#endif

// ---- vector types --------------------------------------------------------------------------
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct uint3 { unsigned x, y, z; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// ---- half precision ----------------------------------------------------------------------------
struct __half {
    uint16_t x;
};
struct __half2 {
    __half x, y;
};
inline float __half2float(__half h) {
    const uint32_t sign = (uint32_t) (h.x >> 15) << 31;
    const uint32_t exp  = (h.x >> 10) & 0x1f;
    uint32_t       man  = h.x & 0x3ff;
    uint32_t       bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);  // inf / nan
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {  // subnormal: normalize
        int e = -1;
        do {
            ++e;
            man <<= 1;
        } while ((man & 0x400) == 0);
        bits = sign | ((uint32_t) (112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
inline __half __float2half_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint16_t sign = (uint16_t) ((u >> 16) & 0x8000);
    const uint32_t a    = u & 0x7fffffffu;
    __half         h;
    if (a >= 0x7f800000u) {  // inf / nan
        h.x = (uint16_t) (sign | 0x7c00 | (a > 0x7f800000u ? 0x200 : 0));
        return h;
    }
    if (a >= 0x477ff000u) {  // rounds to >= 65520: inf
        h.x = (uint16_t) (sign | 0x7c00);
        return h;
    }
    if (a < 0x38800000u) {  // below the smallest normal half: subnormal or zero, round to nearest even
        const float mag = std::ldexp(std::fabs(f), 24);  // units of 2^-24, exact
        h.x = (uint16_t) (sign | (uint16_t) std::nearbyint(mag));
        return h;
    }
    const uint32_t exp  = (a >> 23) - 112;
    uint32_t       half = (exp << 10) | ((a >> 13) & 0x3ff);
    const uint32_t rest = a & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) {
        ++half;
    }
    h.x = (uint16_t) (sign | half);
    return h;
}
inline __half __float2half(float f) { return __float2half_rn(f); }
inline __half __ushort_as_half(unsigned short v) { return __half{v}; }
inline unsigned short __half_as_ushort(__half h) { return h.x; }

// ---- bit casts, conversions, integer intrinsics --------------------------------------------------
template <class To, class From>
inline To cuda_emu_bitcast(From v) {
    static_assert(sizeof(To) == sizeof(From), "size");
    To t;
    std::memcpy(&t, &v, sizeof t);
    return t;
}
inline float __uint_as_float(unsigned v) { return cuda_emu_bitcast<float>(v); }
inline unsigned __float_as_uint(float v) { return cuda_emu_bitcast<unsigned>(v); }
inline float __int_as_float(int v) { return cuda_emu_bitcast<float>(v); }
inline int __float_as_int(float v) { return cuda_emu_bitcast<int>(v); }
inline int __float2int_rn(float v) { return (int) std::nearbyint(v); }  // default rounding: to nearest even
inline int __float2int_rz(float v) { return (int) v; }

// __dp4a: sum of the four byte products of a and b (signed bytes for int, unsigned for unsigned) + c
inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; ++i) {
        c += (int) (int8_t) (a >> (8 * i)) * (int) (int8_t) (b >> (8 * i));
    }
    return c;
}
inline unsigned __dp4a(unsigned a, unsigned b, unsigned c) {
    for (int i = 0; i < 4; ++i) {
        c += ((a >> (8 * i)) & 0xffu) * ((b >> (8 * i)) & 0xffu);
    }
    return c;
}
// __byte_perm: byte n of the result is byte ((s >> 4n) & 7) of the 8-byte value {y:x} (x = bytes 0..3)
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const uint64_t v = ((uint64_t) y << 32) | x;
    unsigned       r = 0;
    for (int n = 0; n < 4; ++n) {
        r |= (unsigned) ((v >> (8 * ((s >> (4 * n)) & 7))) & 0xff) << (8 * n);
    }
    return r;
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz((unsigned) v); }
inline int __ffs(int v) { return __builtin_ffs(v); }

template <class T>
inline T __ldg(const T * p) {
    return *p;
}

// ---- the runtime API subset --------------------------------------------------------------------
enum cudaError_t {
    cudaSuccess                 = 0,
    cudaErrorInvalidValue       = 1,
    cudaErrorMemoryAllocation   = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorLaunchFailure      = 719,
};
typedef cudaError_t cudaError;
struct CUstream_st;
typedef CUstream_st * cudaStream_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice,
                      cudaMemcpyDefault };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
enum cudaStreamCaptureStatus { cudaStreamCaptureStatusNone = 0 };
#define cudaStreamPerThread ((cudaStream_t) 0x2)

namespace cuda_emu {

constexpr int kWarpSize  = 32;
constexpr size_t kStack  = 256 * 1024;

inline cudaError_t & last_error() {
    static cudaError_t e = cudaSuccess;
    return e;
}

[[noreturn]] inline void fail(const std::string & msg) {
    std::fprintf(stderr, "cuda_emu: %s\n", msg.c_str());
    std::fflush(stderr);
    std::abort();
}

struct Thread {
    ucontext_t ctx;
    uint3      idx;
    int        linear = 0;
    bool       done   = false;
    uint64_t   posted = 0;  // warp exchanges this lane has posted a value to
    uint64_t   bar    = 0;  // __syncthreads this thread has reached
    unsigned   masks[2] = {0, 0};
    uint64_t   slots[2] = {0, 0};  // double buffer: exchange n uses slot n % 2
};

struct Block {
    uint3                        idx;
    dim3                         dim, grid;
    std::vector<Thread>          threads;
    ucontext_t                   sched;
    Thread *                     cur = nullptr;
    const std::function<void()> *body = nullptr;
    bool                         progress = false;
};

inline Block *& block() {
    static Block * b = nullptr;
    return b;
}
inline std::vector<unsigned char> & stacks() {
    static std::vector<unsigned char> s;
    return s;
}

inline void yield() {
    Block * b = block();
    swapcontext(&b->cur->ctx, &b->sched);
}

inline void entry() {
    Block * b = block();
    (*b->body)();
    b->cur->done = true;
    b->progress  = true;
}  // returns to uc_link = the scheduler

// The calling lane posts v to its warp and waits for every lane of mask to post its own; returns
// the values of the whole warp (only mask lanes are meaningful).
inline void exchange(unsigned mask, uint64_t v, uint64_t out[kWarpSize], const char * what) {
    Block *  b    = block();
    Thread * me   = b->cur;
    const int lane = me->linear % kWarpSize;
    const int base = me->linear - lane;
    if (!(mask >> lane & 1u)) {
        fail(std::string(what) + ": the calling lane " + std::to_string(lane) + " is not in the mask");
    }
    const uint64_t n = me->posted;
    me->slots[n % 2] = v;
    me->masks[n % 2] = mask;
    me->posted       = n + 1;
    b->progress      = true;
    for (int l = 0; l < kWarpSize; ++l) {
        if (!(mask >> l & 1u)) {
            continue;
        }
        if (base + l >= (int) b->threads.size()) {
            fail(std::string(what) + ": the mask names lane " + std::to_string(l) + ", which does not exist");
        }
        Thread & t = b->threads[(size_t) (base + l)];
        while (t.posted < n + 1) {
            if (t.done) {
                fail(std::string(what) + ": lane " + std::to_string(l) + " of warp " + std::to_string(base / kWarpSize) +
                     " exited without reaching it (lane " + std::to_string(lane) + " waits forever)");
            }
            yield();
        }
        if (t.masks[n % 2] != mask) {
            fail(std::string(what) + ": lanes " + std::to_string(lane) + " and " + std::to_string(l) +
                 " use different masks");
        }
    }
    for (int l = 0; l < kWarpSize; ++l) {
        out[l] = (mask >> l & 1u) ? b->threads[(size_t) (base + l)].slots[n % 2] : 0;
    }
}

template <class T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    uint64_t u = 0;
    std::memcpy(&u, &v, sizeof v);
    return u;
}
template <class T>
inline T from_bits(uint64_t u) {
    T v;
    std::memcpy(&v, &u, sizeof v);
    return v;
}

template <class T>
inline T shfl(unsigned mask, T v, int src_in_segment, int width, const char * what) {
    uint64_t all[kWarpSize];
    exchange(mask, to_bits(v), all, what);
    const int lane = block()->cur->linear % kWarpSize;
    const int seg  = lane / width * width;
    const int src  = seg + ((src_in_segment % width) + width) % width;
    if (!(mask >> src & 1u)) {
        fail(std::string(what) + ": lane " + std::to_string(lane) + " reads lane " + std::to_string(src) +
             ", which is not in the mask");
    }
    return from_bits<T>(all[src]);
}

inline int lane_id() { return block()->cur->linear % kWarpSize; }

struct Launch {
    dim3 grid, blk;

    template <class... P, class... A>
    void run(void (*kernel)(P...), A &&... args) const {
        const size_t nthreads = (size_t) blk.x * blk.y * blk.z;
        if (nthreads == 0 || nthreads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
            grid.z > 65535 || blk.z > 64) {
            last_error() = cudaErrorInvalidConfiguration;
            return;
        }
        std::function<void()> body = [&] { kernel(args...); };
        if (stacks().size() < nthreads * kStack) {
            stacks().assign(nthreads * kStack, 0);
        }
        Block b;
        b.dim  = blk;
        b.grid = grid;
        b.body = &body;
        b.threads.resize(nthreads);
        Block * saved = block();
        block() = &b;
        for (unsigned bz = 0; bz < grid.z; ++bz) {
            for (unsigned by = 0; by < grid.y; ++by) {
                for (unsigned bx = 0; bx < grid.x; ++bx) {
                    b.idx = {bx, by, bz};
                    run_block(b);
                }
            }
        }
        block() = saved;
    }

    static void init_thread(Block & b, size_t i) {
        Thread & t = b.threads[i];
        t          = Thread();
        t.linear   = (int) i;
        t.idx      = {(unsigned) (i % b.dim.x), (unsigned) (i / b.dim.x % b.dim.y),
                      (unsigned) (i / ((size_t) b.dim.x * b.dim.y))};
        getcontext(&t.ctx);
        t.ctx.uc_stack.ss_sp   = stacks().data() + i * kStack;
        t.ctx.uc_stack.ss_size = kStack;
        t.ctx.uc_link          = &b.sched;
        makecontext(&t.ctx, entry, 0);
    }

    static void run_block(Block & b) {
        const size_t n = b.threads.size();
        for (size_t i = 0; i < n; ++i) {
            init_thread(b, i);
        }
        size_t remaining = n;
        while (remaining > 0) {
            b.progress = false;
            remaining  = 0;
            for (size_t i = 0; i < n; ++i) {
                Thread & t = b.threads[i];
                if (t.done) {
                    continue;
                }
                b.cur = &t;
                swapcontext(&b.sched, &t.ctx);
                remaining += t.done ? 0 : 1;
            }
            if (remaining > 0 && !b.progress) {
                fail("deadlock: " + std::to_string(remaining) + " threads of block (" + std::to_string(b.idx.x) + "," +
                     std::to_string(b.idx.y) + "," + std::to_string(b.idx.z) + ") wait at a barrier forever");
            }
        }
        b.cur = nullptr;
    }
};

template <class... P>
struct Launcher {
    Launch l;
    void (*kernel)(P...);
    template <class... A>
    void operator()(A &&... args) const {
        l.run(kernel, std::forward<A>(args)...);
    }
};

template <class... P>
inline Launcher<P...> launch(dim3 grid, dim3 blk, size_t /*shmem*/, cudaStream_t /*stream*/, void (*kernel)(P...)) {
    return Launcher<P...>{Launch{grid, blk}, kernel};
}

inline int sm_count() {
    const char * v = std::getenv("PYBONSAI_EMU_SM_COUNT");
    const int    n = v ? std::atoi(v) : 0;
    return n > 0 ? n : 4;
}

}  // namespace cuda_emu

#define PYBONSAI_LAUNCH(grid, block, shmem, stream, ...) ::cuda_emu::launch(grid, block, shmem, stream, __VA_ARGS__)

#define threadIdx (::cuda_emu::block()->cur->idx)
#define blockIdx (::cuda_emu::block()->idx)
#define blockDim (::cuda_emu::block()->dim)
#define gridDim (::cuda_emu::block()->grid)
#define warpSize 32

// ---- synchronization ---------------------------------------------------------------------------
inline void __syncthreads() {
    using namespace cuda_emu;
    Block *  b  = block();
    Thread * me = b->cur;
    const uint64_t n = ++me->bar;
    b->progress      = true;
    for (Thread & t : b->threads) {
        while (!t.done && t.bar < n) {
            yield();
        }
    }
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    uint64_t all[cuda_emu::kWarpSize];
    cuda_emu::exchange(mask, 0, all, "__syncwarp");
}
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = warpSize) {
    return cuda_emu::shfl(mask, v, src, width, "__shfl_sync");
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
    const int lane = cuda_emu::lane_id();
    return cuda_emu::shfl(mask, v, (lane % width) ^ lane_mask, width, "__shfl_xor_sync");
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
    const int lane = cuda_emu::lane_id() % width;
    const int src  = lane + (int) delta < width ? lane + (int) delta : lane;  // out of range: own value
    return cuda_emu::shfl(mask, v, src, width, "__shfl_down_sync");
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
    const int lane = cuda_emu::lane_id() % width;
    const int src  = lane - (int) delta >= 0 ? lane - (int) delta : lane;
    return cuda_emu::shfl(mask, v, src, width, "__shfl_up_sync");
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    uint64_t all[cuda_emu::kWarpSize];
    cuda_emu::exchange(mask, pred != 0, all, "__ballot_sync");
    unsigned r = 0;
    for (int l = 0; l < cuda_emu::kWarpSize; ++l) {
        r |= (unsigned) (all[l] != 0) << l;
    }
    return r & mask;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }

// single OS thread, switches only at sync points: read-modify-write is atomic by construction
template <class T>
inline T atomicAdd(T * p, T v) {
    const T old = *p;
    *p          = old + v;
    return old;
}
inline int atomicMax(int * p, int v) {
    const int old = *p;
    *p            = old > v ? old : v;
    return old;
}

// ---- runtime API -------------------------------------------------------------------------------
inline cudaError_t cudaGetLastError() {
    const cudaError_t e = cuda_emu::last_error();
    cuda_emu::last_error() = cudaSuccess;
    return e;
}
inline cudaError_t cudaPeekAtLastError() { return cuda_emu::last_error(); }
inline const char * cudaGetErrorName(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
        case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
        default: return "cudaErrorUnknown";
    }
}
inline const char * cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }
inline cudaError_t cudaGetDeviceCount(int * n) {
    *n = 1;
    return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int * d) {
    *d = 0;
    return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
inline cudaError_t cudaDeviceGetAttribute(int * v, cudaDeviceAttr a, int /*dev*/) {
    if (a != cudaDevAttrMultiProcessorCount) {
        return cudaErrorInvalidValue;
    }
    *v = cuda_emu::sm_count();
    return cudaSuccess;
}
inline cudaError_t cudaMalloc(void ** p, size_t n) {
    *p = std::aligned_alloc(256, (n + 255) / 256 * 256 + 256);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
template <class T>
inline cudaError_t cudaMalloc(T ** p, size_t n) {
    return cudaMalloc(reinterpret_cast<void **>(p), n);
}
inline cudaError_t cudaFree(void * p) {
    std::free(p);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void * dst, const void * src, size_t n, cudaMemcpyKind) {
    std::memmove(dst, src, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void * dst, const void * src, size_t n, cudaMemcpyKind k, cudaStream_t = nullptr) {
    return cudaMemcpy(dst, src, n, k);
}
inline cudaError_t cudaMemset(void * p, int v, size_t n) {
    std::memset(p, v, n);
    return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamIsCapturing(cudaStream_t, cudaStreamCaptureStatus * s) {
    *s = cudaStreamCaptureStatusNone;
    return cudaSuccess;
}
