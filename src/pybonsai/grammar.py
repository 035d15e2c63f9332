"""GBNF grammars (llama.cpp's grammar format) for constrained sampling: `LlamaGrammar`, with
llama-cpp-python's constructors, and the one place that turns a `grammar=` argument into text.

A grammar is parsed when a generation starts (the parser needs the model's vocabulary); an
invalid one raises ValueError quoting llama.cpp's parser."""
from __future__ import annotations

import json
import os
from typing import Any, Optional, Union

__all__ = ["LlamaGrammar", "grammar_text", "json_schema_to_gbnf"]

# Bounds checked before llama.cpp sees a grammar (its parser recurses on nesting).
MAX_GRAMMAR_CHARS = 1_000_000
MAX_NESTING = 256


class LlamaGrammar:
    """A GBNF grammar, built like llama-cpp-python's: from_string, from_file, from_json_schema."""

    def __init__(self, *, _grammar: str, root: str = "root") -> None:
        self._grammar = _grammar
        self.root = root

    @classmethod
    def from_string(cls, grammar: str, verbose: bool = True) -> "LlamaGrammar":
        return cls(_grammar=check_gbnf(grammar))

    @classmethod
    def from_file(cls, file: Union[str, "os.PathLike[str]"], verbose: bool = True) -> "LlamaGrammar":
        with open(file, encoding="utf-8") as f:
            return cls.from_string(f.read(), verbose=verbose)

    @classmethod
    def from_json_schema(cls, json_schema: Union[str, dict], verbose: bool = True) -> "LlamaGrammar":
        """A grammar that accepts exactly the JSON documents valid under `json_schema` (a dict or
        its JSON text), made by the pinned llama.cpp's converter."""
        from .json_schema import schema_to_grammar
        if isinstance(json_schema, str):
            try:
                json_schema = json.loads(json_schema)
            except json.JSONDecodeError as exc:
                raise ValueError(f"json_schema is not valid JSON: {exc}") from None
        return cls(_grammar=schema_to_grammar(json_schema))

    @property
    def grammar(self) -> str:
        return self._grammar

    def __repr__(self) -> str:
        return f"LlamaGrammar({len(self._grammar)} chars, root={self.root!r})"


def json_schema_to_gbnf(schema: str, prop_order: Optional[list[str]] = None) -> str:
    """llama-cpp-python's converter entry point: GBNF text for a JSON schema given as JSON text.
    Object properties named in `prop_order` come first, in that order, in every object the
    schema describes; the others keep the schema's order."""
    from .json_schema import schema_to_grammar
    try:
        parsed = json.loads(schema)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"schema is not JSON text: {exc}") from None
    if prop_order:
        parsed = _ordered_properties(parsed, {name: i for i, name in enumerate(prop_order)})
    return schema_to_grammar(parsed)


def _ordered_properties(node: Any, rank: dict) -> Any:
    if isinstance(node, list):
        return [_ordered_properties(x, rank) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _ordered_properties(v, rank) for k, v in node.items()}
    props = out.get("properties")
    if isinstance(props, dict):
        order = sorted(enumerate(props), key=lambda item: (rank.get(item[1], len(rank)), item[0]))
        out["properties"] = {name: props[name] for _, name in order}
    return out


def check_gbnf(text: Any) -> str:
    """Checks llama.cpp's parser cannot survive, done before it runs."""
    if not isinstance(text, str):
        raise TypeError(f"a grammar must be a GBNF string or a LlamaGrammar, not {type(text).__name__}")
    if not text.strip():
        raise ValueError("the grammar is empty (llama.cpp would not constrain anything)")
    if len(text) > MAX_GRAMMAR_CHARS:
        raise ValueError(f"the grammar has {len(text)} characters; the limit is {MAX_GRAMMAR_CHARS}")
    if "\0" in text:
        raise ValueError("the grammar contains a NUL character")
    depth = deepest = 0
    for ch in text:  # brackets inside literals count too: a safe over-estimate of parser recursion
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    if deepest > MAX_NESTING:
        raise ValueError(f"the grammar nests parentheses {deepest} deep; the limit is {MAX_NESTING}")
    return text


def grammar_text(grammar: Union[None, str, LlamaGrammar, tuple]) -> Optional[tuple]:
    """(GBNF text, root rule) for a `grammar=` argument, or None. A tuple (text, root[, lazy
    trigger tokens]) is the form pybonsai passes internally."""
    if grammar is None:
        return None
    if isinstance(grammar, tuple):
        return (check_gbnf(grammar[0]), *grammar[1:])
    if isinstance(grammar, LlamaGrammar):
        return check_gbnf(grammar.grammar), grammar.root
    # Other LlamaGrammar-like objects (llama-cpp-python's keeps the text in `_grammar`).
    text = getattr(grammar, "_grammar", grammar)
    return check_gbnf(text), str(getattr(grammar, "root", getattr(grammar, "_root", "root")))
