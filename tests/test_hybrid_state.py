"""A model with a recurrent state (tiny-hybrid: qwen35, 3 Gated DeltaNet layers + 1 gated attention
layer) through the API that keeps, saves and reuses context state; and the greedy-text checks for the
ternary Qwen3 model (ternary-tiny), whose KV cache can be cut back as usual.

A recurrent state summarizes every token evaluated; llama.cpp cannot cut it back to a shorter
prefix (llama_memory_seq_rm refuses partial ranges). So pybonsai keeps a context's evaluated
tokens for a new prompt only when all of them start it, else it evaluates the prompt again from
scratch; the prompt cache uses an entry only when all of its tokens start the prompt, and stores
the prompt's state before its last control token (the next chat turn starts there) and before its
last token (a repeated or continued prompt starts there). Every check compares with a fresh Llama
(greedy tokens, or logits bit for bit), so a wrong state reused would show:
test_reusing_a_partly_matching_state_would_be_detected shows that it does.
"""
from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from pybonsai import Llama, LlamaDiskCache, LlamaRAMCache, LlamaState

from eval_recording import chat_turns, record_evals

N_CTX = 256
N_GEN = 6
PROMPTS = {
    "base": b"The quick brown fox jumps over the lazy dog, and then it runs into the forest",
    "diverging": b"The quick brown fox jumps over the lazy cat, who does not care at all",
    "shorter": b"The quick brown fox jumps over",
}


def _llama(path: Path) -> Llama:
    return Llama(path, n_ctx=N_CTX, n_batch=64, n_threads=1, verbose=False)


def _greedy(llm: Llama, tokens: list[int], n: int = N_GEN, reset: bool = True) -> list[int]:
    gen = llm.generate(tokens, temp=0.0, reset=reset)
    try:
        return list(islice(gen, n))
    finally:
        gen.close()


@pytest.fixture(scope="module")
def hybrid(tiny_hybrid_model_path):
    with _llama(tiny_hybrid_model_path) as llm:
        assert llm.is_recurrent
        yield llm


@pytest.fixture(scope="module")
def tokens(hybrid) -> dict[str, list[int]]:
    return {name: hybrid.tokenize(text, add_bos=False) for name, text in PROMPTS.items()}


@pytest.fixture(scope="module")
def fresh_greedy(tiny_hybrid_model_path):
    """tokens -> greedy continuation from a fresh Llama (memoized)."""
    memo: dict[tuple[int, ...], list[int]] = {}

    def get(toks: list[int], n: int = N_GEN) -> list[int]:
        key = (*toks, -n)
        if key not in memo:
            with _llama(tiny_hybrid_model_path) as llm:
                memo[key] = _greedy(llm, toks, n)
        return memo[key]
    return get


# --- logits and saved states ----------------------------------------------------------------

def test_recurrence_is_detected(hybrid, tiny_model_path):
    with _llama(tiny_model_path) as qwen3:
        assert not qwen3.is_recurrent


def _all_logits(path: Path, toks: list[int], n_batch: int, n_ubatch: int, step: int) -> np.ndarray:
    with Llama(path, n_ctx=64, n_batch=n_batch, n_ubatch=n_ubatch, logits_all=True,
               n_threads=1, verbose=False) as llm:
        for i in range(0, len(toks), step):
            llm.eval(toks[i:i + step])
        return llm.scores[:len(toks)].astype(np.float64)


@pytest.fixture(scope="module")
def one_batch_logits(tiny_hybrid_model_path, tokens) -> np.ndarray:
    return _all_logits(tiny_hybrid_model_path, tokens["base"], 64, 64, len(tokens["base"]))


@pytest.mark.parametrize("n_batch,n_ubatch,step", [(8, 3, 8), (1, 1, 1)])
def test_batched_and_token_by_token_logits_agree(tiny_hybrid_model_path, tokens, one_batch_logits,
                                                 n_batch, n_ubatch, step):
    """The prompt in one batch against batches of 8 split into micro-batches of 3, and one token
    per call: the DeltaNet recurrence runs token by token inside every batch and the attention
    kernel is batch-invariant, so the logits agree to float32 rounding (measured: bit-identical)."""
    split = _all_logits(tiny_hybrid_model_path, tokens["base"], n_batch, n_ubatch, step)
    one = one_batch_logits
    rel = np.linalg.norm(one - split, axis=1) / np.linalg.norm(one, axis=1)
    print(f"batch {n_batch}/ubatch {n_ubatch} vs one batch: max rel diff {rel.max():.1e}")
    assert rel.max() <= 1e-5


