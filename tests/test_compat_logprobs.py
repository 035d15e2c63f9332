"""Regression tests for the logprobs / sampling defects of issue 15, with llama-cpp-python's
behaviour as the reference: text_offset from the decoded prefix, stream == non-stream logprobs
when a stop string ends generation, tiny positive temperatures are greedy, echo=True includes
the prompt tokens' logprobs, top_logprobs always holds the sampled token."""
from __future__ import annotations

import numpy as np
import pytest

from pybonsai import Llama

PROMPT = "The quick brown fox"
SPLIT = "a𓀀b🦥c"  # characters the Qwen2 tokenizer splits into partial-UTF-8 byte tokens


@pytest.fixture(scope="module")
def llm(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=256, n_batch=64) as model:
        yield model


def _log_softmax(row: np.ndarray) -> np.ndarray:
    row = row.astype(np.float64)
    shifted = row - row.max()
    return shifted - np.log(np.exp(shifted).sum())


def _prefix_offsets(llm, tokens: list[int], special: bool = True) -> list[int]:
    """Independent: each token's offset = characters decodable from the bytes before it."""
    out = []
    for i in range(len(tokens)):
        prefix = b"".join(llm.token_to_piece(t, special=special) for t in tokens[:i])
        out.append(len(prefix.decode("utf-8", errors="ignore")))
    return out


def test_text_offset_counts_characters_of_the_decoded_prefix(llm):
    tokens = llm.tokenize(SPLIT.encode(), add_bos=False)
    pieces = [llm.token_to_piece(t) for t in tokens]
    assert any(_incomplete(p) for p in pieces), "the test needs a character split across tokens"
    result = llm.create_completion(SPLIT, max_tokens=4, temperature=0, logprobs=1, echo=True)
    lp, text = result["choices"][0]["logprobs"], result["choices"][0]["text"]
    n = len(tokens)
    assert lp["text_offset"][:n] == _prefix_offsets(llm, tokens)
    # Every echoed token that decodes on its own starts exactly where its text is.
    for tok_text, offset in zip(lp["tokens"][:n], lp["text_offset"][:n]):
        if "\ufffd" not in tok_text:
            assert text[offset:offset + len(tok_text)] == tok_text
    assert lp["text_offset"][:n] == [0, 1, 1, 1, 2, 3, 3, 4]  # a 𓀀(3 tokens) b 🦥(2 tokens) c
    # Generated tokens continue from the end of the prompt's text.
    gen_offsets = lp["text_offset"][n:]
    assert gen_offsets[0] == len(SPLIT) and gen_offsets == sorted(gen_offsets)


