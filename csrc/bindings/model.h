// Model: a loaded GGUF (weights and vocabulary); shared by model.cpp, context.cpp, sampler.cpp.
#pragma once

#include "core.h"
#include "options.h"

#include "llama.h"

#include <climits>
#include <string_view>
#include <string>
#include <vector>

namespace pybonsai {

// Carries the user's progress callback into llama.cpp's loader thread-safely: the GIL is
// taken only inside the callback, and a Python exception stops the load and is re-raised.
struct ProgressRelay {
    py::object fn;
    bool user_aborted = false;
    std::unique_ptr<py::error_already_set> error;

    static bool call(float progress, void * self_) {
        auto * self = static_cast<ProgressRelay *>(self_);
        py::gil_scoped_acquire gil;
        try {
            py::object r = self->fn(progress);
            const int keep_going = r.is_none() ? 1 : PyObject_IsTrue(r.ptr());
            if (keep_going < 0) throw py::error_already_set();
            if (!keep_going) self->user_aborted = true;
            return keep_going == 1;
        } catch (py::error_already_set & e) {
            self->error = std::make_unique<py::error_already_set>(std::move(e));
        } catch (const std::exception & e) {
            PyErr_SetString(PyExc_RuntimeError, e.what());
            self->error = std::make_unique<py::error_already_set>();
        }
        return false;
    }
};

class Model {
public:
    Model(const std::string & path, int n_gpu_layers, bool vocab_only, bool use_mmap, bool use_mlock,
          py::object progress, const py::dict & options = py::dict()) : path_(path) {
        llama_model_params params = llama_model_default_params();
        params.n_gpu_layers = n_gpu_layers;
        params.vocab_only = vocab_only;
        // llama-cpp-python's mapping of its two booleans onto llama_load_mode
        params.load_mode = use_mmap ? (use_mlock ? LLAMA_LOAD_MODE_MMAP_MLOCK : LLAMA_LOAD_MODE_MMAP)
                                    : (use_mlock ? LLAMA_LOAD_MODE_MLOCK : LLAMA_LOAD_MODE_NONE);
        ModelOptions extra;  // split_mode, main_gpu, tensor_split, kv_overrides (kept alive for the load)
        extra.apply(params, options);
        ProgressRelay relay{std::move(progress)};
        if (!relay.fn.is_none()) {
            params.progress_callback = &ProgressRelay::call;
            params.progress_callback_user_data = &relay;
        }
        take_log();  // start this load with an empty log
        llama_model * raw;
        {
            py::gil_scoped_release release;
            raw = llama_model_load_from_file(path.c_str(), params);
        }
        if (relay.error) {
            if (raw) llama_model_free(raw);
            throw std::move(*relay.error);
        }
        if (!raw) {
            if (relay.user_aborted) throw LlamaError("loading '" + path + "' was cancelled by the progress callback");
            throw LlamaError(with_log("failed to load model from '" + path + "'"));
        }
        model_ = ModelPtr(raw, llama_model_free);
        vocab_only_ = vocab_only;
        vocab_ = llama_model_get_vocab(raw);
        n_vocab_ = llama_vocab_n_tokens(vocab_);
    }

    const ModelPtr & shared() const {
        if (!model_) throw LlamaError("the model is closed");
        return model_;
    }
    const llama_model * get() const { return shared().get(); }
    const llama_vocab * vocab() const { shared(); return vocab_; }
    int n_vocab() const { shared(); return n_vocab_; }
    void close() { model_.reset(); }
    bool closed() const { return !model_; }
    bool vocab_only() const { return vocab_only_; }
    const std::string & path() const { return path_; }

    void check_token(llama_token t) const {
        if (t < 0 || t >= n_vocab()) {
            throw py::value_error("token id " + std::to_string(t) + " is out of range [0, " +
                                  std::to_string(n_vocab_) + ")");
        }
    }

    // llama.cpp aborts the process when a model without a vocabulary (tokenizer.ggml.model
    // "none") is asked to tokenize or detokenize: refuse first.
    void require_vocab() const {
        if (llama_vocab_type(vocab()) == LLAMA_VOCAB_TYPE_NONE) {
            throw LlamaError("'" + path_ + "' has no vocabulary (tokenizer.ggml.model is \"none\"): "
                             "it cannot tokenize or detokenize");
        }
    }

