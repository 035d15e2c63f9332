"""What real OpenAI clients hit (issue 24, item 5): tool calls cut by max_tokens come back as the
complete `tool_calls` (the call cut short dropped, finish_reason "length"), and the server returns
the <think> block as `reasoning_content` by default (`--reasoning-format`, the request's
`reasoning_format`), while Llama.create_chat_completion keeps llama-cpp-python's default."""
from __future__ import annotations

import json
import re

import jsonschema
import numpy as np
import openai
import pytest

from pybonsai import Llama
from pybonsai.chat_output import ChatOutput
from pybonsai.completions import render_chat_prompt
from server_process import openai_client, running_server
from structured_helpers import llm, short, whitespace_bias  # noqa: F401  (fixtures)
from test_tool_calls import ASK, PARAMS, TOOLS, opener_processor

NAMES = frozenset(PARAMS)
CALL_1 = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
CALL_2 = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
CUT = CALL_1 + "\n" + CALL_2[:40]                  # one complete call, then one cut short
THINK = 'root ::= "<think>\\nhm\\n</think>\\n\\n" [a-c]{1,3}'


def _pieces(text: str):
    return [text], list(text), [text[:7], text[7:30], text[30:]]


def _run(text_pieces, finish, reasoning=False, think_open=False):
    """(message, finish) and (streamed deltas, finish) of ChatOutput for the same text."""
    message = ChatOutput(reasoning, NAMES, think_open).message(text_pieces, finish)
    out = ChatOutput(reasoning, NAMES, think_open)
    deltas = [d for p in text_pieces for d in out.feed(p)]
    last, stream_finish = out.final_deltas(finish)
    return message, (deltas + last, stream_finish)


# -- ChatOutput / parse_tool_calls on given text ---------------------------------------------------

@pytest.mark.parametrize("prefix", ["", "Sure.\n"])   # "required" (calls only) and "auto" (text first)
def test_cut_after_a_complete_call_keeps_it(prefix):
    for pieces in _pieces(prefix + CUT):
        (message, finish), (deltas, stream_finish) = _run(pieces, "length")
        assert finish == stream_finish == "length"
        assert [json.loads(c["function"]["arguments"]) for c in message["tool_calls"]] == [{"a": 2, "b": 3}]
        assert message["content"] == (prefix.strip() or None)
        calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
        assert [(c["index"], c["function"]["name"]) for c in calls] == [(0, "add")]
        content = "".join(d.get("content", "") for d in deltas)
        assert "<tool_call>" not in content and content.strip() == prefix.strip()


@pytest.mark.parametrize("tail", ["\n<tool_ca", "\n<tool_call>", "\n", ""])
def test_cut_in_or_before_the_next_opener(tail):
    (message, finish), _ = _run([CALL_1 + tail], "length")
    assert len(message["tool_calls"]) == 1 and message["content"] is None and finish == "length"


def test_two_complete_calls_then_a_cut_keeps_both():
    (message, _), _ = _run([CALL_1 + "\n" + CALL_2 + "\n" + CALL_1[:20]], "length")
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["add", "get_weather"]


def test_what_stays_text():
    # cut inside the first call: nothing complete to return
    (message, finish), _ = _run([CALL_1[:30]], "length")
    assert message["content"] == CALL_1[:30] and "tool_calls" not in message and finish == "length"
    # an incomplete call that did not run out of tokens (e.g. a stop string) is not guessed at
    (message, finish), _ = _run([CUT], "stop")
    assert message["content"] == CUT and "tool_calls" not in message and finish == "stop"
    # a complete block that is not a valid call
    bad = '<tool_call>\n{"name": "nope", "arguments": {}}\n</tool_call>\n<tool_call>'
    (message, _), _ = _run([bad], "length")
    assert message["content"] == bad and "tool_calls" not in message


def test_complete_calls_end_as_before():
    (message, finish), (_, stream_finish) = _run([CALL_1 + "\n" + CALL_2], "stop")
    assert len(message["tool_calls"]) == 2 and finish == stream_finish == "tool_calls"


