// pybonsai: checks of the CPU emulation of the CUDA execution model (cuda_emu.h) itself, with small
// kernels whose results are known: a shared-memory tree reduction with __syncthreads (which only
// works if the threads of a block really interleave), every shuffle flavour against its definition,
// ballot, __byte_perm and __dp4a against their documented formulas, and __half conversions against
// the compiler's own _Float16. Build: g++ -std=c++17 -x c++ -I. test_emu.cu. Exit 0 + "EMU OK".
// With the argument "exited-lane" it runs a broken kernel the emulator must refuse (abort): a shuffle
// naming a lane that already returned. (A __syncthreads after half the block returned is legal, as
// on Volta and later: exited threads count as arrived; checked among the normal cases.)
#include <cuda_runtime.h>
#include <cuda_fp16.h>

#include <cstdio>
#include <cstring>

#define PYBONSAI_EMU_CHECK(cond)                                      \
    do {                                                              \
        if (!(cond)) {                                                \
            std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            ++fails;                                                  \
        }                                                             \
    } while (0)

namespace {

__global__ void block_sum(const int * in, int * out) {
    __shared__ int buf[256];
    const int t = threadIdx.x;
    buf[t] = in[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) {
            buf[t] += buf[t + s];
        }
        __syncthreads();
    }
    if (t == 0) {
        out[blockIdx.x] = buf[0];
    }
}

__global__ void shuffles(int * out) {
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    int * o = out + (w * 32 + lane) * 6;
    o[0] = __shfl_sync(0xffffffffu, lane * 10, 7);
    o[1] = __shfl_xor_sync(0xffffffffu, lane, 5);
    o[2] = __shfl_down_sync(0xffffffffu, lane, 3);
    o[3] = __shfl_up_sync(0xffffffffu, lane, 2);
    o[4] = __shfl_xor_sync(0xffffffffu, lane, 1, 8);  // width 8: within segments
    o[5] = (int) __ballot_sync(0xffffffffu, lane % 3 == 0);
}

__global__ void exited_lane(int * out) {
    if (threadIdx.x == 5) {
        return;
    }
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int) threadIdx.x, 1);
}

__global__ void half_block_barrier(int * out) {
    if (threadIdx.x >= 64) {
        return;  // these threads exit: the barrier below still completes for the others
    }
    __syncthreads();
    out[threadIdx.x] = 1;
}

}  // namespace

int main(int argc, char ** argv) {
    int fails = 0;
    int * d   = nullptr;
    cudaMalloc(&d, 4096 * sizeof(int));
    if (argc > 1 && std::strcmp(argv[1], "exited-lane") == 0) {
        PYBONSAI_LAUNCH(1, 32, 0, 0, exited_lane)(d);
        std::printf("exited-lane was not refused\n");
        return 0;
    }
    {
        int in[4 * 256];
        for (int i = 0; i < 4 * 256; ++i) {
            in[i] = i * 7 % 13;
        }
        int * din = nullptr;
        cudaMalloc(&din, sizeof in);
        cudaMemcpy(din, in, sizeof in, cudaMemcpyHostToDevice);
        PYBONSAI_LAUNCH(4, 256, 0, 0, block_sum)(din, d);
        for (int b = 0; b < 4; ++b) {
            int want = 0;
            for (int i = 0; i < 256; ++i) {
                want += in[b * 256 + i];
            }
            PYBONSAI_EMU_CHECK(d[b] == want);
        }
        cudaFree(din);
    }
    {
        PYBONSAI_LAUNCH(1, 64, 0, 0, shuffles)(d);
        for (int t = 0; t < 64; ++t) {
            const int l = t % 32, *o = d + t * 6;
            unsigned ballot = 0;
            for (int j = 0; j < 32; j += 3) {
                ballot |= 1u << j;
            }
            PYBONSAI_EMU_CHECK(o[0] == 70);
            PYBONSAI_EMU_CHECK(o[1] == (l ^ 5));
            PYBONSAI_EMU_CHECK(o[2] == (l + 3 < 32 ? l + 3 : l));
            PYBONSAI_EMU_CHECK(o[3] == (l >= 2 ? l - 2 : l));
            PYBONSAI_EMU_CHECK(o[4] == (l ^ 1));
            PYBONSAI_EMU_CHECK((unsigned) o[5] == ballot);
        }
    }
    {
        PYBONSAI_LAUNCH(1, 128, 0, 0, half_block_barrier)(d);
        PYBONSAI_EMU_CHECK(d[0] == 1 && d[63] == 1);
        PYBONSAI_EMU_CHECK(cudaGetLastError() == cudaSuccess);
        PYBONSAI_LAUNCH(1, 2048, 0, 0, half_block_barrier)(d);  // > 1024 threads: refused
        PYBONSAI_EMU_CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
    }
    // __byte_perm / __dp4a against their definitions
    const unsigned x = 0x44332211u, y = 0x88776655u;
    PYBONSAI_EMU_CHECK(__byte_perm(x, y, 0x3210) == x);
    PYBONSAI_EMU_CHECK(__byte_perm(x, y, 0x7654) == y);
    PYBONSAI_EMU_CHECK(__byte_perm(x, y, 0x0123) == 0x11223344u);
    PYBONSAI_EMU_CHECK(__byte_perm(x, y, 0x5140) == 0x66225511u);
    PYBONSAI_EMU_CHECK(__dp4a((int) 0x01ff7f80, (int) 0x02030405, 10) == 10 + 1 * 2 - 1 * 3 + 127 * 4 - 128 * 5);
    PYBONSAI_EMU_CHECK(__dp4a(0x01ff7f80u, 0x02030405u, 10u) == 10u + 1 * 2 + 255 * 3 + 127 * 4 + 128 * 5);
    // __half <-> float: every half value round-trips; float -> half rounds like _Float16
    for (unsigned h = 0; h < 65536; ++h) {
        _Float16 ref;
        const unsigned short hs = (unsigned short) h;
        std::memcpy(&ref, &hs, 2);
        const float f = __half2float(__ushort_as_half(hs));
        if (!(f == (float) ref || (f != f && ref != ref))) {
            std::printf("FAIL half2float(0x%04x) = %g, want %g\n", h, f, (double) (float) ref);
            ++fails;
            break;
        }
        if (f == f && __half_as_ushort(__float2half(f)) != hs) {
            std::printf("FAIL float2half(half2float(0x%04x)) = 0x%04x\n", h, __half_as_ushort(__float2half(f)));
            ++fails;
            break;
        }
    }
    uint32_t rng = 12345;
    for (int i = 0; i < 2000000; ++i) {
        rng = rng * 1664525u + 1013904223u;
        float f;
        const uint32_t bits = (rng & 0x8fffffffu) | ((rng >> 3) & 0x38000000u);  // exponents around half's range
        std::memcpy(&f, &bits, 4);
        if (f != f) {
            continue;
        }
        const _Float16 ref = (_Float16) f;
        unsigned short rs;
        std::memcpy(&rs, &ref, 2);
        if (__half_as_ushort(__float2half(f)) != rs) {
            std::printf("FAIL float2half(%a) = 0x%04x, want 0x%04x\n", (double) f, __half_as_ushort(__float2half(f)), rs);
            ++fails;
            break;
        }
    }
    cudaFree(d);
    std::printf(fails ? "%d EMU FAILURES\n" : "EMU OK\n", fails);
    return fails ? 1 : 0;
}