    std::vector<llama_token> tokenize(const py::bytes & text, bool add_special, bool parse_special) const {
        std::string_view s = text;
        if (s.size() > INT32_MAX / 2) throw py::value_error("text too long to tokenize");
        require_vocab();
        ModelPtr keep = shared();  // the vocabulary must outlive a concurrent close()
        const llama_vocab * vocab = llama_model_get_vocab(keep.get());
        std::vector<llama_token> out(s.size() + 8);
        int32_t n;
        try {
            py::gil_scoped_release release;
            n = llama_tokenize(vocab, s.data(), (int32_t) s.size(), out.data(), (int32_t) out.size(),
                               add_special, parse_special);
            if (n < 0 && n != INT32_MIN) {
                out.resize(-n);
                n = llama_tokenize(vocab, s.data(), (int32_t) s.size(), out.data(), (int32_t) out.size(),
                                   add_special, parse_special);
            }
        } catch (const std::exception & e) {  // e.g. a vocabulary missing the tokens its type needs
            throw LlamaError(with_log("'" + path_ + "': tokenization failed: " + e.what()));
        }
        if (n < 0) throw LlamaError(with_log("tokenization failed"));
        out.resize(n);
        return out;
    }

    py::bytes token_to_piece(llama_token t, bool special) const {
        check_token(t);
        require_vocab();
        char buf[256];
        int32_t n = llama_token_to_piece(vocab(), t, buf, sizeof buf, 0, special);
        if (n >= 0) return py::bytes(buf, n);
        std::string big(-n, '\0');
        n = llama_token_to_piece(vocab(), t, big.data(), (int32_t) big.size(), 0, special);
        if (n < 0) throw LlamaError(with_log("token_to_piece failed"));
        return py::bytes(big.data(), n);
    }

    py::bytes detokenize(const std::vector<llama_token> & tokens, bool remove_special, bool unparse_special) const {
        for (llama_token t : tokens) check_token(t);
        require_vocab();
        std::string out(tokens.size() * 8 + 16, '\0');
        int32_t n = llama_detokenize(vocab(), tokens.data(), (int32_t) tokens.size(), out.data(),
                                     (int32_t) out.size(), remove_special, unparse_special);
        if (n < 0 && n != INT32_MIN) {
            out.resize(-n);
            n = llama_detokenize(vocab(), tokens.data(), (int32_t) tokens.size(), out.data(),
                                 (int32_t) out.size(), remove_special, unparse_special);
        }
        if (n < 0) throw LlamaError(with_log("detokenization failed"));
        return py::bytes(out.data(), n);
    }

    py::dict metadata() const {
        py::dict out;
        const int32_t count = llama_model_meta_count(get());
        std::vector<char> key(512), val(4096);
        for (int32_t i = 0; i < count; ++i) {
            int32_t nk = llama_model_meta_key_by_index(get(), i, key.data(), key.size());
            int32_t nv = llama_model_meta_val_str_by_index(get(), i, val.data(), val.size());
            if (nk < 0 || nv < 0) continue;
            if ((size_t) nk >= key.size()) { key.resize(nk + 1); llama_model_meta_key_by_index(get(), i, key.data(), key.size()); }
            if ((size_t) nv >= val.size()) { val.resize(nv + 1); llama_model_meta_val_str_by_index(get(), i, val.data(), val.size()); }
            // keys and values are untrusted bytes: invalid UTF-8 becomes U+FFFD, never an exception
            out[py::bytes(key.data(), nk).attr("decode")("utf-8", "replace")] =
                py::bytes(val.data(), nv).attr("decode")("utf-8", "replace");
        }
        return out;
    }

    py::object chat_template(const py::object & name) const {
        std::string n = name.is_none() ? std::string() : name.cast<std::string>();
        const char * t = llama_model_chat_template(get(), n.empty() ? nullptr : n.c_str());
        if (!t) return py::none();
        return py::str(py::bytes(t).attr("decode")("utf-8", "replace"));
    }

    std::string desc() const {
        char buf[256];
        int32_t n = llama_model_desc(get(), buf, sizeof buf);
        return std::string(buf, n > 0 ? std::min<size_t>(n, sizeof buf - 1) : 0);
    }

private:
    std::string path_;
    ModelPtr model_;
    const llama_vocab * vocab_ = nullptr;
    int n_vocab_ = 0;
    bool vocab_only_ = false;
};

}  // namespace pybonsai
