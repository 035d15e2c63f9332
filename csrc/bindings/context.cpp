// Context: a KV cache plus compute state over a Model; decodes batches, exposes logits.
#include "core.h"
#include "interrupt.h"
#include "model.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <string_view>

namespace pybonsai {
namespace {

constexpr uint32_t kMaxSeq = 256;  // LLAMA_MAX_SEQ in src/llama-cparams.h (not in llama.h)

struct Interrupted {};  // SIGINT stopped a decode; turned into KeyboardInterrupt with the GIL held

// Locking rule: release the GIL first, then take mu_; never take the GIL while holding mu_.
class Context {
public:
    Context(Model & model, uint32_t n_ctx, uint32_t n_batch, uint32_t n_ubatch, int n_threads,
            int n_threads_batch, int flash_attn, int type_k, int type_v, uint32_t n_seq_max, bool kv_unified,
            const py::dict & options)
        : model_(model.shared()), n_vocab_(model.n_vocab()), n_embd_(llama_model_n_embd(model.get())) {
        // A vocabulary-only model gets a context too (llama.cpp skips its memory and backends), as in
        // llama-cpp-python; everything that would evaluate, sample or save refuses (see locked()).
        vocab_only_ = model.vocab_only();
        if (n_threads < 1 || n_threads_batch < 1) throw py::value_error("n_threads must be at least 1");
        if (n_batch < 1 || n_ubatch < 1) throw py::value_error("n_batch and n_ubatch must be at least 1");
        llama_context_params p = llama_context_default_params();
        p.n_ctx = n_ctx;
        p.n_batch = n_batch;
        p.n_ubatch = std::min(n_ubatch, n_batch);
        if (n_seq_max < 1 || n_seq_max > kMaxSeq) {
            throw py::value_error("n_seq_max must be in [1, " + std::to_string(kMaxSeq) + "]");
        }
        p.n_seq_max = n_seq_max;
        p.kv_unified = kv_unified;
        p.n_threads = n_threads;
        p.n_threads_batch = n_threads_batch;
        // flash_attn is a llama_flash_attn_type, type_k/type_v ggml_type ids: pybonsai.kv_cache checks them.
        p.flash_attn_type = (llama_flash_attn_type) flash_attn;
        p.type_k = (ggml_type) type_k;
        p.type_v = (ggml_type) type_v;
        apply_context_options(p, options);
        // Called between graph nodes by thread 0 and, through vendor/patches/0009, from inside long
        // nodes by any compute thread, concurrently (csrc/kernels/cpu/q1_0_abort.h): loads only.
        p.abort_callback = [](void * self) {
            const Context * c = static_cast<Context *>(self);
            return c->abort_.load() || c->cancel_.load() || c->sigint_.load();
        };
        p.abort_callback_data = this;
        take_log();
        {
            py::gil_scoped_release release;
            ctx_ = llama_init_from_model(model_.get(), p);
        }
        if (!ctx_) throw LlamaError(with_log("failed to create a context for '" + model.path() + "'"));
        n_batch_ = llama_n_batch(ctx_);
        n_ctx_ = llama_n_ctx(ctx_);
        n_seq_max_ = llama_n_seq_max(ctx_);
    }
    ~Context() { close_locked(); }

    void close() {
        py::gil_scoped_release release;
        close_locked();
    }

    // Run f(ctx) with the GIL released and the context locked; raises if closed.
    template <class F> auto locked(F && f) {
        if (vocab_only_) {
            throw py::value_error("the model was loaded with vocab_only=True: it has no weights to evaluate, "
                                  "sample from or save");
        }
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(mu_);
        if (!ctx_) throw LlamaError("the context is closed");
        return f(ctx_);
    }

    // Decode `tokens` at positions pos0.. of sequence 0. Logits are kept for every token when
    // `all_logits`, else for the last one only. Returns the number of logit rows produced.
    // `interruptible` (main thread only): Ctrl-C stops the decode and raises KeyboardInterrupt.
    int decode(const std::vector<llama_token> & tokens, int pos0, bool all_logits, bool interruptible = false) {
        try {
            return decode_impl(tokens, pos0, all_logits, interruptible);
        } catch (const Interrupted &) {
            if (PyErr_CheckSignals() != 0) throw py::error_already_set();  // Python's handler raised
            throw LlamaError("decode was interrupted by SIGINT");
        }
    }

