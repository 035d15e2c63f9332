// pybonsai: where a graph's time goes, per op and thread (PYBONSAI_OP_PROFILE=1).
//
// ggml-cpu's graph loop (vendor/patches/0005) reports every node: the time its compute took and
// the time the thread then waited at the barrier for the others; our Q1_0 MUL_MAT
// (q1_0_buffer.cpp) also reports its activation quantization and the barrier after it (MUL_MAT of
// Q2_0 weights and its quantization have slots of their own). Off, each node costs one load of a
// flag. On, the sums are printed to stderr at exit, one line per slot
// and thread:
//   pybonsai-op-profile <name> thread <i> count <n> compute_ns <c> wait_ns <w>
// (benchmarks/op_profile.py turns them into a table). For measuring only: several contexts
// computing at once add into the same sums.
// Pure C, no ggml headers, so the kernel test builds it with the kernels.
#ifndef PYBONSAI_Q1_0_OP_PROFILE_H
#define PYBONSAI_Q1_0_OP_PROFILE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define Q1K_PROFILE_SLOTS   256  // ggml ops use the slots below 200
#define Q1K_PROFILE_MUL_MAT 200  // MUL_MAT of Q1_0 weights (ours): the whole op
#define Q1K_PROFILE_QUANT   201  //   of which: quantizing (and tabulating) the activations
#define Q1K_PROFILE_MUL_MAT_Q2 202  // MUL_MAT of Q2_0 weights (ours or upstream's): the whole op
#define Q1K_PROFILE_QUANT_Q2   203  //   of which (ours): quantizing (and tabulating) the activations
#define Q1K_PROFILE_MUL_MAT_PQ2 204   // MUL_MAT of PrismML's PQ2_0 weights (vendor/patches/0010)
#define Q1K_PROFILE_QUANT_PQ2   205   //   of which (ours): quantizing (and tabulating) the activations
#define Q1K_PROFILE_MUL_MAT_PTQ1 206  // MUL_MAT of PrismML's PTQ1_0 weights
#define Q1K_PROFILE_QUANT_PTQ1  207   //   of which (ours): quantizing (and tabulating) the activations
#define Q1K_PROFILE_HADAMARD    208   // the Hadamard transform of Bonsai 2's rotation (a hinted MUL_MAT)
#define Q1K_PROFILE_THREADS 64   // threads with a higher index are not counted

int     q1k_profile_on(void);  // PYBONSAI_OP_PROFILE set and not "0" (read once)
int64_t q1k_profile_now(void);  // ns, any fixed origin
// one node (or span) of thread ith: compute from t0 to t1, waiting from t1 to t2
void q1k_profile_add(int ith, int slot, const char * name, int64_t t0, int64_t t1, int64_t t2);

#ifdef __cplusplus
}
#endif

#endif
