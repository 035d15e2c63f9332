"""Generation through the Llama API on the tiny synthetic model: determinism, seeds, stop
strings, streaming, UTF-8, limits."""
from __future__ import annotations

import numpy as np
import pytest

from pybonsai import Llama
from pybonsai.text import TextAssembler

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def llm(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=256, n_batch=64, verbose=False) as model:
        yield model


def _text(result):
    return result["choices"][0]["text"]


def test_greedy_is_deterministic_and_is_the_argmax(llm):
    first = llm.create_completion(PROMPT, max_tokens=24, temperature=0)
    second = llm.create_completion(PROMPT, max_tokens=24, temperature=0)
    assert _text(first) == _text(second)
    # Independent check: evaluate token by token and take argmax of the logits ourselves.
    llm.reset()
    tokens = llm.tokenize(PROMPT.encode(), add_bos=True, special=True)
    llm.eval(tokens)
    chosen = []
    for _ in range(24):
        token = int(np.argmax(llm.last_logits))
        if llm.model.is_eog(token):
            break
        chosen.append(token)
        llm.eval([token])
    assert llm.detokenize(chosen).decode("utf-8", "replace") == _text(first)


def test_seeded_sampling_is_reproducible_and_seed_dependent(llm):
    kw = dict(max_tokens=32, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    a = llm.create_completion(PROMPT, seed=1234, **kw)
    b = llm.create_completion(PROMPT, seed=1234, **kw)
    c = llm.create_completion(PROMPT, seed=4321, **kw)
    assert _text(a) == _text(b)
    assert _text(a) != _text(c)


def test_generate_yields_token_ids(llm):
    tokens = llm.tokenize(PROMPT.encode())
    out = []
    for token in llm.generate(tokens, temp=0):
        out.append(token)
        if len(out) == 5:
            break
    assert all(isinstance(t, int) and 0 <= t < llm.n_vocab() for t in out)


def test_stop_string_across_token_boundaries(llm):
    full = _text(llm.create_completion(PROMPT, max_tokens=40, temperature=0))
    assert len(full) > 12, full
    stop = full[5:9]  # four characters from the middle, whatever tokens they span
    stopped = llm.create_completion(PROMPT, max_tokens=40, temperature=0, stop=[stop])
    assert _text(stopped) == full[: full.index(stop)]
    assert stopped["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=7)])
def test_stream_equals_non_stream(llm, sampling):
    whole = llm.create_completion(PROMPT, max_tokens=48, **sampling)
    chunks = list(llm.create_completion(PROMPT, max_tokens=48, stream=True, **sampling))
    assert "".join(c["choices"][0]["text"] for c in chunks) == _text(whole)
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)


def test_multibyte_utf8_pieces_are_reassembled(llm):
    text = "𓀀 🫠 世界 é"  # the first two are split across byte-level tokens
    tokens = llm.tokenize(text.encode(), add_bos=False)
    pieces = [llm.token_to_piece(t) for t in tokens]
    assert any(_is_partial_utf8(p) for p in pieces), "expected a character split across tokens"
    assembler = TextAssembler()
    assert "".join(assembler.push(p) for p in pieces) + assembler.finish() == text


def _is_partial_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_high_temperature_stream_never_splits_characters(llm):
    kw = dict(max_tokens=120, temperature=3.0, top_k=0, top_p=1.0, min_p=0.0, seed=99)
    whole = _text(llm.create_completion(PROMPT, **kw))
    streamed = [c["choices"][0]["text"] for c in llm.create_completion(PROMPT, stream=True, **kw)]
    assert "".join(streamed) == whole
    for chunk in streamed:  # every chunk is a str of whole characters: re-encoding round-trips
        assert chunk.encode("utf-8").decode("utf-8") == chunk


def test_max_tokens_and_usage(llm):
    result = llm.create_completion(PROMPT, max_tokens=7, temperature=0, stop=None)
    usage = result["usage"]
    assert usage["prompt_tokens"] == len(llm.tokenize(PROMPT.encode()))
    assert result["choices"][0]["finish_reason"] in ("length", "stop")
    if result["choices"][0]["finish_reason"] == "length":
        assert usage["completion_tokens"] == 7
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_logprobs_match_the_logits(llm):
    result = llm.create_completion(PROMPT, max_tokens=4, temperature=0, logprobs=3)
    lp = result["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) >= 1
    for token_lp, top in zip(lp["token_logprobs"], lp["top_logprobs"]):
        assert len(top) <= 3 and token_lp <= 0.0
        assert token_lp == pytest.approx(max(top.values()))  # greedy picks the most likely token


def test_prompt_longer_than_context_is_a_value_error(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=16, n_batch=16) as small:
        n_ctx = small.n_ctx()  # llama.cpp rounds the context up to a multiple of 256
        words = small.tokenize(b" word") * (n_ctx + 10)
        with pytest.raises(ValueError, match=f"exceed context window of {n_ctx}"):
            small.create_completion(small.detokenize(words).decode(), max_tokens=4)
        with pytest.raises(ValueError, match=f"exceed context window of {n_ctx}"):
            small.eval(words)
        # A prompt that fits but leaves no room: finishes at once with reason "length".
        result = small.create_completion(words[:n_ctx], max_tokens=4)
        assert result["choices"][0]["finish_reason"] == "length"
        assert result["usage"]["completion_tokens"] == 0


def test_echo_and_callable(llm):
    result = llm(PROMPT, max_tokens=3, temperature=0, echo=True)
    assert _text(result).startswith(PROMPT)


def test_chat_completion_stream_equals_non_stream(llm):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    whole = llm.create_chat_completion(messages, max_tokens=20, temperature=0, enable_thinking=False)
    msg = whole["choices"][0]["message"]
    assert whole["object"] == "chat.completion" and msg["role"] == "assistant"
    chunks = list(llm.create_chat_completion(messages, max_tokens=20, temperature=0, enable_thinking=False,
                                             stream=True))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == msg["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def test_eval_logits_of_a_prefix_do_not_depend_on_what_follows(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=64, logits_all=True) as model:
        tokens = model.tokenize(b"one two three four five six")
        model.eval(tokens)
        full = model.scores[: len(tokens)].copy()
        model.reset()
        model.eval(tokens[:3])
        np.testing.assert_allclose(model.scores[:3], full[:3], rtol=1e-4, atol=1e-4)


def test_closed_model_raises(tiny_model_path):
    model = Llama(tiny_model_path, n_ctx=32)
    model.close()
    model.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        model.tokenize(b"x")


@pytest.mark.parametrize("bad", [dict(temperature=float("nan")), dict(top_p=2.0), dict(top_k=-3), dict(repeat_penalty=0),
                                 dict(seed=-5), dict(logprobs=-1)])
def test_bad_sampling_arguments_are_value_errors(llm, bad):
    with pytest.raises(ValueError):
        llm.create_completion(PROMPT, max_tokens=2, **bad)


def test_scores_are_copied_out_only_when_read(tiny_model_path):
    """Without logits_all, eval() leaves the logits in llama.cpp (sampling happens there);
    `scores` / `last_logits` copy them when read, and always show the last evaluated token's."""
    with Llama(tiny_model_path, n_ctx=64, logits_all=True) as every, Llama(tiny_model_path, n_ctx=64) as last:
        tokens = every.tokenize(b"one two three four five six")
        every.eval(tokens)
        last.eval(tokens[:3])
        assert last._scores_live  # nothing copied yet
        np.testing.assert_allclose(last.scores[0], every.scores[2], rtol=1e-4, atol=1e-4)
        assert not last._scores_live
        for t in tokens[3:]:  # single tokens: each replaces the previous row, read only at the end
            last.eval([t])
        np.testing.assert_allclose(last.last_logits, every.scores[len(tokens) - 1], rtol=1e-4, atol=1e-4)
        kept = last.scores[0].copy()
        last.reset()  # the context's logits may change after this: scores keep their last copy
        np.testing.assert_array_equal(last.scores[0], kept)
        last.create_completion("one two", max_tokens=4, temperature=0)
        seen = [int(t) for t in last.input_ids[:last.n_tokens]]
        every.reset()
        every.eval(seen)
        np.testing.assert_allclose(last.last_logits, every.scores[len(seen) - 1], rtol=1e-4, atol=1e-4)
        last.eval([seen[-1]])
        pending = every.scores[len(seen) - 1].copy()  # not what `last` holds now: it evaluated one more
        last.close()  # a row not read yet is copied out before the context goes
        assert not np.array_equal(last.scores[0], pending)
        assert np.isfinite(last.scores[0]).all() and last.scores[0].any()


@pytest.mark.parametrize("kw", [
    {},
    {"repeat_penalty": 1.3, "frequency_penalty": 0.5, "presence_penalty": 0.2},
    "bias the top",  # -30 on each prompt's 300 (then 9,000) most likely first tokens: the answer is below them
])
def test_greedy_shortcut_picks_what_the_whole_vocabulary_picks(llm, monkeypatch, kw):
    """Greedy decoding runs its chain on the top logits first (Sampler.set_greedy_shortcut, when no
    stage can raise a logit): the same tokens as running it over the whole vocabulary, prompt after
    prompt, also where biases push the most likely tokens below the shortcut's floor."""
    import pybonsai.sampling as sampling

    def args(i):
        if kw != "bias the top":
            return kw
        llm.reset()
        llm.eval(llm.tokenize(f"Case {i}: ".encode()))
        order = np.argsort(-llm.last_logits)
        return {"logit_bias": {int(t): -30.0 for t in order[:300 if i % 2 else 9000]}}

    def ids(i):
        out = llm.create_completion(f"Case {i}: ", max_tokens=12, temperature=0, logprobs=1, **args(i))
        return out["choices"][0]["logprobs"]["tokens"]

    shortcut = [ids(i) for i in range(10)]
    monkeypatch.setattr(sampling, "_never_raises", lambda params, logit_bias: False)
    full = [ids(i) for i in range(10)]
    assert shortcut == full
    assert all(shortcut)