    int decode_impl(const std::vector<llama_token> & tokens, int pos0, bool all_logits, bool interruptible) {
        const int n = (int) tokens.size();
        if (n == 0) throw py::value_error("cannot decode an empty batch");
        if (pos0 < 0 || (uint64_t) pos0 + n > n_ctx_) {
            throw py::value_error("positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + n - 1) +
                                  " exceed the context size n_ctx=" + std::to_string(n_ctx_));
        }
        std::vector<int> pos(n), seq(n, 0);
        std::vector<bool> out(n, all_logits);
        for (int i = 0; i < n; ++i) pos[i] = pos0 + i;
        out[n - 1] = true;
        return decode_batch_impl(tokens, pos, seq, out, interruptible);
    }

    // Decode a batch whose token i sits at position pos[i] of sequence seq[i]; logits are kept
    // for the tokens whose flag is set. Returns the number of logit rows produced.
    int decode_batch(const std::vector<llama_token> & tokens, const std::vector<int> & pos,
                     const std::vector<int> & seq, const std::vector<bool> & want) {
        return decode_batch_impl(tokens, pos, seq, want, false);
    }

    int decode_batch_impl(const std::vector<llama_token> & tokens, const std::vector<int> & pos,
                          const std::vector<int> & seq, const std::vector<bool> & want, bool interruptible) {
        const int n = (int) tokens.size();
        if (n == 0) throw py::value_error("cannot decode an empty batch");
        if (pos.size() != tokens.size() || seq.size() != tokens.size() || want.size() != tokens.size()) {
            throw py::value_error("tokens, positions, sequence ids and logit flags must have the same length");
        }
        if ((uint32_t) n > n_batch_) {
            throw py::value_error("batch of " + std::to_string(n) + " tokens exceeds n_batch=" + std::to_string(n_batch_));
        }
        int rows = 0;
        for (int i = 0; i < n; ++i) {
            if (tokens[i] < 0 || tokens[i] >= n_vocab_) {
                throw py::value_error("token id " + std::to_string(tokens[i]) + " is out of range [0, " +
                                      std::to_string(n_vocab_) + ")");
            }
            if (pos[i] < 0 || (uint32_t) pos[i] >= n_ctx_) {
                throw py::value_error("position " + std::to_string(pos[i]) + " is outside the context [0, " +
                                      std::to_string(n_ctx_) + ")");
            }
            if (seq[i] < 0 || (uint32_t) seq[i] >= n_seq_max_) {
                throw py::value_error("sequence id " + std::to_string(seq[i]) + " is outside [0, " +
                                      std::to_string(n_seq_max_) + ")");
            }
            rows += want[i] ? 1 : 0;
        }
        return locked([&](llama_context * ctx) {
            llama_batch batch = llama_batch_init(n, 0, 1);
            for (int i = 0; i < n; ++i) {
                batch.token[i] = tokens[i];
                batch.pos[i] = pos[i];
                batch.n_seq_id[i] = 1;
                batch.seq_id[i][0] = seq[i];
                batch.logits[i] = want[i];
            }
            batch.n_tokens = n;
            abort_ = false;
            sigint_ = false;
            n_outputs_ = 0;  // whatever llama.cpp held is invalid from here on
            outputs_.clear();
            take_log();
            int32_t rc = 2;
            if (!cancel_) {
                SigintWatch watch(sigint_, interruptible);
                rc = llama_decode(ctx, batch);
            }
            llama_batch_free(batch);
            if (rc == 2 && cancel_) throw CancelledError("cancelled by Llama.cancel()");
            if (rc == 2 && sigint_) throw Interrupted();
            if (rc == 2) throw LlamaError("decode was aborted");
            if (rc == 1) throw LlamaError(with_log("no room in the KV cache for the batch (n_ctx too small?)"));
            if (rc != 0) throw LlamaError(with_log("llama_decode failed with code " + std::to_string(rc)));
            outputs_ = want;
            n_outputs_ = rows;
            return rows;
        });
    }

