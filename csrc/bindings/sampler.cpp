// Sampler: llama.cpp's sampler chain, built stage by stage from Python (pybonsai.sampling), with
// an optional grammar (llama.cpp's GBNF sampler) that masks the logits before the chain runs.
#include "core.h"
#include "model.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace pybonsai {

llama_token sample_from(py::handle context, int idx, llama_token (*fn)(void *, llama_context *, int32_t), void * arg);

namespace {

// A grammar mask allocates and frees small blocks (each candidate's code points, llama.cpp's
// grammar; the full mask runs in chunks, mask_in_chunks); glibc keeps freed small blocks in the
// thread's arena. Returning the pages after every mask halved the masking speed (each mask faults
// them in again), so they are returned once, when the sampler that masked is freed.
void return_freed_heap() {
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}

class Sampler {
public:
    Sampler() {
        llama_sampler_chain_params p = llama_sampler_chain_default_params();
        p.no_perf = true;
        chain_ = llama_sampler_chain_init(p);
    }
    ~Sampler() {
        llama_sampler_free(chain_);
        if (grammar_) llama_sampler_free(grammar_);
        if (masked_) return_freed_heap();
    }
    Sampler(const Sampler &) = delete;
    Sampler & operator=(const Sampler &) = delete;

    void add(llama_sampler * s) {
        if (!s) throw LlamaError(with_log("could not create sampler stage"));
        llama_sampler_chain_add(chain_, s);
    }

    static void check_unit(const char * name, float v) {
        if (!std::isfinite(v) || v < 0.0f || v > 1.0f) {
            throw py::value_error(std::string(name) + " must be in [0, 1], got " + std::to_string(v));
        }
    }

    // The parser reports details on stderr and a summary in llama.cpp's log: quote both.
    // With triggers the grammar is lazy: it constrains from the first trigger token, or from the
    // first capture group of a trigger pattern (a regex matched against all the generated text).
    void set_grammar(const Model & model, const std::string & gbnf, const std::string & root,
                     const std::vector<llama_token> & triggers, const std::vector<std::string> & patterns) {
        if (grammar_) throw py::value_error("this sampler already has a grammar");
        for (llama_token t : triggers) model.check_token(t);
        take_log();
        llama_sampler * g = nullptr;
        std::string parser = capture_stderr([&] {
            std::vector<const char *> pats;
            for (auto & p : patterns) pats.push_back(p.c_str());
            g = triggers.empty() && patterns.empty()
                ? llama_sampler_init_grammar(model.vocab(), gbnf.c_str(), root.c_str())
                : llama_sampler_init_grammar_lazy_patterns(model.vocab(), gbnf.c_str(), root.c_str(), pats.data(),
                                                           pats.size(), triggers.data(), triggers.size());
        });
        std::string log = take_log();
        if (!g) {
            std::string why = parser.empty() ? log : parser + (log.empty() ? "" : "\n" + log);
            throw py::value_error("invalid grammar: " + (why.empty() ? std::string("rejected by llama.cpp") : why));
        }
        grammar_ = g;
        lazy_ = !(triggers.empty() && patterns.empty());
        model_ = model.shared();
    }

    void add_logit_bias(const Model & model, const std::vector<std::pair<llama_token, float>> & bias) {
        std::vector<llama_logit_bias> b;
        for (auto & [t, v] : bias) {
            model.check_token(t);
            if (std::isnan(v)) throw py::value_error("logit_bias values must be numbers, got NaN");
            b.push_back({t, v});
        }
        add(llama_sampler_init_logit_bias(model.n_vocab(), (int32_t) b.size(), b.data()));
    }