def test_reasoning_when_the_prompt_opened_the_think_block():
    text = "plan\n</think>\n\nHi"
    for pieces in _pieces(text):
        (message, _), _ = _run(pieces, "stop", reasoning=True, think_open=True)
        assert message["reasoning_content"] == "plan" and message["content"] == "Hi"
    (message, _), _ = _run([text], "stop", reasoning=False, think_open=True)
    assert message["content"] == text and "reasoning_content" not in message
    # a grammar-constrained reply may skip the block and open with the calls (tool_choice "required")
    for pieces in _pieces(CALL_1):
        (message, finish), _ = _run(pieces, "stop", reasoning=True, think_open=True)
        assert len(message["tool_calls"]) == 1 and "reasoning_content" not in message and finish == "tool_calls"


# -- Llama.create_chat_completion on the tiny model ------------------------------------------------

def _no_eog(vocab) -> dict[int, float]:
    """Bias the end-of-generation tokens away: the grammar then goes on to a second call."""
    return {t: -100.0 for t in range(vocab.n_vocab()) if vocab.model.is_eog(t)}


def _tokens_through_first_call(tokens: list[str]) -> int:
    text = ""
    for i, token in enumerate(tokens):
        text += token
        if "</tool_call>" in text:
            return i + 1
    raise AssertionError(f"no complete call in {text!r}")


def _check_first_call(calls, full_first):
    assert len(calls) == 1, calls
    assert calls[0]["function"]["name"] == full_first["function"]["name"]
    assert json.loads(calls[0]["function"]["arguments"]) == json.loads(full_first["function"]["arguments"])
    jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), PARAMS[calls[0]["function"]["name"]])


@pytest.mark.parametrize("mode", ["required", "auto"])
def test_llama_cut_calls(llm, short, mode):
    bias = {**short, **_no_eog(llm)}
    # the noise model never opens a call by itself: with "auto", force the opener's tokens
    processor = opener_processor(llm) if mode == "auto" else None
    kwargs = dict(tools=TOOLS, tool_choice=mode, seed=5, enable_thinking=False, logit_bias=bias,
                  logits_processor=processor)
    full = llm.create_chat_completion(ASK, max_tokens=400, logprobs=True, **kwargs)["choices"][0]
    assert len(full["message"]["tool_calls"]) >= 2, full       # the cut below lands in the second call
    k = _tokens_through_first_call([t["token"] for t in full["logprobs"]["content"]])
    for extra in (1, 4, 9):
        cut = llm.create_chat_completion(ASK, max_tokens=k + extra, **kwargs)["choices"][0]
        assert cut["finish_reason"] == "length" and cut["message"]["content"] is None, cut
        _check_first_call(cut["message"]["tool_calls"], full["message"]["tool_calls"][0])
    chunks = list(llm.create_chat_completion(ASK, max_tokens=k + 4, stream=True, **kwargs))
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert not "".join(d.get("content") or "" for d in deltas).strip()
    _check_first_call([d["tool_calls"][0] for d in deltas if "tool_calls" in d], full["message"]["tool_calls"][0])


def test_llama_default_keeps_reasoning_in_content(llm):
    message = llm.create_chat_completion(ASK, grammar=THINK, seed=1, max_tokens=20)["choices"][0]["message"]
    assert message["content"].startswith("<think>\nhm\n</think>") and "reasoning_content" not in message


def test_llama_qwen35_template_opens_the_think_block(tiny_model_path, llama_cpp_dir):
    template = (llama_cpp_dir / "models/templates/Qwen3.5-4B.jinja").read_text("utf-8")
    with Llama(tiny_model_path, n_ctx=512, n_threads=1, chat_template=template) as qwen35:
        assert render_chat_prompt(qwen35, ASK).endswith("<think>\n")
        grammar = 'root ::= "hm\\n</think>\\n\\n" [a-c]{1,3}'
        message = qwen35.create_chat_completion(ASK, grammar=grammar, seed=1, max_tokens=20,
                                                reasoning_format="deepseek")["choices"][0]["message"]
        assert message["reasoning_content"] == "hm" and re.fullmatch("[a-c]{1,3}", message["content"])


# -- the server, through the real openai client ----------------------------------------------------

@pytest.fixture(scope="module")
def client(tiny_model_path, tmp_path_factory):
    with running_server(tiny_model_path, tmp_path_factory.mktemp("srv") / "server.log") as srv:
        with openai_client(srv) as c:
            yield c


@pytest.fixture(scope="module")
def bias(tiny_model_path):
    with Llama(tiny_model_path, vocab_only=True) as vocab:
        return {str(t): b for t, b in {**whitespace_bias(vocab), **_no_eog(vocab)}.items()}