def test_state_round_trip_continues_identically(hybrid, tokens, tmp_path, monkeypatch):
    """Evaluate a prompt, save, load into a new Llama (also through a file), continue: the logits of
    the continuation equal the uninterrupted ones bit for bit, and generation continues from the
    loaded state (only the new tokens are evaluated) with the fresh Llama's greedy tokens."""
    prompt, extra = tokens["base"], tokens["diverging"][-5:]
    hybrid.reset()
    hybrid.eval(prompt)
    saved = hybrid.save_state()
    hybrid.eval(extra)
    expected = hybrid.last_logits.copy()
    saved.save(tmp_path / "h.pbstate")
    with _llama(hybrid.model_path) as other:
        for state in (saved, LlamaState.load(tmp_path / "h.pbstate")):
            other.reset()
            other.load_state(state)
            assert other.n_tokens == len(prompt)
            other.eval(extra)
            np.testing.assert_array_equal(other.last_logits, expected)
        other.load_state(saved)
        calls = record_evals(other, monkeypatch)
        continued = _greedy(other, prompt + extra)
    assert calls[0] == extra
    with _llama(hybrid.model_path) as fresh:
        assert continued == _greedy(fresh, prompt + extra)


def test_sample_after_load_state(hybrid, tokens, fresh_greedy):
    """sample() right after load_state has no live logits: it evaluates again what it must (here all,
    since a recurrent state cannot drop its last token) and keeps every token."""
    hybrid.reset()
    hybrid.eval(tokens["base"])
    saved = hybrid.save_state()
    hybrid.reset()
    hybrid.load_state(saved)
    assert hybrid.sample(temp=0.0) == fresh_greedy(tokens["base"], 1)[0]
    assert hybrid.n_tokens == len(tokens["base"])


# --- prefix reuse -----------------------------------------------------------------------------

@pytest.mark.parametrize("first,second,reused", [
    ("base", "diverging", False),     # shares a partial prefix: cannot be cut back, evaluated again
    ("base", "shorter", False),       # a prefix of what was evaluated: the same
    ("base", "base", False),          # the same prompt: its last token needs fresh logits
    ("shorter", "base", True),        # continues what was evaluated: only the rest is evaluated
])
def test_generate_reuses_only_a_whole_prefix(hybrid, tokens, fresh_greedy, monkeypatch,
                                             first: str, second: str, reused: bool):
    first_toks = tokens[first]
    assert tokens["base"][:len(tokens["shorter"])] == tokens["shorter"]
    hybrid.reset()
    if reused:
        hybrid.eval(first_toks)          # the context holds exactly the first prompt
    else:
        _greedy(hybrid, first_toks)      # the first prompt and its generated tokens
    calls = record_evals(hybrid, monkeypatch)
    out = _greedy(hybrid, tokens[second])
    assert calls[0] == (tokens[second][len(first_toks):] if reused else tokens[second])
    assert out == fresh_greedy(tokens[second])


def test_generate_without_reset_continues(hybrid, tokens, fresh_greedy):
    hybrid.reset()
    head = _greedy(hybrid, tokens["shorter"], 3)          # evaluated: prompt + first 2 generated
    more = tokens["base"][len(tokens["shorter"]):]
    tail = _greedy(hybrid, more, 4, reset=False)
    evaluated = tokens["shorter"] + head[:2]
    assert tail == fresh_greedy(evaluated + more, 4)


def test_reusing_a_partly_matching_state_would_be_detected(hybrid, tokens, fresh_greedy):
    """The negative control: a state that shares only a prefix with the prompt, passed off as a
    whole prefix (what must never happen), gives other tokens than a fresh Llama."""
    a, b = tokens["base"], tokens["diverging"]
    common = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    k = common + 3
    assert k < len(b) - 1
    hybrid.reset()
    hybrid.eval(a[:k])                                  # the memory holds a[:k] ...
    hybrid.input_ids[:k] = b[:k]                        # ... passed off as b[:k]
    wrong = _greedy(hybrid, b)                          # evaluates only b[k:]
    hybrid.reset()
    assert wrong != fresh_greedy(b)


# --- the prompt cache --------------------------------------------------------------------------

def _completion(llm: Llama, text: bytes, n: int = N_GEN) -> str:
    return llm.create_completion(text.decode(), max_tokens=n, temperature=0)["choices"][0]["text"]