    llama_token sample(py::handle context, int idx) {
        if (!grammar_ && !greedy_shortcut_) {
            auto fn = [](void * chain, llama_context * ctx, int32_t i) {
                return llama_sampler_sample(static_cast<llama_sampler *>(chain), ctx, i);
            };
            return sample_from(context, idx, fn, chain_);
        }
        auto fn = [](void * self, llama_context * ctx, int32_t i) {
            auto * s = static_cast<Sampler *>(self);
            const float * logits = llama_get_logits_ith(ctx, i);
            if (!logits) throw LlamaError(with_log("no logits for batch position " + std::to_string(i)));
            return s->pick(logits, llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(ctx))));
        };
        return sample_from(context, idx, fn, this);
    }

    // Sample from logits the caller computed (e.g. changed by a logits processor).
    llama_token sample_logits(const Model & model, py::array_t<float, py::array::c_style | py::array::forcecast> logits) {
        if (logits.ndim() != 1 || logits.shape(0) != model.n_vocab()) {
            throw py::value_error("logits must have shape (n_vocab,) = (" + std::to_string(model.n_vocab()) + ",)");
        }
        // The GIL is released: a grammar mask can take long (every token of the vocabulary is
        // checked), and pybonsai.Engine runs it beside the shared decode (the array stays alive
        // for the call; the sampler is used by one thread at a time).
        const float * data = logits.data();
        const int n_vocab = model.n_vocab();
        py::gil_scoped_release release;
        return pick(data, n_vocab);
    }

    void accept_history(llama_token t) { llama_sampler_accept(chain_, t); }

    void reset() {
        llama_sampler_reset(chain_);
        if (grammar_) llama_sampler_reset(grammar_);
    }

    llama_sampler * chain_;
    bool greedy_shortcut_ = false;  // pick_among_top may answer for the full mask

