// Context: a KV cache plus compute state over a Model; decodes batches, exposes logits.
#include "core.h"
#include "model.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace pybonsai {
namespace {

// Locking rule: release the GIL first, then take mu_; never take the GIL while holding mu_.
class Context {
public:
    Context(Model & model, uint32_t n_ctx, uint32_t n_batch, uint32_t n_ubatch, int n_threads,
            int n_threads_batch, bool flash_attn)
        : model_(model.shared()), n_vocab_(model.n_vocab()) {
        if (model.vocab_only()) throw py::value_error("'" + model.path() + "' was loaded with vocab_only: no context possible");
        if (n_threads < 1 || n_threads_batch < 1) throw py::value_error("n_threads must be at least 1");
        if (n_batch < 1 || n_ubatch < 1) throw py::value_error("n_batch and n_ubatch must be at least 1");
        llama_context_params p = llama_context_default_params();
        p.n_ctx = n_ctx;
        p.n_batch = n_batch;
        p.n_ubatch = std::min(n_ubatch, n_batch);
        p.n_seq_max = 1;
        p.n_threads = n_threads;
        p.n_threads_batch = n_threads_batch;
        p.flash_attn_type = flash_attn ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
        p.abort_callback = [](void * self) { return static_cast<Context *>(self)->abort_.load(); };
        p.abort_callback_data = this;
        take_log();
        {
            py::gil_scoped_release release;
            ctx_ = llama_init_from_model(model_.get(), p);
        }
        if (!ctx_) throw LlamaError(with_log("failed to create a context for '" + model.path() + "'"));
        n_batch_ = llama_n_batch(ctx_);
        n_ctx_ = llama_n_ctx(ctx_);
    }
    ~Context() { close_locked(); }

    void close() {
        py::gil_scoped_release release;
        close_locked();
    }

    // Run f(ctx) with the GIL released and the context locked; raises if closed.
    template <class F> auto locked(F && f) {
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(mu_);
        if (!ctx_) throw LlamaError("the context is closed");
        return f(ctx_);
    }

    // Decode `tokens` at positions pos0.. of sequence 0. Logits are kept for every token when
    // `all_logits`, else for the last one only. Returns the number of logit rows produced.
    int decode(const std::vector<llama_token> & tokens, int pos0, bool all_logits) {
        const int n = (int) tokens.size();
        if (n == 0) throw py::value_error("cannot decode an empty batch");
        if ((uint32_t) n > n_batch_) {
            throw py::value_error("batch of " + std::to_string(n) + " tokens exceeds n_batch=" + std::to_string(n_batch_));
        }
        if (pos0 < 0 || (uint64_t) pos0 + n > n_ctx_) {
            throw py::value_error("positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + n - 1) +
                                  " exceed the context size n_ctx=" + std::to_string(n_ctx_));
        }
        for (llama_token t : tokens) {
            if (t < 0 || t >= n_vocab_) {
                throw py::value_error("token id " + std::to_string(t) + " is out of range [0, " +
                                      std::to_string(n_vocab_) + ")");
            }
        }
        return locked([&](llama_context * ctx) {
            llama_batch batch = llama_batch_init(n, 0, 1);
            for (int i = 0; i < n; ++i) {
                batch.token[i] = tokens[i];
                batch.pos[i] = pos0 + i;
                batch.n_seq_id[i] = 1;
                batch.seq_id[i][0] = 0;
                batch.logits[i] = all_logits || i == n - 1;
            }
            batch.n_tokens = n;
            abort_ = false;
            n_outputs_ = 0;  // whatever llama.cpp held is invalid from here on
            take_log();
            const int32_t rc = llama_decode(ctx, batch);
            llama_batch_free(batch);
            if (rc == 2) throw LlamaError("decode was aborted");
            if (rc == 1) throw LlamaError(with_log("no room in the KV cache for the batch (n_ctx too small?)"));
            if (rc != 0) throw LlamaError(with_log("llama_decode failed with code " + std::to_string(rc)));
            n_batch_tokens_ = n;
            all_logits_ = all_logits;
            const int rows = all_logits ? n : 1;
            n_outputs_ = rows;
            return rows;
        });
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

    // llama.cpp addresses logits by batch position: i in [0, n) when every token has logits,
    // else only the last one (n-1 or -1). Anything else would abort inside llama.cpp.
    void check_batch_index(int idx) const {
        const int n = n_batch_tokens_;
        const bool ok = n_outputs_ > 0 && (all_logits_ ? (idx >= -n && idx < n) : (idx == -1 || idx == n - 1));
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

    // Forget positions >= pos (the tail of sequence 0). False if this memory cannot do that
    // (then the caller must clear it instead).
    bool truncate(int pos) {
        return locked([&](llama_context * ctx) {
            n_outputs_ = 0;
            return llama_memory_seq_rm(llama_get_memory(ctx), 0, std::max(pos, 0), -1);
        });
    }

    int n_outputs() const { return n_outputs_; }
    uint32_t n_ctx() const { return n_ctx_; }
    uint32_t n_batch() const { return n_batch_; }
    void request_abort() { abort_ = true; }

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
    uint32_t n_batch_ = 0;
    uint32_t n_ctx_ = 0;
    std::atomic<int> n_outputs_{0};
    int n_batch_tokens_ = 0;
    bool all_logits_ = false;
    std::atomic<bool> abort_{false};
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
        .def(py::init<Model &, uint32_t, uint32_t, uint32_t, int, int, bool>(), py::arg("model"),
             py::arg("n_ctx") = 512, py::arg("n_batch") = 512, py::arg("n_ubatch") = 512, py::arg("n_threads") = 1,
             py::arg("n_threads_batch") = 1, py::arg("flash_attn") = false)
        .def("close", &Context::close)
        .def_property_readonly("n_ctx", &Context::n_ctx)
        .def_property_readonly("n_batch", &Context::n_batch)
        .def_property_readonly("n_outputs", &Context::n_outputs)
        .def_property("n_threads",
                      [](Context & c) { return c.locked([](llama_context * ctx) { return llama_n_threads(ctx); }); },
                      [](Context & c, int n) {
                          if (n < 1) throw py::value_error("n_threads must be at least 1");
                          c.locked([n](llama_context * ctx) {
                              llama_set_n_threads(ctx, n, llama_n_threads_batch(ctx));
                              return 0;
                          });
                      })
        .def("decode", &Context::decode, py::arg("tokens"), py::arg("pos0"), py::arg("all_logits") = false)
        .def("logits", &Context::logits, py::arg("out") = py::none(),
             "The last decode's logits, (n_outputs, n_vocab), copied into `out` or a new float32 array.")
        .def("memory_clear", &Context::memory_clear)
        .def("truncate", &Context::truncate, py::arg("pos"))
        .def("request_abort", &Context::request_abort, "Make the running decode stop (from another thread).");
}

}  // namespace pybonsai
