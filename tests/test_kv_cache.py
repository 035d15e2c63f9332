"""KV cache types and flash attention (type_k, type_v, flash_attn): argument checks before
llama.cpp sees them, and quantized caches that stay close to f16 on the tiny model."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import pybonsai
from pybonsai import Llama, kv_cache

N_POS = 128


def test_names_and_llama_cpp_python_constants_resolve_to_ggml_ids():
    assert kv_cache.parse_type("q8_0", "type_k") == pybonsai.GGML_TYPE_Q8_0 == 8
    assert kv_cache.parse_type("Q4_0", "type_k") == pybonsai.GGML_TYPE_Q4_0 == 2
    assert kv_cache.parse_type(pybonsai.GGML_TYPE_BF16, "type_v") == 30
    assert kv_cache.parse_type(None, "type_v") == pybonsai.GGML_TYPE_F16
    assert kv_cache.resolve("q8_0", "q8_0", True) == kv_cache.KVCacheConfig(8, 8, kv_cache.FLASH_ATTN_ENABLED)
    # 'auto' with a quantized V resolves to enabled, as llama.cpp would
    assert kv_cache.resolve(None, "q4_0", "auto").flash_attn == kv_cache.FLASH_ATTN_ENABLED
    assert kv_cache.resolve(None, None, "auto").flash_attn == kv_cache.FLASH_ATTN_AUTO
    assert kv_cache.resolve("q8_0", None, False).flash_attn == kv_cache.FLASH_ATTN_DISABLED  # quantized K alone is fine


@pytest.mark.parametrize("kwargs, message", [
    (dict(type_v="q8_0", flash_attn="off"), "requires flash_attn=True"),
    (dict(type_v=pybonsai.GGML_TYPE_Q4_0, flash_attn=False), "requires flash_attn=True"),
    (dict(type_k="q9_0"), "not a KV cache type"),
    (dict(type_k=41), "not a KV cache type id"),          # Q1_0: a ggml type, not a cache type
    (dict(type_v=-1, flash_attn=True), "not a KV cache type id"),
    (dict(flash_attn="sometimes"), "flash_attn must be"),
])
def test_invalid_combinations_are_value_errors_before_any_loading(kwargs, message, tmp_path):
    # the path does not exist: a ValueError (not FileNotFoundError) proves the check ran first
    with pytest.raises(ValueError, match=message):
        Llama(tmp_path / "missing.gguf", **kwargs)


def test_wrong_argument_type_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="type_k"):
        Llama(tmp_path / "missing.gguf", type_k=8.0)


def test_block_size_must_divide_the_head_size():
    cfg = kv_cache.resolve("q8_0", "q4_0", True)
    kv_cache.check_head_dims(cfg, 128, 64)
    with pytest.raises(ValueError, match="head size 48"):
        kv_cache.check_head_dims(cfg, 128, 48)
    kv_cache.check_head_dims(kv_cache.resolve("q8_0", None, False), 48, 48)  # no FA: K is not split by blocks


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _logprobs(path, tokens, **kwargs) -> np.ndarray:
    with Llama(path, n_ctx=256, n_batch=256, logits_all=True, n_threads=1, **kwargs) as llm:
        llm.eval(tokens)
        return _log_softmax(llm.scores[:len(tokens)])


def test_quantized_kv_round_trip_stays_close_to_f16(tiny_model_path):
    tokens = [int(t) for t in np.random.default_rng(7).integers(0, 151_000, N_POS)]
    ref = _logprobs(tiny_model_path, tokens, flash_attn=True)
    q8 = _logprobs(tiny_model_path, tokens, type_k="q8_0", type_v="q8_0", flash_attn=True)
    q4 = _logprobs(tiny_model_path, tokens, type_k=pybonsai.GGML_TYPE_Q4_0, type_v="q4_0", flash_attn=True)

    def mean_kl(other):
        return float((np.exp(ref) * (ref - other)).sum(axis=-1).mean())

    # The types reach llama.cpp: quantized caches change the numbers, q4_0 more than q8_0.
    assert not np.array_equal(ref, q8)
    assert 0 < mean_kl(q8) < mean_kl(q4)
    # Tolerance: q8_0 rounds each K/V value to 1/254 of its 32-value block's range (relative
    # error <= 0.4%); through softmax-weighted sums that perturbs logits by well under 1%, which
    # for this model's near-flat distributions is a mean KL of order 1e-4 (measured 7.5e-5 at
    # 256 positions). 1e-3 leaves 10x headroom yet fails for a broken cache (KL of order 1).
    # Per entry: log-probabilities here are about -12; q8_0 moves none by more than 1% of that.
    assert mean_kl(q8) < 1e-3
    assert np.abs(ref - q8).max() < 0.01 * np.abs(ref).max()
    assert mean_kl(q4) < 1e-2


def test_flash_attention_matches_the_plain_path_and_is_the_default(tiny_model_path):
    tokens = [int(t) for t in np.random.default_rng(3).integers(0, 151_000, 64)]
    plain = _logprobs(tiny_model_path, tokens, flash_attn=False)
    fa = _logprobs(tiny_model_path, tokens, flash_attn=True)
    assert np.abs(plain - fa).max() < 0.01 * np.abs(plain).max()
    assert not np.array_equal(plain, fa)  # two different attention paths ran
    # the default ("auto") is flash attention on the CPU: the same numbers, bit for bit
    assert np.array_equal(_logprobs(tiny_model_path, tokens), fa)
    # and a quantized V cache needs no flash_attn=True under the default
    assert np.isfinite(_logprobs(tiny_model_path, tokens[:8], type_v="q8_0")).all()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pybonsai", *args], capture_output=True, text=True, timeout=300)


def test_cli_switches(tiny_model_path):
    ok = _cli("run", "Hello", "-m", str(tiny_model_path), "-n", "4", "--temp", "0", "--ctx", "256",
              "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on", "--threads", "1")
    assert ok.returncode == 0, ok.stderr
    bad = _cli("run", "Hello", "-m", str(tiny_model_path), "-n", "4", "-ctv", "q4_0", "-fa", "off")
    assert bad.returncode == 1
    assert "requires flash_attn=True" in bad.stderr


def test_engine_takes_the_same_switches(tiny_model_path, tmp_path):
    from pybonsai import Engine

    with pytest.raises(ValueError, match="requires flash_attn=True"):
        Engine(str(tmp_path / "missing.gguf"), type_v="q8_0", flash_attn=False)
    with Engine(str(tiny_model_path), n_parallel=2, n_ctx=512, n_threads=1, type_k="q8_0", type_v="q8_0",
                flash_attn=True) as engine:
        out = engine.create_completion("Hello", max_tokens=4, temperature=0)
        assert out["usage"]["completion_tokens"] >= 1
    with pytest.raises(ValueError, match="requires flash_attn=True"):  # the default is off
        Engine(str(tmp_path / "missing.gguf"), type_v="q4_0")