    // Row `idx` (a batch position whose logits were kept) of the last decode, copied into a new
    // (n_vocab,) float32 array.
    py::array_t<float> logits_ith(int idx) {
        py::array_t<float> dst((py::ssize_t) n_vocab_);
        float * target = dst.mutable_data();
        locked([&](llama_context * ctx) {
            check_batch_index(idx);
            const float * src = llama_get_logits_ith(ctx, idx);
            if (!src) throw LlamaError(with_log("no logits for batch position " + std::to_string(idx)));
            std::memcpy(target, src, sizeof(float) * (size_t) n_vocab_);
            return 0;
        });
        return dst;
    }

    // The last decode's logits, (n_outputs, n_vocab), copied into `out` (float32, C-contiguous,
    // writable, that shape) or into a new array.
    py::array_t<float> logits(py::object out) {
        const int rows = n_outputs_;
        if (rows == 0) throw LlamaError("no logits: decode a batch first");
        py::array_t<float, py::array::c_style> dst;
        if (out.is_none()) {
            dst = py::array_t<float, py::array::c_style>({(py::ssize_t) rows, (py::ssize_t) n_vocab_});
        } else {
            if (!py::isinstance<py::array_t<float, py::array::c_style>>(out)) {
                throw py::type_error("out must be a C-contiguous float32 numpy array");
            }
            dst = py::reinterpret_borrow<py::array_t<float, py::array::c_style>>(out);
            if (dst.ndim() != 2 || dst.shape(0) != rows || dst.shape(1) != n_vocab_ || !dst.writeable()) {
                throw py::value_error("out must be a writable array of shape (" + std::to_string(rows) + ", " +
                                      std::to_string(n_vocab_) + ")");
            }
        }
        float * target = dst.mutable_data();
        locked([&](llama_context * ctx) {
            if (n_outputs_ != rows) throw LlamaError("the context was decoded concurrently");
            const float * src = llama_get_logits(ctx);
            if (!src) throw LlamaError(with_log("the context holds no logits"));
            std::memcpy(target, src, sizeof(float) * (size_t) rows * (size_t) n_vocab_);
            return 0;
        });
        return dst;
    }

    // llama.cpp addresses logits by batch position (only positions whose logits were kept) or,
    // when negative, by output row from the end. Anything else would abort inside llama.cpp.
    void check_batch_index(int idx) const {
        // A negative index counts output rows from the end, as llama_get_logits_ith does.
        const bool ok = idx < 0 ? (n_outputs_ > 0 && idx >= -n_outputs_)
                                : (idx < (int) outputs_.size() && outputs_[idx]);
        if (!ok) {
            throw py::index_error("no logits for batch position " + std::to_string(idx) + " of the last decode");
        }
    }

    void memory_clear() {
        locked([&](llama_context * ctx) {
            llama_memory_clear(llama_get_memory(ctx), true);
            n_outputs_ = 0;
            return 0;
        });
    }

    // Forget positions [p0, p1) of sequence `seq` (p1 < 0: to the end; seq < 0: every sequence).
    // False if this memory cannot remove a partial sequence.
    bool seq_rm(int seq, int p0, int p1) {
        if (seq >= (int) n_seq_max_) throw py::value_error("sequence id " + std::to_string(seq) + " is out of range");
        return locked([&](llama_context * ctx) {
            n_outputs_ = 0;
            return llama_memory_seq_rm(llama_get_memory(ctx), seq, p0, p1);
        });
    }

    void check_seq(int seq) const {
        if (seq < 0 || seq >= (int) n_seq_max_) {
            throw py::value_error("sequence id " + std::to_string(seq) + " is out of range [0, " +
                                  std::to_string(n_seq_max_) + ")");
        }
    }

    // Make sequence `dst` hold positions [p0, p1) of sequence `src` too (p1 < 0: to the end). In a
    // unified KV cache the cells are shared, not copied: each cell just carries both sequence ids.
    void seq_cp(int src, int dst, int p0, int p1) {
        check_seq(src);
        check_seq(dst);
        locked([&](llama_context * ctx) {
            n_outputs_ = 0;
            llama_memory_seq_cp(llama_get_memory(ctx), src, dst, p0, p1);
            return 0;
        });
    }