@pytest.mark.parametrize("kind", ["ram", "disk"])
def test_prompt_cache_uses_whole_prefixes_only(tiny_hybrid_model_path, tokens, monkeypatch, tmp_path, kind):
    def cache():
        return LlamaRAMCache() if kind == "ram" else LlamaDiskCache(tmp_path / "cache")

    expected = {}
    for name in ("base", "diverging", "shorter"):
        with _llama(tiny_hybrid_model_path) as fresh:
            expected[name] = _completion(fresh, PROMPTS[name])
    with _llama(tiny_hybrid_model_path) as llm:
        llm.set_cache(cache())
        # a prompt sharing only part of the cached ones is evaluated whole
        for name in ("base", "diverging", "shorter"):
            calls = record_evals(llm, monkeypatch)
            assert _completion(llm, PROMPTS[name]) == expected[name], name
            assert sum(map(len, calls)) >= len(tokens[name]) + N_GEN - 1
            monkeypatch.undo()
        # the same prompt again: served from its checkpoint, only its last token evaluated
        calls = record_evals(llm, monkeypatch)
        assert _completion(llm, PROMPTS["base"]) == expected["base"]
        assert calls[0] == tokens["base"][-1:]
        monkeypatch.undo()
    with _llama(tiny_hybrid_model_path) as other:       # a new Llama (a new process, for the disk)
        other.set_cache(llm.cache if kind == "ram" else cache())
        calls = record_evals(other, monkeypatch)
        assert _completion(other, PROMPTS["diverging"]) == expected["diverging"]
        assert calls[0] == tokens["diverging"][-1:]


def test_prompt_cache_continues_a_cached_prompt(tiny_hybrid_model_path, tokens, fresh_greedy, monkeypatch):
    """A prompt that continues a cached one starts from that checkpoint (evaluating only the rest)."""
    with _llama(tiny_hybrid_model_path) as llm:
        llm.set_cache(LlamaRAMCache())
        _completion(llm, PROMPTS["shorter"])
        llm.create_completion("An unrelated prompt that takes over the context", max_tokens=2, temperature=0)
        calls = record_evals(llm, monkeypatch)
        text = _completion(llm, PROMPTS["base"])
    assert calls[0] == tokens["base"][len(tokens["shorter"]) - 1:-1]
    with _llama(tiny_hybrid_model_path) as fresh:
        assert text == _completion(fresh, PROMPTS["base"])


# --- the ternary Qwen3 model ------------------------------------------------------------------

def test_ternary_greedy_text_equals_a_fresh_llama(ternary_tiny_model_path, monkeypatch):
    """Q2_0 weights, a KV cache that can be cut: prefix reuse (with and without the prompt cache)
    gives a fresh Llama's greedy text and evaluates only what the prefix does not cover."""
    expected = {}
    for name in ("base", "diverging"):
        with _llama(ternary_tiny_model_path) as fresh:
            expected[name] = _completion(fresh, PROMPTS[name])
    with _llama(ternary_tiny_model_path) as llm:
        assert not llm.is_recurrent
        n_base = len(llm.tokenize(PROMPTS["base"]))
        diverging = llm.tokenize(PROMPTS["diverging"])
        common = next(i for i, (x, y) in enumerate(zip(llm.tokenize(PROMPTS["base"]), diverging)) if x != y)
        for cache in (None, LlamaRAMCache()):
            llm.reset()
            llm.set_cache(cache)
            assert _completion(llm, PROMPTS["base"]) == expected["base"]
            calls = record_evals(llm, monkeypatch)
            assert _completion(llm, PROMPTS["diverging"]) == expected["diverging"]
            assert calls[0] == diverging[common:]
            monkeypatch.undo()
            assert _completion(llm, PROMPTS["base"]) == expected["base"]
        assert n_base > common


def test_next_chat_turn_starts_from_the_checkpoint(hybrid, monkeypatch):
    """Turn 1, an unrelated prompt that takes over the context, turn 2: with a prompt cache turn 2
    evaluates only what follows turn 1's checkpoint before its reply's turn marker (the reply, the
    new message and the sampled tokens fed back), and its text is the one without a cache."""
    without, prompt_len, text_without = chat_turns(hybrid, None, monkeypatch)
    with_cache, _, text_with = chat_turns(hybrid, LlamaRAMCache(), monkeypatch)
    print(f"turn 2 of {prompt_len} prompt tokens: {without} evaluated without a cache, {with_cache} with")
    assert without >= prompt_len > 100
    assert with_cache < 50
    assert text_with == text_without


def test_bench_depth_fill_on_a_recurrent_model(hybrid, tokens):
    """The benchmark brings the context back to its depth between runs; a recurrent state cannot be
    cut back, so the depth is evaluated again (it used to leave an empty context: depth 0)."""
    from pybonsai.bench import _fill

    depth = tokens["shorter"]
    hybrid.reset()
    hybrid.eval(tokens["base"])
    _fill(hybrid, depth)
    assert hybrid.n_tokens == len(depth)
    hybrid.eval([11])
    after = hybrid.last_logits.copy()
    hybrid.reset()
    hybrid.eval(depth + [11])
    np.testing.assert_array_equal(hybrid.last_logits, after)