private:
    // Grammar mask, then the chain; the token is accepted by both (llama_sampler_sample's steps).
    // As llama.cpp's common sampler does, the chain first picks without the grammar and the full
    // mask (slow: every token of the vocabulary is checked) runs only if the grammar rejects it.
    llama_token pick(const float * logits, int n_vocab) {
        llama_token token;
        llama_token_data_array arr;
        if (greedy_shortcut_ && !pick_among_top(logits, n_vocab, false, token)) {
            arr = fill(logits, n_vocab);  // the unconstrained pick over the whole vocabulary
            llama_sampler_apply(chain_, &arr);
            if (!grammar_) return accept(selected(arr));
            token = selected(arr);
        }
        if (greedy_shortcut_) {  // the unconstrained pick; a grammar that allows it keeps it
            if (!grammar_ || allows(token)) return accept(token);
            if (pick_among_top(logits, n_vocab, true, token)) return accept(token);
        }
        arr = fill(logits, n_vocab);
        if (grammar_) {
            if (!greedy_shortcut_) {
                llama_sampler_apply(chain_, &arr);
                token = selected(arr);
                if (allows(token)) return accept(token);
                arr = fill(logits, n_vocab);
            }
            mask_in_chunks(arr);
            bool any = false;
            for (size_t i = 0; i < arr.size && !any; i++) any = std::isfinite(arr.data[i].logit);
            if (!any) throw py::value_error("the grammar allows no token here (is every rule reachable by text?)");
        }
        llama_sampler_apply(chain_, &arr);
        return accept(selected(arr));
    }

    bool allows(llama_token token) {
        llama_token_data one = {token, 0.0f, 0.0f};
        llama_token_data_array single = {&one, 1, -1, false};
        llama_sampler_apply(grammar_, &single);
        return std::isfinite(one.logit);
    }

    // A greedy chain whose stages can only lower logits (set_greedy_shortcut): the chain (after
    // the grammar's mask, when `masked`) first runs on just the top logits, those >= a floor that
    // at least k of them reach, k = 256, then 8192. Its pick is the answer over the whole
    // vocabulary when its final logit is not below the floor: every token left out started below
    // it and was not raised (NaN logits are never candidates: a NaN the whole vocabulary's greedy
    // would return is not returned here). Else the whole vocabulary runs. (Filling and scanning the whole Qwen
    // vocabulary takes ~0.4 ms a token; a full grammar mask tens of ms.)
    bool pick_among_top(const float * logits, int n_vocab, bool masked, llama_token & out) {
        for (int k : {256, 8192}) {
            if (n_vocab < 8 * k) return false;
            const float floor = top_candidates(logits, n_vocab, k);
            llama_token_data_array arr = {cur_.data(), cur_.size(), -1, false};
            if (masked) llama_sampler_apply(grammar_, &arr);
            llama_sampler_apply(chain_, &arr);
            if (arr.selected < 0 || (size_t) arr.selected >= arr.size) continue;
            const float best = arr.data[arr.selected].logit;
            if (std::isfinite(best) && best >= floor) {
                out = arr.data[arr.selected].id;
                return true;
            }
        }
        return false;
    }

    // cur_ = every token whose logit is >= the returned floor, in token order, at least k of them
    // (n >= 8k), found without a selection over all n: the logits in blocks of B (a power of two,
    // so that there are at least 4k blocks), the floor is the k-th largest block maximum (reached in k
    // blocks; NaN never counts), and only blocks whose maximum reaches it are scanned. About 1.2k
    // tokens pass on random logits.
    float top_candidates(const float * logits, int n, int k) {
        int B = 1;
        while (2 * B <= n / (4 * k)) B *= 2;
        const int blocks = n / B;
        block_max_.resize(blocks);
        for (int b = 0; b < blocks; b++) block_max_[b] = block_max(logits + (size_t) b * B, B);
        top_.assign(block_max_.begin(), block_max_.end());
        std::nth_element(top_.begin(), top_.begin() + (k - 1), top_.end(), std::greater<float>());
        const float floor = top_[k - 1];
        cur_.clear();
        auto scan = [&](int t0, int t1) {
            for (int t = t0; t < t1; t++) {
                if (logits[t] >= floor) cur_.push_back({t, logits[t], 0.0f});
            }
        };
        for (int b = 0; b < blocks; b++) {
            if (block_max_[b] >= floor) scan(b * B, b * B + B);
        }
        scan(blocks * B, n);  // the tail past the last whole block
        return floor;
    }

    static float block_max(const float * x, int B) {
        constexpr int W = 8;  // lanes the compiler turns into one vector max per step
        float m[W];
        for (int j = 0; j < W; j++) m[j] = -INFINITY;
        int i = 0;
        for (; i + W <= B; i += W) {
            for (int j = 0; j < W; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
        }
        for (; i < B; i++) m[0] = x[i] > m[0] ? x[i] : m[0];
        float r = m[0];
        for (int j = 1; j < W; j++) r = m[j] > r ? m[j] : r;
        return r;
    }

    // The full mask, kMaskChunk candidates at a time: llama.cpp's grammar judges every candidate
    // alone (its code points against the grammar's stacks), so the answer is the same as one call
    // over the whole array, but the per-candidate blocks it allocates (~340 bytes a token) stay below
    // ~3 MB instead of ~50 MB at the Qwen vocabulary's size, and are reused chunk to chunk.
    static constexpr size_t kMaskChunk = 8192;
    void mask_in_chunks(llama_token_data_array & arr) {
        for (size_t i = 0; i < arr.size; i += kMaskChunk) {
            llama_token_data_array part = {arr.data + i, std::min(kMaskChunk, arr.size - i), -1, false};
            llama_sampler_apply(grammar_, &part);
        }
        masked_ = true;
    }

    llama_token_data_array fill(const float * logits, int n_vocab) {
        cur_.resize(n_vocab);
        for (llama_token t = 0; t < n_vocab; t++) cur_[t] = {t, logits[t], 0.0f};
        return {cur_.data(), cur_.size(), -1, false};
    }

    static llama_token selected(const llama_token_data_array & arr) {
        if (arr.selected < 0 || (size_t) arr.selected >= arr.size) throw LlamaError("the sampler chain selected no token");
        return arr.data[arr.selected].id;
    }

    llama_token accept(llama_token token) {
        if (grammar_) {
            try {
                llama_sampler_accept(grammar_, token);
            } catch (const std::exception &) {
                // A lazy grammar fed text that was already generated when its trigger matched
                // (e.g. a token running past "<tool_call>"): it cannot constrain from there, so
                // the rest is unconstrained (and fails to parse as a call, as it would have).
                if (!lazy_) throw;
                llama_sampler_free(grammar_);
                grammar_ = nullptr;
            }
        }
        llama_sampler_accept(chain_, token);
        return token;
    }

    llama_sampler * grammar_ = nullptr;
    bool lazy_ = false;
    bool masked_ = false;  // a full grammar mask ran (see return_freed_heap)
    std::vector<float> top_, block_max_;
    ModelPtr model_;  // the grammar keeps a pointer to the vocabulary
    std::vector<llama_token_data> cur_;
};

}  // namespace