    // The largest position sequence `seq` holds (-1: empty).
    int seq_pos_max(int seq) {
        check_seq(seq);
        return locked([&](llama_context * ctx) { return (int) llama_memory_seq_pos_max(llama_get_memory(ctx), seq); });
    }

    // One sequence's state (its KV cells; for recurrent layers its state) as llama.cpp serializes it.
    py::bytes state_seq_get(int seq) {
        check_seq(seq);
        std::string buf;
        locked([&](llama_context * ctx) {
            take_log();
            buf.resize(llama_state_seq_get_size(ctx, seq));
            const size_t n = llama_state_seq_get_data(ctx, reinterpret_cast<uint8_t *>(buf.data()), buf.size(), seq);
            if (n == 0 || n > buf.size()) throw LlamaError(with_log("could not copy the state of sequence " +
                                                                    std::to_string(seq)));
            buf.resize(n);
            return 0;
        });
        return py::bytes(buf);
    }

    // Load a state_seq_get() result into sequence `seq` (which should be empty). False when llama.cpp
    // refuses it (no room for its cells, or data of another model/context); the sequence is then empty.
    bool state_seq_set(const py::bytes & data, int seq) {
        check_seq(seq);
        std::string_view view = data;
        return locked([&](llama_context * ctx) {
            n_outputs_ = 0;
            take_log();
            const size_t n = llama_state_seq_set_data(ctx, reinterpret_cast<const uint8_t *>(view.data()),
                                                      view.size(), seq);
            if (n == 0) llama_memory_seq_rm(llama_get_memory(ctx), seq, -1, -1);
            return n != 0;
        });
    }

    // Forget positions >= pos (the tail of sequence 0). False if this memory cannot do that
    // (then the caller must clear it instead).
    bool truncate(int pos) {
        return locked([&](llama_context * ctx) {
            n_outputs_ = 0;
            return llama_memory_seq_rm(llama_get_memory(ctx), 0, std::max(pos, 0), -1);
        });
    }

    // The whole context state (KV cache, last logits) as llama.cpp serializes it.
    py::bytes state_get() {
        const size_t size = locked([](llama_context * ctx) { return llama_state_get_size(ctx); });
        // Allocate with the GIL held, fill without it (the state can be hundreds of MB).
        PyObject * raw = PyBytes_FromStringAndSize(nullptr, (py::ssize_t) size);
        if (!raw) throw py::error_already_set();
        py::bytes out = py::reinterpret_steal<py::bytes>(raw);
        auto * dst = reinterpret_cast<uint8_t *>(PyBytes_AS_STRING(raw));
        const size_t n = locked([&](llama_context * ctx) {
            take_log();
            return llama_state_get_data(ctx, dst, size);
        });
        if (n == 0 || n > size) throw LlamaError(with_log("could not copy the context state"));
        if (n < size) {
            raw = out.release().ptr();
            if (_PyBytes_Resize(&raw, (py::ssize_t) n) != 0) throw py::error_already_set();
            out = py::reinterpret_steal<py::bytes>(raw);
        }
        return out;
    }

    // Restore a state from state_get(); on failure the memory is cleared and LlamaError raised.
    void state_set(const py::buffer & data) {
        py::buffer_info info = data.request();
        if (info.ndim != 1 || info.itemsize != 1 || info.strides[0] != 1) {
            throw py::value_error("state data must be contiguous bytes");
        }
        const auto * src = static_cast<const uint8_t *>(info.ptr);
        const size_t size = (size_t) info.size;
        locked([&](llama_context * ctx) {
            n_outputs_ = 0;
            outputs_.clear();
            take_log();
            if (llama_state_set_data(ctx, src, size) != size) {
                llama_memory_clear(llama_get_memory(ctx), true);
                throw LlamaError(with_log("llama.cpp rejected the state data"));
            }
            return 0;
        });
    }

