"""JSON Schema -> GBNF grammar through the pinned llama.cpp's own converter
(common/json-schema-to-grammar.cpp, compiled into pybonsai._core), and OpenAI's
`response_format` turned into a grammar.

The converter silently ignores keywords it does not implement (bounds on "number", "not",
"uniqueItems", "multipleOf", "patternProperties", most string formats, ...): output would then not
validate. So schemas are checked here first, following the converter's own dispatch
(common/json-schema.cpp), and anything it would not enforce raises ValueError naming the
keyword and where it is."""
from __future__ import annotations

import json
from typing import Any, Optional

from . import _core

__all__ = ["schema_to_grammar", "response_format_grammar", "SUPPORTED_FORMATS"]

MAX_DEPTH = 64
MAX_SCHEMA_CHARS = 1_000_000
SUPPORTED_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})
# Keywords that never constrain a value: allowed anywhere.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment",
                          "deprecated", "readOnly", "writeOnly", "$defs", "definitions", "$anchor", "strict"})
_BY_TYPE = {
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "prefixItems", "minItems", "maxItems"},
    "string": {"pattern", "format", "minLength", "maxLength"},
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "number": set(),
    "boolean": set(),
    "null": set(),
}
_HINTS = {
    ("number", "minimum"): "bounds are only enforced on \"integer\"",
    ("number", "maximum"): "bounds are only enforced on \"integer\"",
    ("number", "exclusiveMinimum"): "bounds are only enforced on \"integer\"",
    ("number", "exclusiveMaximum"): "bounds are only enforced on \"integer\"",
}


class _Checker:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.seen_refs: set[str] = set()

    def fail(self, path: str, message: str) -> None:
        raise ValueError(f"unsupported JSON schema at {path}: {message}")

    def unused(self, schema: dict, used: set, path: str, kind: str) -> None:
        for key in schema:
            if key not in used and key not in _ANNOTATIONS and key != "type":
                hint = _HINTS.get((kind, key), "llama.cpp's converter would ignore it, so output could violate it")
                self.fail(path, f"keyword {key!r} on a {kind} schema is not supported ({hint})")

    def check(self, schema: Any, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.fail(path, f"nesting deeper than {MAX_DEPTH}")
        if schema is True or schema == {}:
            return
        if not isinstance(schema, dict):
            self.fail(path, "a schema must be an object")
        if "$ref" in schema:
            self.unused(schema, {"$ref"}, path, "$ref")
            self.check_ref(schema["$ref"], path, depth)
            return
        for key in ("anyOf", "oneOf"):
            if key in schema:
                self.unused(schema, {key}, path, key)
                self.check_list(schema[key], f"{path}/{key}", depth)
                return
        kind = schema.get("type")
        if isinstance(kind, list):
            for i, t in enumerate(kind):
                self.check({**schema, "type": t}, f"{path}/type/{i}", depth + 1)
            return
        if "const" in schema or "enum" in schema:
            self.unused(schema, {"const", "enum"}, path, "const/enum")
            return
        if kind is None:
            kind = self.implied_type(schema)
            if kind is None:
                self.unused(schema, {"allOf"}, path, "untyped")
        elif not isinstance(kind, str) or kind not in _BY_TYPE:
            self.fail(path, f"unknown type {kind!r}")
        if kind in ("object", "string", None) and "allOf" in schema and not schema.get("properties"):
            self.unused(schema, {"allOf"}, path, kind or "untyped")
            self.check_list(schema["allOf"], f"{path}/allOf", depth)
            return
        if kind is None:
            return
        self.unused(schema, _BY_TYPE[kind], path, kind)
        if kind == "object":
            for name, sub in (schema.get("properties") or {}).items():
                self.check(sub, f"{path}/properties/{name}", depth + 1)
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                self.check(extra, f"{path}/additionalProperties", depth + 1)
        elif kind == "array":
            items = schema.get("items", schema.get("prefixItems"))
            if isinstance(items, list):
                self.check_list(items, f"{path}/items", depth)
            elif items is not None:
                self.check(items, f"{path}/items", depth + 1)
        elif kind == "string" and "format" in schema and schema["format"] not in SUPPORTED_FORMATS:
            self.fail(path, f"string format {schema['format']!r} is not supported "
                            f"(supported: {', '.join(sorted(SUPPORTED_FORMATS))})")

    @staticmethod
    def implied_type(schema: dict) -> Optional[str]:
        """The type the converter infers for a schema without "type" (json-schema.cpp's order)."""
        if "properties" in schema or schema.get("additionalProperties", True) is not True:
            return "object"
        if "allOf" in schema:
            return None
        if "items" in schema or "prefixItems" in schema:
            return "array"
        if {"pattern", "minLength", "maxLength", "format"} & schema.keys():
            return "string"
        return None

    def check_list(self, schemas: Any, path: str, depth: int) -> None:
        if not isinstance(schemas, list) or not schemas:
            self.fail(path, "must be a non-empty array of schemas")
        for i, sub in enumerate(schemas):
            self.check(sub, f"{path}/{i}", depth + 1)

    def check_ref(self, ref: Any, path: str, depth: int) -> None:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            self.fail(path, f"$ref {ref!r}: only references into the same document (\"#/...\") are supported")
        if ref in self.seen_refs:
            return
        self.seen_refs.add(ref)
        target: Any = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                self.fail(path, f"$ref {ref!r} cannot be resolved")
        self.check(target, ref, depth + 1)


def check_schema(schema: Any) -> None:
    """ValueError if llama.cpp's converter would not enforce all of `schema`."""
    _Checker(schema).check(schema, "#", 0)


def schema_to_grammar(schema: Any) -> str:
    """GBNF text accepting exactly the JSON documents valid under `schema` (a dict)."""
    if isinstance(schema, bool) or not isinstance(schema, dict):
        raise ValueError(f"a JSON schema must be an object (dict), got {type(schema).__name__}")
    check_schema(schema)
    try:
        text = json.dumps(schema, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the JSON schema is not serializable as JSON: {exc}") from None
    if len(text) > MAX_SCHEMA_CHARS:
        raise ValueError(f"the JSON schema has {len(text)} characters; the limit is {MAX_SCHEMA_CHARS}")
    grammar, warnings = _core.json_schema_to_grammar(text)
    if warnings.strip():  # e.g. a pattern it cannot express: it would accept any string instead
        raise ValueError("unsupported JSON schema: " + warnings.strip().removeprefix("WARNING: "))
    return grammar


def response_format_grammar(response_format: Optional[dict]) -> Optional[str]:
    """The grammar for OpenAI's response_format: {"type": "json_object"} (any object; llama-cpp-python's
    optional "schema" key), {"type": "json_schema", "json_schema": {"name", "schema", ...}}, or
    {"type": "text"} / None (no grammar)."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise ValueError(f"response_format must be a dict, got {type(response_format).__name__}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return schema_to_grammar(response_format.get("schema") or {"type": "object"})
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise ValueError('response_format {"type": "json_schema"} needs a "json_schema" object '
                             '({"name": ..., "schema": {...}})')
        return schema_to_grammar(spec.get("schema") or {"type": "object"})
    raise ValueError(f"response_format type must be 'text', 'json_object' or 'json_schema', got {kind!r}")
