// Sampler: llama.cpp's sampler chain, built stage by stage from Python (pybonsai.sampling).
#include "core.h"
#include "model.h"

#include <cmath>

namespace pybonsai {

llama_token sample_from(py::handle context, int idx, llama_token (*fn)(void *, llama_context *, int32_t), void * arg);

namespace {

class Sampler {
public:
    Sampler() {
        llama_sampler_chain_params p = llama_sampler_chain_default_params();
        p.no_perf = true;
        chain_ = llama_sampler_chain_init(p);
    }
    ~Sampler() { llama_sampler_free(chain_); }
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

    llama_token sample(py::handle context, int idx) {
        auto fn = [](void * chain, llama_context * ctx, int32_t i) {
            return llama_sampler_sample(static_cast<llama_sampler *>(chain), ctx, i);
        };
        return sample_from(context, idx, fn, chain_);
    }

    llama_sampler * chain_;
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
        .def("accept", [](Sampler & s, llama_token t) { llama_sampler_accept(s.chain_, t); }, py::arg("token"))
        .def("reset", [](Sampler & s) { llama_sampler_reset(s.chain_); })
        .def_property_readonly("n_stages", [](const Sampler & s) { return llama_sampler_chain_n(s.chain_); });
}

}  // namespace pybonsai