    // Embeddings of the last decode (a context made with embeddings=True): the pooled vector of
    // sequence 0, or with pooling NONE one row per output token, (n_outputs, n_embd).
    py::array_t<float> embeddings(bool pooled) {
        const int rows = pooled ? 1 : n_outputs_.load();
        if (rows == 0) throw LlamaError("no embeddings: decode a batch first");
        py::array_t<float, py::array::c_style> dst({(py::ssize_t) rows, (py::ssize_t) n_embd_});
        float * target = dst.mutable_data();
        locked([&](llama_context * ctx) {
            if (n_outputs_ == 0) throw LlamaError("no embeddings: decode a batch first");
            const float * src = pooled ? llama_get_embeddings_seq(ctx, 0) : llama_get_embeddings(ctx);
            if (!src) {
                throw LlamaError(pooled ? "no pooled embedding (was the context made with embeddings=True and a pooling type?)"
                                        : "no token embeddings (was the context made with embeddings=True?)");
            }
            std::memcpy(target, src, sizeof(float) * (size_t) rows * (size_t) n_embd_);
            return 0;
        });
        return dst;
    }

    // Load a LoRA adapter (GGUF) for this context's model and apply it with `scale`. The model
    // owns the adapter: llama.cpp frees it with the model.
    void set_lora(const std::string & path, float scale) {
        llama_adapter_lora * adapter;
        take_log();
        {
            py::gil_scoped_release release;
            adapter = llama_adapter_lora_init(model_.get(), path.c_str());
        }
        if (!adapter) throw LlamaError(with_log("failed to load the LoRA adapter '" + path + "'"));
        locked([&](llama_context * ctx) {
            if (llama_set_adapters_lora(ctx, &adapter, 1, &scale) != 0) {
                throw LlamaError(with_log("failed to apply the LoRA adapter '" + path + "'"));
            }
            return 0;
        });
    }

    int pooling_type() {
        return locked([](llama_context * ctx) { return (int) ::llama_pooling_type(ctx); });
    }

    int n_outputs() const { return n_outputs_; }
    uint32_t n_ctx() const { return n_ctx_; }
    uint32_t n_batch() const { return n_batch_; }
    uint32_t n_seq_max() const { return n_seq_max_; }
    uintptr_t address() const { return reinterpret_cast<uintptr_t>(ctx_); }
    void request_abort() { abort_ = true; }
    // Sticky: every decode fails with CancelledError until clear_cancel().
    void cancel() { cancel_ = true; }
    void clear_cancel() { cancel_ = false; }
    bool cancelled() const { return cancel_; }

private:
    void close_locked() {
        std::lock_guard<std::mutex> lock(mu_);
        if (ctx_) llama_free(ctx_);
        ctx_ = nullptr;
        model_.reset();
        n_outputs_ = 0;
    }

