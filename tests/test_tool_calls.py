"""OpenAI tool calling through the GGUF's Qwen3 chat template: rendering (compared with Hugging
Face transformers' own chat-template renderer), grammar-constrained calls on the random-weight
model, parsing into message.tool_calls, streaming, and reasoning_content."""
from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from pybonsai.chat_output import ChatOutput
from pybonsai.completions import render_chat_prompt
from pybonsai.tool_calls import parse_tool_calls
from structured_helpers import llm, short  # noqa: F401  (fixtures)

SEEDS = range(30)
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "maxLength": 6},
                                      "unit": {"enum": ["C", "F"]}},
                       "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two small integers",
        "parameters": {"type": "object",
                       "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                      "b": {"type": "integer", "minimum": 0, "maximum": 99}},
                       "required": ["a", "b"], "additionalProperties": False}}},
]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "Weather in Paris?"}]



def opener_processor(llm):
    """A logits processor that makes the reply to ASK (TOOLS, thinking off) open with <tool_call>."""
    opener = llm.tokenize(b"<tool_call>", add_bos=False, special=True)
    prompt_len = len(llm.tokenize(render_chat_prompt(llm, ASK, False, tools=TOOLS).encode(), add_bos=False,
                                  special=True))

    def force_opener(input_ids, scores):
        step = len(input_ids) - prompt_len
        if step < len(opener):
            forced = np.full_like(scores, -np.inf)
            forced[opener[step]] = 0.0
            return forced
        return scores

    return force_opener


def _check_calls(message, allowed):
    calls = message["tool_calls"]
    assert calls, message
    for call in calls:
        assert call["type"] == "function" and call["id"].startswith("call_")
        name = call["function"]["name"]
        assert name in allowed
        jsonschema.validate(json.loads(call["function"]["arguments"]), PARAMS[name])


def test_conversation_renders_like_transformers(llm, llama_cpp_dir: Path):
    from transformers.utils.chat_template_utils import render_jinja_template
    template = llm.chat_template
    assert template == (llama_cpp_dir / "models/templates/Qwen-Qwen3-0.6B.jinja").read_text("utf-8")
    conversation = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris, and 2+3?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}},
            {"id": "call_2", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "5"},
        {"role": "assistant", "content": "21 C in Paris; 2+3 is 5."},
        {"role": "user", "content": "Thanks!"},
    ]
    for kwargs in ({}, {"enable_thinking": False}):
        ours = render_chat_prompt(llm, conversation, kwargs.get("enable_thinking"), tools=TOOLS)
        rendered = render_jinja_template([conversation], tools=TOOLS, chat_template=template,
                                         add_generation_prompt=True, **kwargs)
        theirs = rendered[0][0] if isinstance(rendered, tuple) else rendered
        if isinstance(theirs, list):
            theirs = theirs[0]
        assert ours == theirs
        assert "<tools>" in ours and "<tool_response>\n5\n</tool_response>" in ours
    # OpenAI clients send content None on an assistant tool-call turn: rendered as "".
    openai_style = [dict(m, content=None) if m.get("tool_calls") else m for m in conversation]
    assert render_chat_prompt(llm, openai_style, tools=TOOLS) == render_chat_prompt(llm, conversation, tools=TOOLS)


@pytest.mark.parametrize("choice", ["required", "named"])
def test_constrained_calls_always_parse_and_validate(llm, short, choice):
    tool_choice = "required" if choice == "required" else {"type": "function", "function": {"name": "add"}}
    allowed = {"get_weather", "add"} if choice == "required" else {"add"}
    for seed in SEEDS:
        out = llm.create_chat_completion(ASK, tools=TOOLS, tool_choice=tool_choice, seed=seed, temperature=1.0,
                                         max_tokens=200, enable_thinking=False, logit_bias=short,
                                         parallel_tool_calls=False)
        choice_ = out["choices"][0]
        assert choice_["finish_reason"] == "tool_calls", (seed, choice_)
        assert choice_["message"]["content"] is None
        _check_calls(choice_["message"], allowed)
        assert len(choice_["message"]["tool_calls"]) == 1


def test_parallel_calls(llm, short):
    counts = set()
    for seed in range(4):
        out = llm.create_chat_completion(ASK, tools=TOOLS, tool_choice="required", seed=seed, max_tokens=400,
                                         enable_thinking=False, logit_bias=short)
        assert out["choices"][0]["finish_reason"] == "tool_calls"
        _check_calls(out["choices"][0]["message"], {"get_weather", "add"})
        counts.add(len(out["choices"][0]["message"]["tool_calls"]))
    assert max(counts) <= 4


