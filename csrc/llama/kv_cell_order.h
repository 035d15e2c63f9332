// pybonsai: the KV cells in position order, for our CPU attention kernel (vendor/patches/0012).
//
// Our kernel (csrc/kernels/cpu/q1_0_attn.h) accumulates a token's attention over its visible
// cells in the order it meets them. In a unified KV cache a sequence's cells usually lie in
// position order, but not always: a request that reuses a retained prefix (pybonsai.Engine) keeps
// those cells where they are, and its new tokens may land in free cells in front of them. The sums
// then run in another order than for the same tokens alone, and the logits differ in their last
// bits (enough to change a seeded sample). Where that happens, the cache hangs this order on the
// f16 KQ mask it fills, and the kernel follows it.
#pragma once

#include "q1_0_attn.h"

#include <cstdint>
#include <vector>

class llama_kv_cells;

class pybonsai_kv_cell_order {
public:
    // What to hang on the mask of the first n_kv cells (ggml_tensor.extra): nullptr where every
    // sequence's cells already lie in position order (the kernel's plain scan is that order).
    void * update(const llama_kv_cells & cells, uint32_t n_kv);

private:
    std::vector<int32_t> order_;
    q1k_cell_order       hung_{};
};
