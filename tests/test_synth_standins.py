"""The synthetic stand-ins for llama-cpp-python's test models that have no Bonsai counterpart:

    tiny-mamba  Mamba-1 (architecture `mamba`, GPT-NeoX tokenizer, no chat template), for
                QuantFactory/mamba-130m-hf-GGUF: a purely recurrent model
    tiny-embed  the tiny Qwen3 with `qwen3.pooling_type` MEAN, for bge-small: llama.cpp pools by
                default, so `Llama(path, embedding=True).embed(text)` is one vector

Each is written once (seed 0), loaded through pybonsai.Llama and run.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pybonsai import Llama, synth
from pybonsai.model_info import describe_layers, layer_split
from pybonsai.synth_shapes import SHAPES

PROMPT = "The quick brown fox"
N_PREDICT = 12


def _write(tmp_path_factory: pytest.TempPathFactory, llama_cpp_dir: Path, shape: str) -> Path:
    vocab, template = synth.ARCH_FILES[SHAPES[shape].arch]
    text = None if template is None else (llama_cpp_dir / template).read_text("utf-8")
    path = tmp_path_factory.mktemp("standins") / f"{shape}.gguf"
    return synth.write_model(path, shape, seed=0, vocab_gguf=llama_cpp_dir / vocab, chat_template=text)


@pytest.fixture(scope="module")
def mamba_path(tmp_path_factory: pytest.TempPathFactory, llama_cpp_dir: Path) -> Path:
    return _write(tmp_path_factory, llama_cpp_dir, "tiny-mamba")


@pytest.fixture(scope="module")
def embed_path(tmp_path_factory: pytest.TempPathFactory, llama_cpp_dir: Path) -> Path:
    return _write(tmp_path_factory, llama_cpp_dir, "tiny-embed")


def _mamba(path: Path) -> Llama:
    # llama-cpp-python's own test settings for mamba-130m
    return Llama(str(path), n_ctx=32, n_batch=32, n_ubatch=32, verbose=False)


def _greedy(llm: Llama, n: int) -> list[int]:
    """n greedy tokens after what the context holds, evaluated one at a time."""
    out = []
    for _ in range(n):
        logits = llm.last_logits
        assert np.isfinite(logits).all()
        out.append(int(np.argmax(logits)))
        llm.eval([out[-1]])
    return out


# --- tiny-mamba --------------------------------------------------------------------------

def test_mamba_metadata_is_what_the_converter_writes(mamba_path: Path) -> None:
    llm = _mamba(mamba_path)
    meta = llm.metadata
    assert meta["general.architecture"] == "mamba"
    shape = SHAPES["tiny-mamba"]
    assert int(meta["mamba.ssm.inner_size"]) == 2 * shape.n_embd
    assert int(meta["mamba.ssm.time_step_rank"]) == shape.ssm_dt_rank
    assert meta["mamba.ssm.dt_b_c_rms"] == "false"
    assert int(meta["mamba.attention.head_count"]) == 0 and int(meta["mamba.feed_forward_length"]) == 0
    assert "tokenizer.chat_template" not in meta and llm.chat_template is None
    assert llm.n_vocab() == 50432 and llm.n_embd() == shape.n_embd  # GPT-NeoX's vocabulary
    assert llm.is_recurrent and llm.model.is_recurrent and not llm.model.is_hybrid
    # `pybonsai info`: no hybrid split for a purely recurrent model
    assert layer_split({**meta, "mamba.block_count": 2}) is None
    assert describe_layers({**meta, "mamba.block_count": 2}) == "2 (all recurrent, no attention)"


def test_mamba_greedy_completion_is_finite_and_deterministic(mamba_path: Path) -> None:
    texts = []
    for _ in range(2):  # two fresh instances
        llm = _mamba(mamba_path)
        out = llm.create_completion(PROMPT, max_tokens=N_PREDICT, temperature=0.0)
        assert out["usage"]["completion_tokens"] == N_PREDICT
        logits = llm.last_logits
        assert np.isfinite(logits).all() and 0.1 < float(logits.std()) < 100
        texts.append(out["choices"][0]["text"])
        # the same instance again: its recurrent state cannot be cut back, so the prompt is re-evaluated
        again = llm.create_completion(PROMPT, max_tokens=N_PREDICT, temperature=0.0)
        assert again["choices"][0]["text"] == texts[-1]
    assert texts[0] == texts[1] and texts[0].strip()


def test_mamba_state_save_and_load_replays_the_continuation(mamba_path: Path) -> None:
    llm = _mamba(mamba_path)
    prompt = llm.tokenize(PROMPT.encode())
    llm.eval(prompt)
    saved = llm.save_state()
    first = _greedy(llm, N_PREDICT)
    llm.load_state(saved)
    assert llm.n_tokens == len(prompt)
    assert _greedy(llm, N_PREDICT) == first

    fresh = _mamba(mamba_path)  # a fresh model, loading the state of another instance
    fresh.load_state(saved)
    assert _greedy(fresh, N_PREDICT) == first
    fresh.reset()
    fresh.eval(prompt)          # and evaluating the prompt itself
    assert _greedy(fresh, N_PREDICT) == first


def test_mamba_prompt_cache_reuse_matches_a_fresh_model(mamba_path: Path) -> None:
    from pybonsai import LlamaRAMCache

    llm = _mamba(mamba_path)
    llm.set_cache(LlamaRAMCache())
    texts = [llm.create_completion(p, max_tokens=N_PREDICT, temperature=0.0)["choices"][0]["text"]
             for p in (PROMPT, PROMPT + " jumps", PROMPT)]
    fresh = [_mamba(mamba_path).create_completion(p, max_tokens=N_PREDICT, temperature=0.0)["choices"][0]["text"]
             for p in (PROMPT, PROMPT + " jumps")]
    assert texts == [fresh[0], fresh[1], fresh[0]]


def test_mamba_shape_validation() -> None:
    shape = SHAPES["tiny-mamba"]
    with pytest.raises(ValueError, match="no attention heads"):
        replace(shape, n_head=4).validate()
    with pytest.raises(ValueError, match="multiple of 128"):
        replace(shape, n_embd=200).validate()


def test_read_weights_refuses_mamba_clearly(mamba_path: Path) -> None:
    with pytest.raises(ValueError, match="qwen3 and qwen35 models only"):
        synth.read_weights(mamba_path)


# --- tiny-embed --------------------------------------------------------------------------

def test_embedding_model_pools_by_default(embed_path: Path) -> None:
    # what llama-cpp-python's test does for bge-small: no pooling_type given
    llm = Llama(str(embed_path), embedding=True, n_ctx=32, n_batch=32, n_ubatch=32, verbose=False)
    assert llm.metadata["qwen3.pooling_type"] == "1"
    assert llm.pooling_type() == 1  # MEAN, from the GGUF
    one = llm.embed("Hello World")
    assert isinstance(one, list) and len(one) == SHAPES["tiny-embed"].n_embd
    assert all(isinstance(v, float) for v in one) and np.isfinite(one).all()

    texts = ["Hello World", "Goodbye, cruel world", "x"]
    batched = np.array(llm.embed(texts))
    assert batched.shape == (3, llm.n_embd())
    for text, row in zip(texts, batched):
        np.testing.assert_allclose(row, llm.embed(text), atol=1e-4)
    # mean pooling over a causal model: every token counts (CLS would see the first token only)
    assert np.abs(batched[0] - np.array(llm.embed("Hello there"))).max() > 1e-3