def test_server_cut_calls(client, bias):
    kwargs = dict(model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", seed=5, logit_bias=bias,
                  parallel_tool_calls=True, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    full = client.chat.completions.create(max_tokens=400, logprobs=True, **kwargs).choices[0]
    assert len(full.message.tool_calls) >= 2
    first = full.message.tool_calls[0].model_dump()
    k = _tokens_through_first_call([t.token for t in full.logprobs.content])
    cut = client.chat.completions.create(max_tokens=k + 4, **kwargs).choices[0]
    assert cut.finish_reason == "length" and cut.message.content is None
    _check_first_call([c.model_dump() for c in cut.message.tool_calls], first)
    chunks = list(client.chat.completions.create(max_tokens=k + 4, stream=True, **kwargs))
    assert chunks[-1].choices[0].finish_reason == "length"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks).strip()
    calls = [tc.model_dump() for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [c["index"] for c in calls] == [0]
    _check_first_call(calls, first)


def _reasoning(message) -> str | None:
    return (message.model_extra or {}).get("reasoning_content")


def _ask(client, stream=False, **body):
    kwargs = dict(model="tiny", messages=ASK, seed=1, max_tokens=20, extra_body={"grammar": THINK, **body})
    if not stream:
        message = client.chat.completions.create(**kwargs).choices[0].message
        return _reasoning(message), message.content
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    return ("".join(_reasoning(d) or "" for d in deltas) or None), "".join(d.content or "" for d in deltas)


@pytest.mark.parametrize("stream", [False, True])
def test_server_reasoning_content_by_default(client, stream):
    for body in ({}, {"reasoning_format": "auto"}, {"reasoning_format": "deepseek"}):
        reasoning, content = _ask(client, stream, **body)
        assert reasoning == "hm" and re.fullmatch("[a-c]{1,3}", content), (body, reasoning, content)
    reasoning, content = _ask(client, stream, reasoning_format="none")
    assert reasoning is None and content.startswith("<think>\nhm\n</think>")


def test_server_bad_reasoning_format(client):
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, reasoning_format="deepseek-legacy")
    assert err.value.body["param"] == "reasoning_format" and "none, deepseek, auto" in err.value.body["message"]


def test_server_reasoning_format_none_flag(tiny_model_path, tmp_path):
    with running_server(tiny_model_path, tmp_path / "server.log", "--reasoning-format", "none") as srv:
        with openai_client(srv) as c:
            reasoning, content = _ask(c)
            assert reasoning is None and content.startswith("<think>\nhm\n</think>")
            reasoning, content = _ask(c, stream=True, reasoning_format="auto")
            assert reasoning == "hm" and re.fullmatch("[a-c]{1,3}", content)


def test_qwen35_required_tool_call_after_the_opened_think_block(tiny_model_path, llama_cpp_dir):
    """Qwen3.5's template opens <think> itself: the tool-call grammar lets the reply close that
    block and call (before, it demanded a second <think> opener, so the model could not close it)."""
    template = (llama_cpp_dir / "models/templates/Qwen3.5-4B.jinja").read_text("utf-8")
    with Llama(tiny_model_path, n_ctx=1024, n_threads=1, chat_template=template) as qwen35:
        prompt = render_chat_prompt(qwen35, ASK, tools=TOOLS)
        assert prompt.endswith("<think>\n")
        n_prompt = len(qwen35.tokenize(prompt.encode(), add_bos=False, special=True))
        forced = qwen35.tokenize(b"ok</think>\n\n<tool_call>", add_bos=False, special=True)

        def close_then_call(input_ids, scores):
            step = len(input_ids) - n_prompt
            if step < len(forced):
                scores = np.full_like(scores, -np.inf)
                scores[forced[step]] = 0.0
            return scores

        out = qwen35.create_chat_completion(ASK, tools=TOOLS, tool_choice="required", seed=3, max_tokens=200,
                                            logits_processor=close_then_call, logit_bias=whitespace_bias(qwen35),
                                            reasoning_format="deepseek", parallel_tool_calls=False)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    assert choice["message"]["reasoning_content"] == "ok"
    assert choice["message"]["tool_calls"][0]["function"]["name"] in {"get_weather", "add"}
