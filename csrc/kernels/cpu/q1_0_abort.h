// pybonsai: a long node stops short when its graph is being aborted.
//
// Upstream ggml-cpu checks the graph's abort callback only between nodes (thread 0, after each
// node), so a cancel waits for the node in flight: at n_ubatch 512 one Bonsai-8B FFN MUL_MAT runs
// for hundreds of ms on 2 cores. vendor/patches/0009 adds pybonsai_cpu_abort_requested(): a node's
// chunk loop (our Q1_0 MUL_MAT in q1_0_buffer.cpp, our attention in q1_0_attn_glue.cpp, upstream's
// MUL_MAT and FLASH_ATTN_EXT chunk loops) calls it between chunks of work and, when it returns
// nonzero, skips the rest. The first nonzero answer marks the graph "cut" (sticky until the next
// graph): thread 0's check after the node then stops the graph, and if the cut came after thread
// 0's last check the graph still returns GGML_STATUS_ABORTED, so a partial result never counts as
// a finished decode. At most the node right after a cut runs on the partial data before the stop;
// llama.cpp discards the aborted ubatch (its KV cells are removed), as for any abort.
//
// It calls the context's abort callback from whichever compute thread asks, concurrently: the
// callback must be thread-safe (pybonsai's, csrc/bindings/context.cpp, only loads atomics).
// Callers poll every ~millisecond of work at most, so the cost stays below measurement.
#ifndef PYBONSAI_Q1_0_ABORT_H
#define PYBONSAI_Q1_0_ABORT_H

#ifdef __cplusplus
extern "C" {
#endif

struct ggml_compute_params;

// nonzero: the graph is being aborted, skip the rest of this node (defined in ggml-cpu.c, 0009)
int pybonsai_cpu_abort_requested(const struct ggml_compute_params * params);

#ifdef __cplusplus
}
#endif

#endif
