// pybonsai: Q1_0 decode kernels for CUDA (csrc/kernels/cuda/q1_0_mmv.cu).
//
// Plain-pointer API, no ggml headers. Q1_0 (ggml type 41): per 128 weights an fp16 scale d and
// 16 bytes of sign bits, bit j (LSB first) of byte i is weight 8i+j, 0 -> -d, 1 -> +d.
//
// Repacked layout (made once, on the device, by pybonsai_q1_0_cuda_repack):
//   bits   : row r, block b -> 16 bytes at (char*)bits + (r*nb + b)*16   (nb = k/128; 16-byte aligned)
//            i.e. 4 little-endian uint32 words, word g = weights 32g..32g+31 of the block, bit e = weight 32g+e
//   scales : row r, block b -> __half at (__half*)scales + r*nb + b      (the block's d, bit-exact)
// Sizes: pybonsai_q1_0_cuda_bits_bytes(rows,k) and pybonsai_q1_0_cuda_scales_bytes(rows,k).
//
// Activations x: ncols columns, column c at x + c*x_stride (floats, k of them); outputs y: column c at
// y + c*y_stride (floats, rows of them). 1 <= ncols <= PYBONSAI_Q1_0_CUDA_MAX_COLS. k % 128 == 0.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime.h>

#define PYBONSAI_Q1_0_CUDA_MAX_COLS 8

#ifdef __cplusplus
extern "C" {
#endif

size_t pybonsai_q1_0_cuda_bits_bytes(int64_t rows, int64_t k);
size_t pybonsai_q1_0_cuda_scales_bytes(int64_t rows, int64_t k);

// q1_0_blocks: rows*k/128 ggml block_q1_0 (18 bytes each, rows contiguous), already on the device.
// bits / scales: device buffers of the sizes above (bits 16-byte aligned).
cudaError_t pybonsai_q1_0_cuda_repack(const void * q1_0_blocks, void * bits, void * scales,
                                      int64_t rows, int64_t k, cudaStream_t stream);

// y = W x with fp32 activations read directly (no scratch, exact fp32 accumulation).
cudaError_t pybonsai_q1_0_cuda_mmv(const void * bits, const void * scales, const float * x, float * y,
                                   int64_t rows, int64_t k, int ncols, int64_t x_stride, int64_t y_stride,
                                   cudaStream_t stream);

// y = W x with activations first quantized to int8 per 32 (scale + sum, like ggml's q8_1) into
// `scratch`, then __dp4a on the sign bits: sum_e s_e a_e = 2 * sum_{bit=1} a_e - sum_e a_e.
// Needs scratch of pybonsai_q1_0_cuda_mmv_q8_scratch_bytes(k, ncols) bytes (16-byte aligned);
// the fast path for decode (4x fewer activation bytes per row group than the fp32 path).
size_t pybonsai_q1_0_cuda_mmv_q8_scratch_bytes(int64_t k, int ncols);
cudaError_t pybonsai_q1_0_cuda_mmv_q8(const void * bits, const void * scales, const float * x, float * y,
                                      int64_t rows, int64_t k, int ncols, int64_t x_stride, int64_t y_stride,
                                      void * scratch, cudaStream_t stream);

// ---- glue for the ggml-cuda hook (vendor/patches/0002-cuda-q1_0-mmv.patch) -------------------------
// Which kernels run a Q1_0 MUL_MAT, from PYBONSAI_CUDA_Q1 (read once): unset/"" or "upstream" ->
// upstream's (the default until ours has been measured on a GPU: KL vs the CPU and speed vs
// upstream), "ours" (or "q8") -> ours with int8 activations + dp4a, "f32" -> ours with fp32
// activations. An unknown value warns on stderr and means upstream. pybonsai.gpu.q1_0_cuda_path()
// parses the variable the same way for system_info().
enum { PYBONSAI_Q1_0_CUDA_UPSTREAM = 0, PYBONSAI_Q1_0_CUDA_OURS_Q8 = 1, PYBONSAI_Q1_0_CUDA_OURS_F32 = 2 };
int pybonsai_q1_0_cuda_parse_mode(const char * value);  // -1 for an unknown value
int pybonsai_q1_0_cuda_mode(void);

// What ggml_cuda_mul_mat knows about a MUL_MAT node, in plain values (no ggml types here).
typedef struct pybonsai_q1_0_cuda_node {
    int     src0_q1_0;        // src0 (the weight) is GGML_TYPE_Q1_0
    int     src1_f32;         // src1 (the activations) is GGML_TYPE_F32
    int     dst_f32;          // dst is GGML_TYPE_F32
    int     src0_contiguous;  // ggml_is_contiguous(src0)
    int     src0_weights;     // src0 lives in a GGML_BACKEND_BUFFER_USAGE_WEIGHTS buffer (never rewritten)
    int64_t src0_ne[4];
    int64_t src1_ne[4];
    size_t  src1_nb[4];       // byte strides
    size_t  dst_nb[4];
} pybonsai_q1_0_cuda_node;

// The routing decision: PYBONSAI_Q1_0_CUDA_OURS_* when `mode` is one of ours and the node is a case
// our kernels handle (2-D Q1_0 weight, k % 128 == 0, 1..8 F32 columns with unit element stride and
// any row stride), else PYBONSAI_Q1_0_CUDA_UPSTREAM. route() uses pybonsai_q1_0_cuda_mode().
int pybonsai_q1_0_cuda_route_mode(const pybonsai_q1_0_cuda_node * node, int mode);
int pybonsai_q1_0_cuda_route(const pybonsai_q1_0_cuda_node * node);

// Repack cache keyed by (current device, q1_0_blocks): the repacked copy of a weight tensor, built on
// first use with cudaMalloc + pybonsai_q1_0_cuda_repack on `stream` (stream-ordered, so the mmv that
// follows on the same stream sees it). When the entry is missing and may_build is 0 (e.g. the stream
// is being captured into a CUDA graph) *bits = *scales = NULL and cudaSuccess is returned: the
// caller takes another path. Thread-safe. The copy costs as much device memory as the weight.
cudaError_t pybonsai_q1_0_cuda_cache_get(const void * q1_0_blocks, int64_t rows, int64_t k, cudaStream_t stream,
                                         int may_build, const void ** bits, const void ** scales);

// Drops (and cudaFrees) every cached copy whose source bytes overlap [begin, begin + size): call when
// that device memory is freed or overwritten.
void pybonsai_q1_0_cuda_cache_evict(const void * begin, size_t size);

#ifdef __cplusplus
}
#endif
