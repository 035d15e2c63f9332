// pybonsai: the KV cells in position order (kv_cell_order.h).
#include "kv_cell_order.h"

#include "llama-kv-cells.h"

#include <algorithm>
#include <numeric>

namespace {

// Whether, for every sequence, cell indices grow with positions (the kernel's scan order is then
// each token's position order already).
bool in_position_order(const llama_kv_cells & cells) {
    for (llama_seq_id s = 0; s < LLAMA_MAX_SEQ; ++s) {
        int64_t last = -1;
        for (const auto & pc : cells.seq_pos_get(s)) {  // (position, cell), by position
            if ((int64_t) pc.second <= last) {
                return false;
            }
            last = pc.second;
        }
    }
    return true;
}

}  // namespace

void * pybonsai_kv_cell_order::update(const llama_kv_cells & cells, uint32_t n_kv) {
    if (in_position_order(cells)) {
        return nullptr;
    }
    order_.resize(n_kv);
    std::iota(order_.begin(), order_.end(), 0);
    // by position (cells of one position in index order), empty cells last
    std::stable_sort(order_.begin(), order_.end(), [&](int32_t a, int32_t b) {
        const bool empty_a = cells.is_empty(a), empty_b = cells.is_empty(b);
        if (empty_a || empty_b) {
            return !empty_a && empty_b;
        }
        return cells.pos_get(a) < cells.pos_get(b);
    });
    hung_ = {Q1K_CELL_ORDER_MAGIC, (int64_t) n_kv, order_.data()};
    return &hung_;
}
