"""Embeddings (Llama(embedding=True), embed, create_embedding) against the NumPy reference:
llama.cpp's embedding of a token is the final hidden state after the output norm (what the LM
head reads), pooled per input by the context's pooling type.

Tolerance. The hidden state passes through eight Q1_0 matmuls per layer path (q, k, v, o, gate,
up, down — the LM head is not involved), each rounding its input to Q8_0 as ggml does; the
reasoning in test_reference_logits.py gives ~1-1.5% relative L2 error per vector against the
exact float64 reference. Measured on the tiny model: 1.2% per token (pooling NONE), 0.8% mean,
1.1% first token, 0.9% last token; against the ggml-like reference (q8_activations,
f16_attention) 8e-8 for single tokens and up to 0.26% where a rounding tie went the other way.
We allow REL_TOL = 3% (as for the logits); a wrong pooling (mean instead of last, first
instead of mean ...) is off by > 50%, which the tests check the tolerance rejects."""
from __future__ import annotations

import numpy as np
import pytest

import qwen3_reference as ref
from pybonsai import Llama

REL_TOL = 0.03
TEXTS = ["The quick brown fox jumps over the lazy dog", "héllo wörld", "1 + 1 = 2"]
POOLING = {"none": 0, "mean": 1, "cls": 2, "last": 3}


def _pool(h: np.ndarray, pooling: str) -> np.ndarray:
    return {"none": h, "mean": h.mean(axis=0), "cls": h[0], "last": h[-1]}[pooling]


def _rel(got, expected) -> float:
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return float(np.max(np.linalg.norm(got - expected, axis=-1) / np.linalg.norm(expected, axis=-1)))


@pytest.fixture(scope="module", params=sorted(POOLING))
def pooled(request, tiny_model_path):
    with Llama(tiny_model_path, n_ctx=128, n_batch=64, embedding=True, pooling_type=POOLING[request.param]) as llm:
        yield request.param, llm


def test_embed_matches_the_reference(pooled, tiny_weights):
    pooling, llm = pooled
    assert llm.pooling_type() == POOLING[pooling]
    results = llm.embed(TEXTS)
    assert isinstance(results, list) and len(results) == len(TEXTS)
    for text, got in zip(TEXTS, results):
        tokens = llm.tokenize(text.encode())
        expected = _pool(ref.hidden_states(tiny_weights, tokens), pooling)
        assert np.shape(got) == expected.shape
        err = _rel(got, expected)
        print(f"{pooling} {text!r}: max rel err {err:.2e}")
        assert err <= REL_TOL
        if pooling != "none":  # the tolerance tells poolings apart
            for other in ("mean", "cls", "last"):
                if other != pooling and len(tokens) > 1:
                    assert _rel(got, _pool(ref.hidden_states(tiny_weights, tokens), other)) > 10 * REL_TOL


def test_embed_shapes_and_types(pooled, tiny_model_path):
    pooling, llm = pooled
    one = llm.embed("hello world")
    n_embd = llm.n_embd()
    if pooling == "none":
        assert len(one) == len(llm.tokenize(b"hello world")) and all(len(row) == n_embd for row in one)
        assert all(isinstance(x, float) for x in one[0])
    else:
        assert len(one) == n_embd and all(isinstance(x, float) for x in one)
    # Each input is embedded on its own: the same text gives the same vector in any company.
    assert np.allclose(llm.embed(["x y z", "hello world"])[1], one, rtol=0, atol=1e-6)


def test_normalize_gives_unit_vectors(pooled):
    pooling, llm = pooled
    raw, unit = np.asarray(llm.embed("hello world")), np.asarray(llm.embed("hello world", normalize=True))
    np.testing.assert_allclose(np.linalg.norm(unit, axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=-1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_create_embedding_is_openai_shaped(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=128, embedding=True, pooling_type=1) as llm:
        single = llm.create_embedding("hello world")
        many = llm.create_embedding(["hello world", "good night moon"], model="my-model")
        n1, n2 = len(llm.tokenize(b"hello world")), len(llm.tokenize(b"good night moon"))
        assert single["object"] == "list" and single["model"] == llm.model_path
        assert [d["index"] for d in many["data"]] == [0, 1] and many["model"] == "my-model"
        assert all(d["object"] == "embedding" and len(d["embedding"]) == llm.n_embd() for d in many["data"])
        assert single["usage"] == {"prompt_tokens": n1, "total_tokens": n1}
        assert many["usage"] == {"prompt_tokens": n1 + n2, "total_tokens": n1 + n2}
        assert many["data"][0]["embedding"] == single["data"][0]["embedding"]
        vectors, count = llm.embed(["hello world"], return_count=True)
        assert count == n1 and vectors[0] == single["data"][0]["embedding"]


def test_truncate_and_errors(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=128, n_batch=8, embedding=True, pooling_type=3) as llm:
        long_text = "one two three four five six seven eight nine ten eleven twelve"
        tokens = llm.tokenize(long_text.encode())
        assert len(tokens) > 8
        assert llm.embed(long_text) == llm.embed(llm.detokenize(tokens[:8]).decode())
        with pytest.raises(ValueError, match="exceed batch size"):
            llm.embed(long_text, truncate=False)
        with pytest.raises(ValueError, match="empty"):
            llm.embed("")
        with pytest.raises(TypeError):
            llm.embed([b"bytes"])
    with Llama(tiny_model_path, n_ctx=64) as plain:
        with pytest.raises(RuntimeError, match="embedding=True"):
            plain.embed("hello")


def test_generation_still_works_after_embedding(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=128, embedding=True, pooling_type=1) as llm, \
            Llama(tiny_model_path, n_ctx=128) as plain:
        llm.embed("hello world")
        got = llm("The quick brown fox", max_tokens=6, temperature=0)["choices"][0]["text"]
        assert got == plain("The quick brown fox", max_tokens=6, temperature=0)["choices"][0]["text"]