def _incomplete(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


@pytest.mark.parametrize("seed", range(6))
def test_generated_text_offsets_index_the_text(llm, seed):
    # High-temperature sampling over the whole vocabulary produces split characters often.
    result = llm.create_completion(PROMPT, max_tokens=32, temperature=5.0, top_k=0, top_p=1.0, min_p=0.0,
                                   seed=seed, logprobs=0)
    lp, text = result["choices"][0]["logprobs"], result["choices"][0]["text"]
    full = PROMPT + text
    for tok_text, offset in zip(lp["tokens"], lp["text_offset"]):
        assert len(PROMPT) <= offset <= len(full)
        if "\ufffd" not in tok_text:
            assert full[offset:offset + len(tok_text)] == tok_text
    assert lp["text_offset"] == sorted(lp["text_offset"])


def _stop_cases(llm):
    full = llm.create_completion(PROMPT, max_tokens=24, temperature=0, logprobs=2)
    text = full["choices"][0]["text"]
    tokens = full["choices"][0]["logprobs"]["tokens"]
    # stop strings ending inside a token, at a token's end, and spanning two tokens
    cases = {text[3:5], tokens[4], tokens[5] + tokens[6][:1], text[len(tokens[0]):len(tokens[0]) + 3]}
    return [s for s in cases if s.strip() and "\ufffd" not in s and s in text]


def test_stream_and_non_stream_logprobs_agree_when_a_stop_string_ends_generation(llm):
    cases = _stop_cases(llm)
    assert cases
    for stop in cases:
        kw = dict(max_tokens=24, temperature=0, logprobs=2, stop=[stop])
        whole = llm.create_completion(PROMPT, **kw)["choices"][0]
        chunks = [c["choices"][0] for c in llm.create_completion(PROMPT, stream=True, **kw)]
        assert whole["finish_reason"] == "stop" and chunks[-1]["finish_reason"] == "stop"
        assert "".join(c["text"] for c in chunks) == whole["text"]
        for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            streamed = [x for c in chunks if c["logprobs"] for x in c["logprobs"][key]]
            assert streamed == whole["logprobs"][key], (stop, key)


@pytest.mark.parametrize("temperature", [1e-39, 1e-45, 1e-30, 5e-324])
def test_tiny_positive_temperature_is_greedy(llm, temperature):
    greedy = llm.create_completion(PROMPT, max_tokens=16, temperature=0)["choices"][0]["text"]
    for seed in (1, 2, 3):
        got = llm.create_completion(PROMPT, max_tokens=16, temperature=temperature, top_k=0, top_p=1.0,
                                    min_p=0.0, seed=seed)["choices"][0]["text"]
        assert got == greedy


def test_echo_with_logprobs_includes_the_prompt_tokens(llm, tiny_model_path):
    result = llm.create_completion(PROMPT, max_tokens=5, temperature=0, logprobs=3, echo=True)
    choice = result["choices"][0]
    lp = choice["logprobs"]
    prompt_tokens = llm.tokenize(PROMPT.encode())
    n = len(prompt_tokens)
    assert choice["text"].startswith(PROMPT)
    assert lp["tokens"][:n] == [llm.token_to_piece(t, special=True).decode() for t in prompt_tokens]
    assert len(lp["tokens"]) == n + result["usage"]["completion_tokens"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None  # as OpenAI / llama-cpp-python
    assert lp["text_offset"][:n] == _prefix_offsets(llm, prompt_tokens)
    # Independent: every position's logits from a logits_all model.
    with Llama(tiny_model_path, n_ctx=256, logits_all=True) as full:
        full.eval(prompt_tokens)
        for i in range(1, n):
            expected = _log_softmax(full.scores[i - 1])[prompt_tokens[i]]
            assert abs(lp["token_logprobs"][i] - expected) < 1e-4
            top = lp["top_logprobs"][i]
            assert lp["tokens"][i] in top and 3 <= len(top) <= 4
    # The non-echo call gives the same completion logprobs.
    plain = llm.create_completion(PROMPT, max_tokens=5, temperature=0, logprobs=3)["choices"][0]["logprobs"]
    assert plain["tokens"] == lp["tokens"][n:]
    np.testing.assert_allclose(plain["token_logprobs"], lp["token_logprobs"][n:], rtol=0, atol=1e-4)
    assert plain["text_offset"] == lp["text_offset"][n:]


def test_echo_with_logprobs_streams_the_prompt_tokens_first(llm):
    chunks = [c["choices"][0] for c in llm.create_completion(PROMPT, max_tokens=4, temperature=0, logprobs=1,
                                                             echo=True, stream=True)]
    whole = llm.create_completion(PROMPT, max_tokens=4, temperature=0, logprobs=1, echo=True)["choices"][0]
    assert chunks[0]["text"] == PROMPT
    for key in ("tokens", "text_offset", "top_logprobs"):
        assert [x for c in chunks if c["logprobs"] for x in c["logprobs"][key]] == whole["logprobs"][key]


@pytest.mark.parametrize("n", [0, 1, 3])
def test_top_logprobs_always_include_the_sampled_token(llm, n):
    result = llm.create_completion(PROMPT, max_tokens=24, temperature=3.0, top_k=0, top_p=1.0, min_p=0.0,
                                   seed=11, logprobs=n)
    lp = result["choices"][0]["logprobs"]
    sampled_outside_top = 0
    for token, token_lp, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert top[token] == token_lp
        assert n <= len(top) <= n + 1 or len(top) < n  # several tokens may share a text
        ranked = sorted(top.values(), reverse=True)
        sampled_outside_top += token_lp < ranked[min(n, len(ranked)) - 1] if n else 1
    assert sampled_outside_top > 0  # the case that needed fixing did occur


def test_chat_logprobs_are_openai_shaped(llm):
    messages = [{"role": "user", "content": "Hi"}]
    result = llm.create_chat_completion(messages, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
    content = result["choices"][0]["logprobs"]["content"]
    assert len(content) == result["usage"]["completion_tokens"] and content
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert isinstance(entry["logprob"], float) and entry["logprob"] <= 0
        assert entry["bytes"] == list(entry["token"].encode())
        assert any(t["token"] == entry["token"] for t in entry["top_logprobs"])
    assert llm.create_chat_completion(messages, max_tokens=2, temperature=0)["choices"][0]["logprobs"] is None
    chunks = list(llm.create_chat_completion(messages, max_tokens=4, temperature=0, logprobs=True,
                                             top_logprobs=2, stream=True))
    streamed = [e for c in chunks if c["choices"][0]["logprobs"] for e in c["choices"][0]["logprobs"]["content"]]
    assert [e["token"] for e in streamed] == [e["token"] for e in content]


def test_top_logprob_selection_equals_a_full_sort():
    """completions._top_ids finds the n largest logits from a grid's column maxima instead of a
    selection over the whole row: the same ids in the same order (ties: lower id first) as a
    stable sort (NaN never listed), and _log_sum_exp within 1e-5 of float64, at sizes around the grid's
    edges."""
    from pybonsai.completions import _TOP_GRID, _log_sum_exp, _top_ids

    rng = np.random.default_rng(7)
    sizes = [1, 5, _TOP_GRID - 1, _TOP_GRID * 20, _TOP_GRID * 20 + 13, 5000, 151_936]
    for trial in range(300):
        size = sizes[trial % len(sizes)]
        row = (rng.standard_normal(size) * 3).astype(np.float32)
        if trial % 3 == 0:
            row = np.round(row)  # many ties
        if trial % 7 == 0 and size > 3:
            row[rng.integers(0, size, 3)] = -np.inf
        if trial % 11 == 0 and size > 3:
            row[rng.integers(0, size, 1 + size // 3)] = np.nan  # never listed
        if trial % 55 == 0 and size >= 2 * _TOP_GRID:
            row[:_TOP_GRID * (size // _TOP_GRID)].reshape(_TOP_GRID, -1)[:, :3] = np.nan  # whole grid columns
        n = int(rng.integers(0, 25))
        valid = np.flatnonzero(~np.isnan(row))
        want = valid[np.argsort(-row[valid], kind="stable")][:n]
        assert list(_top_ids(row, n)) == list(want), (size, n)
        if np.isnan(row).any():
            continue
        assert _log_sum_exp(row) == pytest.approx(float(_log_sum_exp_f64(row)), abs=1e-5)


def _log_sum_exp_f64(row: np.ndarray) -> float:
    row = row.astype(np.float64)
    peak = row.max()
    return peak + np.log(np.exp(row - peak).sum())
