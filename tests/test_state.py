"""save_state()/load_state() (LlamaState), state files, and the prompt caches of set_cache()."""
from __future__ import annotations

import numpy as np
import pytest

from pybonsai import Llama, LlamaDiskCache, LlamaRAMCache, LlamaState, synth

from eval_recording import SYSTEM, chat_turns, record_evals

PROMPT = b"The quick brown fox jumps over the lazy dog, and then"


@pytest.fixture(scope="module")
def llm(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=512, n_batch=64, n_threads=1) as model:
        yield model


def _continue(llm: Llama, tokens) -> np.ndarray:
    rows = []
    for t in tokens:
        llm.eval([t])
        rows.append(llm.last_logits.copy())
    return np.stack(rows)


def test_continuation_after_load_is_bit_identical(llm):
    llm.reset()
    llm.eval(llm.tokenize(PROMPT))
    saved = llm.save_state()
    n = llm.n_tokens
    assert saved.n_tokens == n and saved.llama_state_size == len(saved.llama_state) > 0
    expected = _continue(llm, [11, 22, 33, 44])
    llm.reset()
    llm.eval(llm.tokenize(b"something else entirely, longer than the first prompt was"))
    llm.load_state(saved)
    assert llm.n_tokens == n
    np.testing.assert_array_equal(llm.last_logits, saved.scores[0])
    assert np.array_equal(_continue(llm, [11, 22, 33, 44]), expected)  # bit-identical


def test_logits_all_state_round_trip(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=256, logits_all=True, n_threads=1) as m:
        tokens = m.tokenize(PROMPT)
        m.eval(tokens)
        saved = m.save_state()
        assert saved.scores.shape == (len(tokens), m.n_vocab())
        after = _continue(m, [5, 6])
        m.reset()
        m.load_state(saved)
        np.testing.assert_array_equal(m.scores[:len(tokens)], saved.scores)
        assert np.array_equal(_continue(m, [5, 6]), after)


def test_state_file_round_trip_and_damage(llm, tmp_path):
    llm.reset()
    llm.eval(llm.tokenize(PROMPT))
    saved = llm.save_state()
    path = tmp_path / "s.pbstate"
    saved.save(path)
    loaded = LlamaState.load(path)
    assert loaded.llama_state == saved.llama_state and loaded.n_tokens == saved.n_tokens
    expected = _continue(llm, [7])
    llm.reset()
    llm.load_state(loaded)
    assert np.array_equal(_continue(llm, [7]), expected)

    data = path.read_bytes()
    damaged = bytearray(data)
    damaged[-100] ^= 0x01  # one bit inside llama.cpp's KV bytes
    cases = {"flipped.pbstate": bytes(damaged), "truncated.pbstate": data[:-10],
             "magic.pbstate": b"GGUF" + data[4:], "empty.pbstate": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="not a usable pybonsai state file"):
            LlamaState.load(tmp_path / name)


def test_bad_states_raise_and_leave_the_context_alone(llm, tiny_model_path, tmp_path):
    llm.reset()
    llm.eval(llm.tokenize(PROMPT))
    good = llm.save_state()
    before = llm.n_tokens, llm.last_logits.copy()

    corrupted = LlamaState(good.input_ids, good.scores, good.n_tokens,
                           good.llama_state[:-1] + bytes([good.llama_state[-1] ^ 0xFF]),
                           good.llama_state_size, good.seed, good.header)
    with pytest.raises(ValueError, match="corrupted"):
        llm.load_state(corrupted)
    foreign = LlamaState(good.input_ids, good.scores, good.n_tokens, good.llama_state,
                         good.llama_state_size, good.seed)  # no header: e.g. built by hand
    with pytest.raises(ValueError, match="no header"):
        llm.load_state(foreign)

    with Llama(tiny_model_path, n_ctx=1024, n_threads=1) as bigger:
        bigger.eval(bigger.tokenize(PROMPT))
        with pytest.raises(ValueError, match="n_ctx=1024"):
            llm.load_state(bigger.save_state())
    with Llama(tiny_model_path, n_ctx=512, n_threads=1, type_k="q8_0") as q8:
        q8.eval(q8.tokenize(PROMPT))
        with pytest.raises(ValueError, match="type_k=8"):
            llm.load_state(q8.save_state())

    other_path = tmp_path / "other-seed.gguf"  # same shape, different weights
    synth.write_model(other_path, "tiny", seed=1)
    with Llama(other_path, n_ctx=512, n_threads=1) as other:
        other.eval(other.tokenize(PROMPT))
        with pytest.raises(ValueError, match="different model"):
            llm.load_state(other.save_state())
        with pytest.raises(ValueError, match="different model"):
            other.load_state(good)

    assert llm.n_tokens == before[0]
    np.testing.assert_array_equal(llm.last_logits, before[1])
    with pytest.raises(TypeError):
        llm.load_state({"n_tokens": 3})


