"""llama-cpp-python's parameter names, positional orders and defaults, and what pybonsai does
with each: implemented (checked by effect), routed, or accepted with a warning naming it."""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

from pybonsai import Llama, UnsupportedParameterWarning

# Taken from llama-cpp-python 0.3.36 (llama_cpp/llama.py), in its order.
LLAMA_INIT = """model_path n_gpu_layers split_mode main_gpu tensor_split vocab_only use_mmap use_mlock
kv_overrides seed n_ctx n_batch n_ubatch n_threads n_threads_batch rope_scaling_type pooling_type
attention_type rope_freq_base rope_freq_scale yarn_ext_factor yarn_attn_factor yarn_beta_fast
yarn_beta_slow yarn_orig_ctx logits_all embedding offload_kqv flash_attn op_offload swa_full no_perf
last_n_tokens_size lora_base lora_scale lora_path numa chat_format chat_handler draft_model tokenizer
type_k type_v spm_infill verbose""".split()
LLAMA_INIT_DEFAULTS = dict(n_gpu_layers=0, split_mode=1, main_gpu=0, tensor_split=None, use_mmap=True,
                           use_mlock=False, n_ctx=512, n_batch=512, n_ubatch=512, rope_scaling_type=-1,
                           pooling_type=-1, attention_type=-1, rope_freq_base=0.0, rope_freq_scale=0.0,
                           yarn_ext_factor=-1.0, yarn_attn_factor=1.0, yarn_beta_fast=32.0, yarn_beta_slow=1.0,
                           yarn_orig_ctx=0, logits_all=False, embedding=False, offload_kqv=True,
                           last_n_tokens_size=64, lora_scale=1.0, numa=False, seed=0xFFFFFFFF)
COMPLETION = """prompt suffix max_tokens temperature top_p min_p typical_p logprobs echo stop frequency_penalty
presence_penalty repeat_penalty top_k stream seed tfs_z mirostat_mode mirostat_tau mirostat_eta model
stopping_criteria logits_processor grammar logit_bias""".split()
CHAT = """messages functions function_call tools tool_choice temperature top_p top_k min_p typical_p stream stop
seed response_format max_tokens presence_penalty frequency_penalty repeat_penalty tfs_z mirostat_mode
mirostat_tau mirostat_eta model logits_processor grammar logit_bias logprobs top_logprobs""".split()
GENERATE = """tokens top_k top_p min_p typical_p temp repeat_penalty reset frequency_penalty presence_penalty
tfs_z mirostat_mode mirostat_tau mirostat_eta penalize_nl logits_processor stopping_criteria grammar""".split()
SAMPLE = """top_k top_p min_p typical_p temp repeat_penalty frequency_penalty presence_penalty tfs_z
mirostat_mode mirostat_eta mirostat_tau penalize_nl logits_processor grammar idx""".split()
ORDERS = {"__init__": LLAMA_INIT, "create_completion": COMPLETION, "__call__": COMPLETION,
          "create_chat_completion": CHAT, "generate": GENERATE, "sample": SAMPLE,
          "tokenize": ["text", "add_bos", "special"], "detokenize": ["tokens", "prev_tokens", "special"],
          "embed": ["input", "normalize", "truncate", "return_count"], "create_embedding": ["input", "model"]}


def _params(method: str) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(getattr(Llama, method)).parameters.values()
            if p.name not in ("self", "llm") and p.kind != p.VAR_KEYWORD]


@pytest.mark.parametrize("method", sorted(ORDERS))
def test_parameter_order_is_llama_cpp_pythons(method):
    names = [p.name for p in _params(method)]
    expected = ORDERS[method]
    assert names[:len(expected)] == expected  # pybonsai's own extras may only follow


def test_llama_init_defaults_are_llama_cpp_pythons():
    params = {p.name: p for p in _params("__init__")}
    assert params["model_path"].kind == params["model_path"].POSITIONAL_OR_KEYWORD
    assert all(p.kind == p.KEYWORD_ONLY for name, p in params.items() if name != "model_path")
    assert {name: params[name].default for name in LLAMA_INIT_DEFAULTS} == LLAMA_INIT_DEFAULTS