    ModelPtr model_;
    llama_context * ctx_ = nullptr;
    int n_vocab_;
    int n_embd_;
    uint32_t n_batch_ = 0;
    uint32_t n_ctx_ = 0;
    std::atomic<int> n_outputs_{0};
    uint32_t n_seq_max_ = 1;
    bool vocab_only_ = false;
    std::vector<bool> outputs_;  // which batch positions of the last decode kept logits
    std::atomic<bool> abort_{false};
    std::atomic<bool> cancel_{false};
    std::atomic<bool> sigint_{false};
    std::mutex mu_;
};

}  // namespace

// For sampler.cpp: run `fn(ctx, idx)` on a context's last logits, batch position `idx` checked.
llama_token sample_from(py::handle context, int idx, llama_token (*fn)(void *, llama_context *, int32_t), void * arg) {
    Context & c = context.cast<Context &>();
    return c.locked([&](llama_context * ctx) {
        c.check_batch_index(idx);
        return fn(arg, ctx, idx);
    });
}

void init_context(py::module_ & m) {
    py::class_<Context>(m, "Context", "Inference state over a Model: KV cache, batch decode, logits.")
        .def(py::init<Model &, uint32_t, uint32_t, uint32_t, int, int, int, int, int, uint32_t, bool, const py::dict &>(),
             py::arg("model"), py::arg("n_ctx") = 512, py::arg("n_batch") = 512, py::arg("n_ubatch") = 512,
             py::arg("n_threads") = 1, py::arg("n_threads_batch") = 1,
             py::arg("flash_attn") = (int) LLAMA_FLASH_ATTN_TYPE_DISABLED, py::arg("type_k") = (int) GGML_TYPE_F16,
             py::arg("type_v") = (int) GGML_TYPE_F16, py::arg("n_seq_max") = 1, py::arg("kv_unified") = true,
             py::arg("options") = py::dict(),
             "`options`: llama_context_params fields by name (rope_*, yarn_*, pooling_type, attention_type, "
             "embeddings, offload_kqv, no_perf, op_offload, swa_full).")
        .def("close", &Context::close)
        .def_property_readonly("n_ctx", &Context::n_ctx)
        .def_property_readonly("ctx", &Context::address, "The llama_context pointer as an int (0 once closed).")
        .def_property_readonly("n_batch", &Context::n_batch)
        .def_property_readonly("n_outputs", &Context::n_outputs)
        .def_property_readonly("n_seq_max", &Context::n_seq_max)
        .def_property("n_threads",
                      [](Context & c) { return c.locked([](llama_context * ctx) { return llama_n_threads(ctx); }); },
                      [](Context & c, int n) {
                          if (n < 1) throw py::value_error("n_threads must be at least 1");
                          c.locked([n](llama_context * ctx) {
                              llama_set_n_threads(ctx, n, llama_n_threads_batch(ctx));
                              return 0;
                          });
                      })
        .def("decode", &Context::decode, py::arg("tokens"), py::arg("pos0"), py::arg("all_logits") = false,
             py::arg("interruptible") = false)
        .def("decode_batch", &Context::decode_batch, py::arg("tokens"), py::arg("pos"), py::arg("seq_ids"),
             py::arg("logits"), "Decode tokens of several sequences: token i at pos[i] of seq_ids[i], logits kept where logits[i].")
        .def("logits_ith", &Context::logits_ith, py::arg("idx"),
             "Logits of batch position `idx` of the last decode (its logits flag set), a new (n_vocab,) array.")
        .def("seq_rm", &Context::seq_rm, py::arg("seq"), py::arg("p0") = 0, py::arg("p1") = -1,
             "Forget positions [p0, p1) of a sequence (p1 < 0: to the end); frees its KV cells.")
        .def("seq_cp", &Context::seq_cp, py::arg("src"), py::arg("dst"), py::arg("p0") = 0, py::arg("p1") = -1,
             "Give sequence `dst` positions [p0, p1) of `src` (shared KV cells in a unified cache).")
        .def("seq_pos_max", &Context::seq_pos_max, py::arg("seq"), "The largest position a sequence holds (-1: none).")
        .def("state_seq_get", &Context::state_seq_get, py::arg("seq"),
             "llama_state_seq_get_data: one sequence's KV cells (and recurrent state) as bytes.")
        .def("state_seq_set", &Context::state_seq_set, py::arg("data"), py::arg("seq"),
             "llama_state_seq_set_data into an empty sequence; False (sequence left empty) when refused.")
        .def("logits", &Context::logits, py::arg("out") = py::none(),
             "The last decode's logits, (n_outputs, n_vocab), copied into `out` or a new float32 array.")
        .def("embeddings", &Context::embeddings, py::arg("pooled"),
             "The last decode's embeddings: the pooled vector of sequence 0 (1, n_embd), or every output "
             "token's (n_outputs, n_embd).")
        .def_property_readonly("pooling_type", &Context::pooling_type)
        .def("set_lora", &Context::set_lora, py::arg("path"), py::arg("scale") = 1.0f,
             "Load a LoRA adapter GGUF (llama_adapter_lora_init) and apply it with `scale`.")
        .def("memory_clear", &Context::memory_clear)
        .def("state_get", &Context::state_get, "llama_state_get_data: the KV cache and last logits as bytes.")
        .def("state_set", &Context::state_set, py::arg("data"),
             "llama_state_set_data; pybonsai.state validates the data first.")
        .def("truncate", &Context::truncate, py::arg("pos"))
        .def("request_abort", &Context::request_abort, "Make the running decode stop (from another thread).")
        .def("cancel", &Context::cancel,
             "Stop the running decode and fail every later one with CancelledError until clear_cancel().")
        .def("clear_cancel", &Context::clear_cancel)
        .def_property_readonly("cancelled", &Context::cancelled);
}

}  // namespace pybonsai