@pytest.mark.parametrize("kind", ["ram", "disk"])
def test_second_chat_turn_does_not_re_evaluate_the_history(llm, monkeypatch, tmp_path, kind):
    evaluated_without, prompt_len, text_without = chat_turns(llm, None, monkeypatch)
    cache = LlamaRAMCache() if kind == "ram" else LlamaDiskCache(tmp_path / "cache")
    evaluated_with, prompt_len2, text_with = chat_turns(llm, cache, monkeypatch)
    assert prompt_len == prompt_len2 > 100
    # without a cache the whole prompt (history included) is evaluated again, plus the 7 sampled
    # tokens fed back; with it only the new messages (and those 7)
    assert evaluated_without >= prompt_len
    assert evaluated_with < 40
    assert text_with == text_without  # greedy: the cache changes nothing but the work


def test_disk_cache_serves_a_new_process_worth_of_llama(tiny_model_path, tmp_path, monkeypatch):
    prompt = SYSTEM + " Question: what is a fox?"
    with Llama(tiny_model_path, n_ctx=512, n_threads=1) as a:
        a.set_cache(LlamaDiskCache(tmp_path / "c"))
        first = a.create_completion(prompt, max_tokens=6, temperature=0)
    with Llama(tiny_model_path, n_ctx=512, n_threads=1) as b:  # as after a restart
        b.set_cache(LlamaDiskCache(tmp_path / "c"))
        calls = record_evals(b, monkeypatch)
        again = b.create_completion(prompt, max_tokens=6, temperature=0)
    assert again["choices"][0]["text"] == first["choices"][0]["text"]
    assert sum(map(len, calls)) <= 6  # the last prompt token is re-evaluated for fresh logits, then 5 sampled


def test_caches_are_lru_bounded_by_bytes(llm, tmp_path):
    llm.reset()
    states = {}
    for word in (b"alpha beta gamma", b"delta epsilon zeta", b"eta theta iota"):
        llm.reset()
        toks = llm.tokenize(word)
        llm.eval(toks)
        states[tuple(toks)] = llm.save_state()
    one = max(s.nbytes for s in states.values())
    keys = list(states)
    for cache in (LlamaRAMCache(capacity_bytes=2 * one + 10),
                  LlamaDiskCache(tmp_path / "lru", capacity_bytes=2 * (one + 4096))):
        cache[keys[0]] = states[keys[0]]
        cache[keys[1]] = states[keys[1]]
        _ = cache[list(keys[0]) + [99]]   # touch the oldest: now keys[1] is least recently used
        cache[keys[2]] = states[keys[2]]
        assert len(cache) == 2
        assert keys[0] in cache and keys[2] in cache
        assert cache._find_longest_prefix_key(keys[1]) != keys[1]
        assert cache.cache_size <= cache.capacity_bytes
        with pytest.raises(KeyError):
            cache[[123456, 7]]


def test_set_cache_rejects_non_caches(llm):
    with pytest.raises(TypeError):
        llm.set_cache({})