def test_auto_gives_text_or_a_valid_call(llm, short):
    """With "auto" the grammar is lazy: free text until the model writes <tool_call>, constrained
    from there. The noise model never writes it by itself, so for half the seeds a logits
    processor forces the opener's tokens (the tiny model's Qwen2 vocabulary spells it in several
    tokens; Qwen3's has one, and the trigger is a pattern on the text, so both work)."""
    force_opener = opener_processor(llm)
    for seed in range(8):
        forced = seed % 2 == 0
        out = llm.create_chat_completion(ASK, tools=TOOLS, seed=seed, max_tokens=120, enable_thinking=False,
                                         logit_bias=short, logits_processor=force_opener if forced else None,
                                         parallel_tool_calls=False)
        choice = out["choices"][0]
        if forced:
            assert choice["finish_reason"] == "tool_calls", choice
            _check_calls(choice["message"], {"get_weather", "add"})
        else:
            assert "tool_calls" not in choice["message"] and choice["message"]["content"], choice


def test_none_hides_the_tools(llm):
    out = llm.create_chat_completion(ASK, tools=TOOLS, tool_choice="none", seed=1, max_tokens=8)
    assert "tool_calls" not in out["choices"][0]["message"]
    assert "<tools>" not in render_chat_prompt(llm, ASK)


def test_streamed_tool_calls(llm, short):
    chunks = list(llm.create_chat_completion(ASK, tools=TOOLS, tool_choice="required", seed=7, max_tokens=200,
                                             stream=True, enable_thinking=False, logit_bias=short))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    deltas = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert [d["index"] for d in deltas] == list(range(len(deltas)))
    _check_calls({"tool_calls": deltas}, {"get_weather", "add"})


def test_bad_tools_and_tool_choice(llm):
    cases = [
        (dict(tools=[{"type": "function", "function": {"name": "bad name!"}}]), "name"),
        (dict(tools=[{"type": "retrieval"}]), "tools\\[0\\]"),
        (dict(tools=TOOLS + TOOLS[:1]), "two tools"),
        (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "not among"),
        (dict(tools=TOOLS, tool_choice="always"), "tool_choice"),
        (dict(tool_choice="required"), "needs tools"),
        (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}],
              tool_choice="required"), "tool 'f'"),
        (dict(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"}), "give one of them"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            llm.create_chat_completion(ASK, max_tokens=2, **kwargs)


def test_parse_tool_calls():
    names = frozenset({"f"})
    text = 'Sure.\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'
    rest, calls = parse_tool_calls(text, names)
    assert rest == "Sure." and json.loads(calls[0]["function"]["arguments"]) == {"x": 1}
    for bad in ('<tool_call>{"name": "g", "arguments": {}}</tool_call>', "<tool_call>{oops</tool_call>",
                '<tool_call>{"name": "f"', "no call here"):
        assert parse_tool_calls(bad, names) is None


def test_reasoning_content_is_split_only_when_asked():
    text = "<think>\nLet me see.\n</think>\n\nHello <b>there</b>"
    for pieces in ([text], list(text), [text[:3], text[3:12], text[12:]]):
        out = ChatOutput(reasoning=True, tool_names=None)
        deltas = [d for p in pieces for d in out.feed(p)] + out.finish()[0]
        assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me see."
        assert "".join(d.get("content", "") for d in deltas) == "Hello <b>there</b>"
    out = ChatOutput(reasoning=False, tool_names=None)
    assert "".join(d["content"] for d in out.feed(text) + out.finish()[0]) == text


def test_reasoning_format_through_the_api(llm):
    grammar = 'root ::= "<think>\\nhm\\n</think>\\n\\n" [a-c]{1,3}'
    out = llm.create_chat_completion(ASK, grammar=grammar, seed=1, max_tokens=20, reasoning_format="deepseek")
    message = out["choices"][0]["message"]
    assert message["reasoning_content"] == "hm" and re.fullmatch("[a-c]{1,3}", message["content"])
    default = llm.create_chat_completion(ASK, grammar=grammar, seed=1, max_tokens=20)["choices"][0]["message"]
    assert default["content"].startswith("<think>") and "reasoning_content" not in default