def test_flash_attn_default_is_llama_cpps_auto_and_false_still_turns_it_off():
    # The one default that differs from llama-cpp-python's (False): None, llama.cpp's "auto",
    # on for the CPU (README: decode skips the padded KV cells). An explicit False stays off.
    from pybonsai import kv_cache
    assert inspect.signature(Llama).parameters["flash_attn"].default is None
    assert kv_cache.resolve(None, None, None).flash_attn == kv_cache.FLASH_ATTN_AUTO
    assert kv_cache.resolve(None, None, False).flash_attn == kv_cache.FLASH_ATTN_DISABLED


@pytest.fixture(scope="module")
def llm(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=128, n_batch=64) as model:
        yield model


@pytest.mark.parametrize("kwargs, name", [
    (dict(lora_base="base.gguf"), "lora_base"),
    (dict(lora_scale=0.5), "lora_scale"),
    (dict(tokenizer=object()), "tokenizer"), (dict(spm_infill=True), "spm_infill"),
    (dict(not_a_parameter=1), "not_a_parameter"),
])
def test_inapplicable_init_arguments_warn_naming_the_parameter(tiny_model_path, kwargs, name):
    with pytest.warns(UnsupportedParameterWarning, match=rf"^{name}: ") as record:
        with Llama(tiny_model_path, n_ctx=64, **kwargs) as model:
            assert model.create_completion("Hi", max_tokens=2, temperature=0)["choices"][0]["text"] is not None
    assert len(record) == 1


def test_numa_is_initialized_once(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=64, numa=True) as model:      # distribute; harmless on one node
        assert model("Hi", max_tokens=2, temperature=0)["usage"]["completion_tokens"] <= 2
    with pytest.warns(UnsupportedParameterWarning, match="^numa: NUMA strategy 1 is already set"):
        Llama(tiny_model_path, n_ctx=64, numa=2).close()
    with pytest.raises(ValueError, match="numa"):
        Llama(tiny_model_path, n_ctx=64, numa=9)


@pytest.mark.parametrize("chat_format", ["chat_template.default", "llama-2"])
def test_chat_format_is_applied_silently(tiny_model_path, chat_format):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Llama(tiny_model_path, n_ctx=64, chat_format=chat_format) as model:
            assert model.chat_format == chat_format


@pytest.mark.parametrize("kwargs", [dict(tfs_z=0.9), dict(penalize_nl=False)])
def test_sampling_knobs_llama_cpp_removed_warn(llm, kwargs):
    name = next(iter(kwargs))
    with pytest.warns(UnsupportedParameterWarning, match=rf"^{name}: "):
        tokens = llm.tokenize(b"Hello")
        gen = llm.generate(tokens, temp=0, **kwargs)
        assert isinstance(next(gen), int)
        gen.close()


def _greedy_logits(model, text="The quick brown fox"):
    model.reset()
    model.eval(model.tokenize(text.encode()))
    return model.last_logits.copy()


def test_rope_freq_base_is_applied(tiny_model_path, llm):
    base = _greedy_logits(llm)
    with Llama(tiny_model_path, n_ctx=128, n_batch=64, rope_freq_base=1e6) as same:   # the model's own theta
        np.testing.assert_allclose(_greedy_logits(same), base, rtol=0, atol=1e-5)
    with Llama(tiny_model_path, n_ctx=128, n_batch=64, rope_freq_base=100.0) as other:
        assert np.abs(_greedy_logits(other) - base).max() > 1e-3


def test_rope_freq_scale_and_yarn_are_applied(tiny_model_path, llm):
    base = _greedy_logits(llm)
    with Llama(tiny_model_path, n_ctx=128, n_batch=64, rope_freq_scale=0.25) as scaled:
        assert np.abs(_greedy_logits(scaled) - base).max() > 1e-3
    with Llama(tiny_model_path, n_ctx=128, n_batch=64, rope_scaling_type=2, rope_freq_scale=0.5,
               yarn_orig_ctx=64) as yarn:
        assert np.abs(_greedy_logits(yarn) - base).max() > 1e-3


def test_kv_overrides_reach_the_loader(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=0, kv_overrides={"qwen3.context_length": 1024}) as model:
        assert model.n_ctx() == 1024
    with Llama(tiny_model_path, n_ctx=0, kv_overrides={"qwen3.rope.freq_base": 100.0}) as a, \
            Llama(tiny_model_path, n_ctx=128, rope_freq_base=100.0) as b:
        np.testing.assert_allclose(_greedy_logits(a), _greedy_logits(b), rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad, error", [({"k": [1]}, ValueError), ({"": 1}, ValueError), ({"k": "x" * 200}, ValueError),
                                        ([("k", 1)], TypeError), ({"k": 2**70}, ValueError)])
