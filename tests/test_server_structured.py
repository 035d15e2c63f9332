"""Structured output through the OpenAI-compatible server, driven by the real `openai` client:
response_format (JSON Schema), tools / tool_choice (plain and streamed), logit_bias, grammar, and
bad schemas as 400 errors."""
from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from pybonsai import Llama
from structured_helpers import whitespace_bias
from test_server import client, server  # noqa: F401  (fixtures: the server subprocess, an openai client)
from test_tool_calls import PARAMS, TOOLS

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99},
                                           "tag": {"enum": ["x", "y"]}},
          "required": ["n", "tag"], "additionalProperties": False}


@pytest.fixture(scope="module")
def bias(tiny_model_path):
    with Llama(tiny_model_path, vocab_only=True) as vocab:
        return {str(t): b for t, b in whitespace_bias(vocab).items()}


def test_json_schema_response_format(client, bias):
    for seed in range(3):
        r = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "go"}], seed=seed, max_tokens=100,
            response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA}},
            logit_bias=bias)
        assert r.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(r.choices[0].message.content), SCHEMA)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls(client, bias, stream):
    kwargs = dict(model="tiny", messages=[{"role": "user", "content": "add"}], tools=TOOLS, seed=3,
                  max_tokens=120, tool_choice={"type": "function", "function": {"name": "add"}}, logit_bias=bias,
                  extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    else:
        r = client.chat.completions.create(**kwargs)
        assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
        calls = r.choices[0].message.tool_calls
    assert len(calls) == 1 and calls[0].function.name == "add" and calls[0].id.startswith("call_")
    jsonschema.validate(json.loads(calls[0].function.arguments), PARAMS["add"])


def test_logit_bias_and_grammar(client):
    r = client.completions.create(model="tiny", prompt="x", max_tokens=6, seed=1,
                                  extra_body={"grammar": 'root ::= ("ab" | "cd"){1,3}'})
    assert r.choices[0].text in {a + b + c for a in ("ab", "cd") for b in ("", "ab", "cd") for c in ("", "ab", "cd")
                                 if b or not c}
    r = client.completions.create(model="tiny", prompt="x", max_tokens=3, seed=1, logit_bias={"12345": 100})
    text = r.choices[0].text
    assert text and text == text[:len(text) // 3] * 3


def test_bad_structured_requests_are_400(client):
    base = dict(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    cases = [
        (dict(response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": {"type": "number",
                                                                                              "minimum": 1}}}),
         "'minimum' on a number schema"),
        (dict(response_format={"type": "xml"}), "response_format"),
        (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "not among"),
        (dict(logit_bias={"-5": 1}), "out of range"),
        (dict(extra_body={"grammar": "root ::= nope"}), "Undefined rule"),
    ]
    for kwargs, match in cases:
        with pytest.raises(openai.BadRequestError, match=match):
            client.chat.completions.create(**base, **kwargs)

