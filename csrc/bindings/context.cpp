// Context: a KV cache plus compute state over a Model; decodes batches, exposes logits.
#include "core.h"
#include "model.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <atomic>
#include <mutex>

namespace pybonsai {
namespace {

class Context {
public:
    Context(Model & model, uint32_t n_ctx, uint32_t n_batch, uint32_t n_ubatch, int n_threads,
            int n_threads_batch, bool flash_attn)
        : model_(model.shared()), n_vocab_(model.n_vocab()) {
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
        p.no_perf = false;
        take_log();
        {
            py::gil_scoped_release release;
            ctx_ = llama_init_from_model(model_.get(), p);
        }
        if (!ctx_) throw LlamaError(with_log("failed to create a context for '" + model.path() + "'"));
        n_batch_ = llama_n_batch(ctx_);
    }
    ~Context() { close(); }

    void close() {
        std::lock_guard<std::mutex> lock(mu_);
        if (ctx_) llama_free(ctx_);
        ctx_ = nullptr;
        model_.reset();
    }

    llama_context * get() const {
        if (!ctx_) throw LlamaError("the context is closed");
        return ctx_;
    }

    // Decode `tokens` at positions pos0.. of sequence 0. Logits are kept for every token when
    // `all_logits`, else for the last one only. Returns the number of logit rows produced.
    int decode(const std::vector<llama_token> & tokens, int pos0, bool all_logits) {
        const int n = (int) tokens.size();
        if (n == 0) throw py::value_error("cannot decode an empty batch");
        if ((uint32_t) n > n_batch_) {
            throw py::value_error("batch of " + std::to_string(n) + " tokens exceeds n_batch=" + std::to_string(n_batch_));
        }
        const uint32_t n_ctx = llama_n_ctx(get());
        if (pos0 < 0 || (uint64_t) pos0 + n > n_ctx) {
            throw py::value_error("positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + n - 1) +
                                  " exceed the context size n_ctx=" + std::to_string(n_ctx));
        }
        for (llama_token t : tokens) {
            if (t < 0 || t >= n_vocab_) {
                throw py::value_error("token id " + std::to_string(t) + " is out of range [0, " +
                                      std::to_string(n_vocab_) + ")");
            }
        }
        std::lock_guard<std::mutex> lock(mu_);
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
        take_log();
        int32_t rc;
        {
            py::gil_scoped_release release;
            rc = llama_decode(ctx_, batch);
        }
        llama_batch_free(batch);
        if (rc == 2) throw LlamaError("decode was aborted");
        if (rc == 1) throw LlamaError(with_log("no room in the KV cache for the batch (n_ctx too small?)"));
        if (rc != 0) throw LlamaError(with_log("llama_decode failed with code " + std::to_string(rc)));
        n_outputs_ = all_logits ? n : 1;
        return n_outputs_;
    }

    // The logits of the last decode, (n_outputs, n_vocab), a read-only view of llama.cpp's buffer:
    // valid until the next decode (copy what you keep).
    py::array_t<float> logits(py::object self) {
        if (n_outputs_ == 0) throw LlamaError("no logits yet: decode a batch first");
        float * data = llama_get_logits(get());
        if (!data) throw LlamaError(with_log("the context holds no logits"));
        py::array_t<float> view({(py::ssize_t) n_outputs_, (py::ssize_t) n_vocab_}, data, self);
        py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
        return view;
    }

    void check_output(int idx) const {
        if (idx < -n_outputs_ || idx >= n_outputs_) {
            throw py::index_error("logits row " + std::to_string(idx) + " does not exist (the last decode produced " +
                                  std::to_string(n_outputs_) + ")");
        }
    }

    void memory_clear() {
        std::lock_guard<std::mutex> lock(mu_);
        llama_memory_clear(llama_get_memory(get()), true);
        n_outputs_ = 0;
    }

    // Forget positions >= pos (the tail of sequence 0).
    void truncate(int pos) {
        std::lock_guard<std::mutex> lock(mu_);
        llama_memory_seq_rm(llama_get_memory(get()), 0, std::max(pos, 0), -1);
        n_outputs_ = 0;
    }

    int n_outputs() const { return n_outputs_; }
    void request_abort() { abort_ = true; }
    std::mutex & mutex() { return mu_; }

private:
    ModelPtr model_;
    llama_context * ctx_ = nullptr;
    int n_vocab_;
    uint32_t n_batch_ = 0;
    int n_outputs_ = 0;
    std::atomic<bool> abort_{false};
    std::mutex mu_;
};

}  // namespace

// For sampler.cpp: run `fn(ctx, idx)` on a context's last logits, row `idx` checked.
llama_token sample_from(py::handle context, int idx, llama_token (*fn)(void *, llama_context *, int32_t), void * arg) {
    Context & c = context.cast<Context &>();
    c.check_output(idx);
    llama_context * ctx = c.get();
    std::lock_guard<std::mutex> lock(c.mutex());
    py::gil_scoped_release release;
    return fn(arg, ctx, idx);
}

void init_context(py::module_ & m) {
    py::class_<Context>(m, "Context", "Inference state over a Model: KV cache, batch decode, logits.")
        .def(py::init<Model &, uint32_t, uint32_t, uint32_t, int, int, bool>(), py::arg("model"),
             py::arg("n_ctx") = 512, py::arg("n_batch") = 512, py::arg("n_ubatch") = 512, py::arg("n_threads") = 1,
             py::arg("n_threads_batch") = 1, py::arg("flash_attn") = false)
        .def("close", &Context::close)
        .def_property_readonly("n_ctx", [](const Context & c) { return llama_n_ctx(c.get()); })
        .def_property_readonly("n_batch", [](const Context & c) { return llama_n_batch(c.get()); })
        .def_property_readonly("n_outputs", &Context::n_outputs)
        .def_property("n_threads", [](const Context & c) { return llama_n_threads(c.get()); },
                      [](Context & c, int n) {
                          if (n < 1) throw py::value_error("n_threads must be at least 1");
                          llama_set_n_threads(c.get(), n, llama_n_threads_batch(c.get()));
                      })
        .def("decode", &Context::decode, py::arg("tokens"), py::arg("pos0"), py::arg("all_logits") = false)
        .def("logits", [](py::object self) { return self.cast<Context &>().logits(self); },
             "The last decode's logits, (n_outputs, n_vocab): a read-only view valid until the next decode.")
        .def("memory_clear", &Context::memory_clear)
        .def("truncate", &Context::truncate, py::arg("pos"))
        .def("request_abort", &Context::request_abort, "Make the running decode stop (from another thread).");
}

}  // namespace pybonsai
