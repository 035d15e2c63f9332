"""JSON mode and JSON Schema output (llama.cpp's converter compiled into pybonsai._core): for
30 seeds, the random-weight model's output under each schema validates with `jsonschema`.
Schemas bound their strings and arrays so that every generation completes within max_tokens."""
from __future__ import annotations

import json

import jsonschema
import pytest

from pybonsai import LlamaGrammar
from pybonsai.json_schema import schema_to_grammar
from structured_helpers import llm, short  # noqa: F401  (fixtures)

SEEDS = range(30)
SCHEMAS = {
    "nested object, required, bounded integer, enum": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": -3, "maximum": 250},
            "kind": {"enum": ["cat", "dog", 7, None]},
            "owner": {"type": "object",
                      "properties": {"ok": {"type": "boolean"}, "tag": {"type": "string", "maxLength": 3}},
                      "required": ["ok"], "additionalProperties": False},
        },
        "required": ["id", "owner"],
        "additionalProperties": False,
    },
    "array of patterned strings": {
        "type": "array", "minItems": 1, "maxItems": 3,
        "items": {"type": "string", "pattern": "^[A-C][0-9]{1,2}(-x)?$"},
    },
    "anyOf, const, $ref, number, null": {
        "$defs": {"point": {"type": "array", "prefixItems": [{"type": "integer", "minimum": 0, "maximum": 9},
                                                             {"type": "number"}]}},
        "type": "object",
        "properties": {"at": {"$ref": "#/$defs/point"},
                       "v": {"anyOf": [{"const": "none"}, {"type": "null"}, {"type": "string", "format": "date"}]}},
        "required": ["at", "v"],
        "additionalProperties": False,
    },
}



def _content(out):
    choice = out["choices"][0]
    assert choice["finish_reason"] == "stop", choice  # complete: the grammar ended it, not max_tokens
    return choice["message"]["content"]


@pytest.mark.parametrize("name", SCHEMAS)
def test_output_validates_for_30_seeds(llm, short, name):
    schema = SCHEMAS[name]
    fmt = {"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": True}}
    for seed in SEEDS:
        out = llm.create_chat_completion([{"role": "user", "content": "go"}], response_format=fmt, seed=seed,
                                         temperature=1.0, max_tokens=160, enable_thinking=False,
                                         logit_bias=short)
        jsonschema.validate(json.loads(_content(out)), schema)


def test_llama_cpp_python_shapes(llm):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}
    out = llm.create_chat_completion([{"role": "user", "content": "go"}], seed=1, max_tokens=80,
                                     response_format={"type": "json_object", "schema": schema})
    jsonschema.validate(json.loads(_content(out)), schema)
    grammar = LlamaGrammar.from_json_schema(json.dumps(schema))
    text = llm.create_completion("go", seed=2, max_tokens=80, grammar=grammar)["choices"][0]["text"]
    jsonschema.validate(json.loads(text), schema)


def test_json_object_mode_gives_an_object(llm, short):
    # Any object allows unbounded strings and nesting, which noise rarely closes: bias the
    # closing characters (the grammar still decides what is allowed) so that it completes.
    bias = {**short, **{llm.tokenize(c.encode(), add_bos=False)[0]: 6.0 for c in ('"', "}", "]", '",', '"}')}}
    for seed in range(10):
        out = llm.create_chat_completion([{"role": "user", "content": "go"}], seed=seed, max_tokens=200,
                                         response_format={"type": "json_object"}, logit_bias=bias,
                                         enable_thinking=False)
        assert isinstance(json.loads(_content(out)), dict)


def test_streamed_json_validates(llm):
    schema = SCHEMAS["array of patterned strings"]
    chunks = list(llm.create_chat_completion([{"role": "user", "content": "go"}], seed=4, max_tokens=120, stream=True,
                                             response_format={"type": "json_schema", "json_schema": {"schema": schema}}))
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    jsonschema.validate(json.loads("".join(c["choices"][0]["delta"].get("content", "") for c in chunks)), schema)


UNSUPPORTED = {
    "number bounds": ({"type": "number", "minimum": 0}, "'minimum' on a number schema"),
    "not": ({"not": {"type": "string"}}, "'not'"),
    "uniqueItems": ({"type": "array", "uniqueItems": True}, "'uniqueItems'"),
    "multipleOf": ({"type": "integer", "multipleOf": 2}, "'multipleOf'"),
    "patternProperties": ({"type": "object", "patternProperties": {"^a": {}}}, "'patternProperties'"),
    "minProperties": ({"type": "object", "minProperties": 1}, "'minProperties'"),
    "if/then": ({"type": "object", "if": {}, "then": {}}, "'if'"),
    "email format": ({"type": "string", "format": "email"}, "format 'email'"),
    "remote $ref": ({"$ref": "https://example.com/s.json"}, "same document"),
    "unresolvable $ref": ({"$ref": "#/$defs/missing"}, "cannot be resolved"),
    "unknown type": ({"type": "decimal"}, "unknown type"),
    "lookahead pattern": ({"type": "string", "pattern": "^(?=a)a$"}, "not supported"),
    "unanchored pattern": ({"type": "string", "pattern": "a+"}, "not anchored"),
    "invalid pattern": ({"type": "string", "pattern": "^(a$"}, "unbalanced parentheses"),
    "negative maxLength": ({"type": "string", "maxLength": -1}, "non-negative"),
    "not an object": (["type", "string"], "must be an object"),
    "too deep": ({"type": "array", "items": eval("{'type': 'array', 'items': " * 100 + "{}" + "}" * 100)},
                 "nesting deeper"),
}


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_schema_is_a_clear_value_error(llm, name):
    schema, expected = UNSUPPORTED[name]
    with pytest.raises(ValueError, match=expected.replace("$", r"\$").replace("(", r"\(").replace("?", r"\?")):
        schema_to_grammar(schema)
    with pytest.raises(ValueError):
        llm.create_chat_completion([{"role": "user", "content": "x"}], max_tokens=2,
                                   response_format={"type": "json_schema", "json_schema": {"schema": schema}})


@pytest.mark.parametrize("fmt", [{"type": "xml"}, {"type": "json_schema"}, "json", {"type": "json_schema", "json_schema": 3}])
def test_bad_response_format(llm, fmt):
    with pytest.raises(ValueError, match="response_format"):
        llm.create_chat_completion([{"role": "user", "content": "x"}], max_tokens=2, response_format=fmt)


def test_grammar_and_response_format_together_are_refused(llm):
    with pytest.raises(ValueError, match="give one of them"):
        llm.create_chat_completion([{"role": "user", "content": "x"}], max_tokens=2, grammar='root ::= "a"',
                                   response_format={"type": "json_object"})