def test_bad_kv_overrides_are_python_errors(tiny_model_path, bad, error):
    with pytest.raises(error, match="kv_overrides"):
        Llama(tiny_model_path, n_ctx=64, kv_overrides=bad)


def test_bad_context_enums_are_value_errors(tiny_model_path):
    for kwargs in (dict(pooling_type=9), dict(rope_scaling_type=7), dict(attention_type=3)):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            Llama(tiny_model_path, n_ctx=64, **kwargs)


def test_n_threads_batch_offload_and_perf_switches_are_accepted(tiny_model_path, llm):
    with Llama(tiny_model_path, n_ctx=128, n_batch=64, n_threads=1, n_threads_batch=2, offload_kqv=False,
               no_perf=True, op_offload=False, swa_full=True, n_ubatch=16) as model:
        np.testing.assert_allclose(_greedy_logits(model), _greedy_logits(llm), rtol=0, atol=1e-3)


def test_last_n_tokens_size_is_the_penalty_window(tiny_model_path):
    # A hugely negative presence penalty makes greedy pick a token from the penalty window.
    prompt = "The quick brown fox jumps"
    firsts = {}
    for last_n in (0, 1, 64):
        with Llama(tiny_model_path, n_ctx=128, last_n_tokens_size=last_n) as model:
            tokens = model.tokenize(prompt.encode())
            gen = model.generate(tokens, temp=0, presence_penalty=-1e9)
            firsts[last_n] = next(gen)
            gen.close()
            model.reset()
            model.eval(tokens)
            plain = int(np.argmax(model.last_logits))
    assert firsts[0] == plain              # an empty window: no penalty
    assert firsts[1] == tokens[-1]         # the window is the last token only
    assert firsts[64] in tokens and firsts[64] != plain


def test_generate_and_sample_take_llama_cpp_pythons_positional_order(llm):
    tokens = llm.tokenize(b"The quick brown fox")
    # generate(tokens, top_k, top_p, min_p, typical_p, temp): temp is the 6th
    gen = llm.generate(tokens, 40, 0.95, 0.05, 1.0, 0.0)
    first = [next(gen) for _ in range(4)]
    gen.close()
    llm.reset()
    llm.eval(tokens)
    assert first[0] == int(np.argmax(llm.last_logits))
    assert llm.sample(40, 0.95, 0.05, 1.0, 0.0) == first[0]


def test_generate_evaluates_tokens_sent_to_it(llm):
    tokens = llm.tokenize(b"The quick")
    gen = llm.generate(tokens, temp=0)
    first = next(gen)
    extra = llm.tokenize(b" brown fox", add_bos=False)
    second = gen.send(extra)
    gen.close()
    llm.reset()
    llm.eval(tokens + [first] + extra)
    assert second == int(np.argmax(llm.last_logits))


def test_detokenize_prev_tokens_is_the_offset_mapping(llm):
    tokens = llm.tokenize("héllo wörld ✓".encode())
    for cut in range(len(tokens)):
        head, tail = tokens[:cut], tokens[cut:]
        assert llm.detokenize(head) + llm.detokenize(tail, head) == llm.detokenize(tokens)
    assert llm.detokenize(tokens, None, False) == llm.detokenize(tokens)


def test_typical_p_and_mirostat_sample(llm):
    for kwargs in (dict(typical_p=0.5), dict(mirostat_mode=1), dict(mirostat_mode=2, mirostat_tau=3.0)):
        a = llm("Once upon a time", max_tokens=8, temperature=0.8, seed=7, **kwargs)["choices"][0]["text"]
        b = llm("Once upon a time", max_tokens=8, temperature=0.8, seed=7, **kwargs)["choices"][0]["text"]
        assert a == b
    with pytest.raises(ValueError, match="mirostat_mode"):
        llm("x", max_tokens=1, mirostat_mode=3)


def test_negative_temperature_samples_the_whole_distribution(llm):
    # llama-cpp-python: temp < 0 draws from the softmax of the (penalized) logits, no truncation.
    a = llm("Once upon a time", max_tokens=8, temperature=-1.0, seed=3)["choices"][0]["text"]
    b = llm("Once upon a time", max_tokens=8, temperature=-1.0, seed=3)["choices"][0]["text"]
    assert a == b