void init_sampler(py::module_ & m) {
    py::class_<Sampler>(m, "Sampler", "A llama.cpp sampler chain; stages run in the order added.")
        .def(py::init<>())
        .def("add_greedy", [](Sampler & s) { s.add(llama_sampler_init_greedy()); })
        .def("add_dist", [](Sampler & s, uint32_t seed) { s.add(llama_sampler_init_dist(seed)); }, py::arg("seed"))
        .def("add_top_k", [](Sampler & s, int k) {
            if (k < 0) throw py::value_error("top_k must be >= 0");
            s.add(llama_sampler_init_top_k(k));
        }, py::arg("k"))
        .def("add_top_p", [](Sampler & s, float p, size_t min_keep) {
            Sampler::check_unit("top_p", p);
            s.add(llama_sampler_init_top_p(p, min_keep));
        }, py::arg("p"), py::arg("min_keep") = 1)
        .def("add_min_p", [](Sampler & s, float p, size_t min_keep) {
            Sampler::check_unit("min_p", p);
            s.add(llama_sampler_init_min_p(p, min_keep));
        }, py::arg("p"), py::arg("min_keep") = 1)
        .def("add_typical", [](Sampler & s, float p, size_t min_keep) {
            Sampler::check_unit("typical_p", p);
            s.add(llama_sampler_init_typical(p, min_keep));
        }, py::arg("p"), py::arg("min_keep") = 1)
        .def("add_mirostat", [](Sampler & s, const Model & model, uint32_t seed, float tau, float eta, int m) {
            if (!std::isfinite(tau) || !std::isfinite(eta) || tau < 0.0f || eta < 0.0f) {
                throw py::value_error("mirostat_tau and mirostat_eta must be finite and >= 0");
            }
            s.add(llama_sampler_init_mirostat(model.n_vocab(), seed, tau, eta, m));
        }, py::arg("model"), py::arg("seed"), py::arg("tau"), py::arg("eta"), py::arg("m") = 100)
        .def("add_mirostat_v2", [](Sampler & s, uint32_t seed, float tau, float eta) {
            if (!std::isfinite(tau) || !std::isfinite(eta) || tau < 0.0f || eta < 0.0f) {
                throw py::value_error("mirostat_tau and mirostat_eta must be finite and >= 0");
            }
            s.add(llama_sampler_init_mirostat_v2(seed, tau, eta));
        }, py::arg("seed"), py::arg("tau"), py::arg("eta"))
        .def("add_temp", [](Sampler & s, float t) {
            if (!std::isfinite(t) || t < 0.0f) throw py::value_error("temperature must be finite and >= 0");
            s.add(llama_sampler_init_temp(t));
        }, py::arg("t"))
        .def("add_penalties", [](Sampler & s, const Model & model, int last_n, float repeat, float freq, float present) {
            if (last_n < 0 || last_n > (1 << 20)) throw py::value_error("penalty_last_n must be in [0, 2**20]");
            if (!std::isfinite(repeat) || repeat <= 0.0f) throw py::value_error("repeat_penalty must be > 0");
            if (!std::isfinite(freq) || !std::isfinite(present)) throw py::value_error("penalties must be finite");
            s.add(llama_sampler_init_penalties(model.n_vocab(), last_n, repeat, freq, present));
        }, py::arg("model"), py::arg("last_n"), py::arg("repeat"), py::arg("freq") = 0.0f, py::arg("present") = 0.0f)
        .def("sample", &Sampler::sample, py::arg("context"), py::arg("idx") = -1,
             "Pick a token from row `idx` of the context's last logits (and accept it).")
        .def("set_grammar", &Sampler::set_grammar, py::arg("model"), py::arg("gbnf"), py::arg("root") = "root",
             py::arg("trigger_tokens") = std::vector<llama_token>(), py::arg("trigger_patterns") = std::vector<std::string>(),
             "Constrain sampling by a GBNF grammar (applied before the chain); ValueError quoting the parser if invalid.")
        .def("add_logit_bias", &Sampler::add_logit_bias, py::arg("model"), py::arg("bias"),
             "Add (token, bias) pairs to the logits.")
        .def("set_greedy_shortcut", [](Sampler & s, bool on) { s.greedy_shortcut_ = on; }, py::arg("on"),
             "Only for a greedy chain whose stages never raise a logit: the chain (and a grammar) runs on the top logits first.")
        .def("sample_logits", &Sampler::sample_logits, py::arg("model"), py::arg("logits"),
             "Pick a token from the given logits (n_vocab floats) and accept it.")
        .def("accept", &Sampler::accept_history, py::arg("token"), "Feed a token to the chain (not the grammar): penalty history.")
        .def("reset", &Sampler::reset)
        .def_property_readonly("n_stages", [](const Sampler & s) { return llama_sampler_chain_n(s.chain_); });
}

}  // namespace pybonsai
