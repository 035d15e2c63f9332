"""OpenAI tool calling over a Qwen3-style chat template: tools are rendered by the template,
the model answers with `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks, which
become OpenAI `tool_calls`. With tool_choice "required" or a named function the call is
grammar-constrained (llama.cpp's GBNF sampler, the arguments' grammar made by llama.cpp's JSON
Schema converter), so it always parses, names a real tool and has valid arguments; with "auto"
the same grammar is lazy: it takes over once the model opens a `<tool_call>`."""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from . import _core
from .json_schema import check_schema

OPEN, CLOSE = "<tool_call>", "</tool_call>"
TRIGGER = r"[\s\S]*?(<tool_call>[\s\S]*)"  # llama.cpp constrains from the capture group on
MAX_PARALLEL_CALLS = 4
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names


@dataclass
class ToolPlan:
    """How one chat completion handles tools."""

    tools: Optional[list[dict]] = None           # given to the chat template
    grammar: Optional[tuple] = None              # (GBNF, root[, lazy trigger tokens]) for the sampler
    names: frozenset = field(default_factory=frozenset)  # tool names whose calls are parsed


def gbnf_literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


def _check_tools(tools: Any) -> list[dict]:
    if not isinstance(tools, (list, tuple)) or not tools:
        raise ValueError("tools must be a non-empty list of {'type': 'function', 'function': {...}}")
    seen = set()
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(fn, dict):
            raise ValueError(f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., 'parameters': ...}}}}")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"tools[{i}].function.name must match [A-Za-z0-9_-]{{1,64}}, got {name!r}")
        if name in seen:
            raise ValueError(f"two tools are named {name!r}")
        seen.add(name)
        params = fn.get("parameters", {"type": "object"})
        if not isinstance(params, dict):
            raise ValueError(f"tools[{i}].function.parameters must be a JSON schema object")
        try:
            check_schema(params)
        except ValueError as exc:
            raise ValueError(f"tool {name!r}: {exc}") from None
    return list(tools)


def _choice(tool_choice: Any, names: list[str]) -> tuple[str, Optional[str]]:
    if tool_choice is None or tool_choice in ("auto", "none", "required"):
        return tool_choice or "auto", None
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        name = (tool_choice.get("function") or {}).get("name")
        if name not in names:
            raise ValueError(f"tool_choice names {name!r}, which is not among the tools {names}")
        return "named", name
    raise ValueError("tool_choice must be 'auto', 'none', 'required' or "
                     f"{{'type': 'function', 'function': {{'name': ...}}}}, got {tool_choice!r}")


def tool_call_grammar(tools: Sequence[dict], only: Optional[str], think: bool, parallel: bool,
                      think_open: bool = False) -> str:
    """GBNF for one tool call (up to MAX_PARALLEL_CALLS if `parallel`; only `only`, if given:
    exactly one), in the template's format; `think` allows a leading <think> block, or with
    `think_open` (the prompt itself opened it, as Qwen3.5's template does) the rest of one."""
    schemas, alternatives = [], []
    for i, tool in enumerate(tools):
        fn = tool["function"]
        if only is not None and fn["name"] != only:
            continue
        schemas.append((f"tool-{i}-args", json.dumps(fn.get("parameters") or {"type": "object"})))
        head = gbnf_literal(OPEN + '\n{"name": "' + fn["name"] + '", "arguments": ')
        alternatives.append(f"{head} tool-{i}-args {gbnf_literal('}' + chr(10) + CLOSE)}")
    rules = [("tool-call", " | ".join(f"( {a} )" for a in alternatives))]
    calls = "tool-call" if only is not None or not parallel else \
        f'tool-call ( "\\n" tool-call ){{0,{MAX_PARALLEL_CALLS - 1}}}'
    if think:
        opener = "" if think_open else '"<think>" '
        rules.append(("think", opener + '( [^<] | "<" [^/] )* "</think>" [ \\n]{0,4}'))
        calls = f"think? {calls}"
    rules.append(("root", calls))
    grammar, warnings, names = _core.json_schemas_to_grammar(schemas, rules)
    if warnings.strip():
        raise ValueError("unsupported tool parameters schema: " + warnings.strip().removeprefix("WARNING: "))
    if list(names) != [n for n, _ in schemas]:
        raise RuntimeError(f"the converter renamed tool rules: {names}")
    return grammar


def plan_tools(tools: Any, tool_choice: Any, thinking: bool, parallel: bool = True,
               think_open: bool = False) -> ToolPlan:
    """The template tools, grammar and parsing for `tools` / `tool_choice` (`think_open`: the
    rendered prompt ends inside an opened <think> block)."""
    if tools is None:
        if tool_choice not in (None, "none", "auto"):
            raise ValueError("tool_choice needs tools")
        return ToolPlan()
    tools = _check_tools(tools)
    names = [t["function"]["name"] for t in tools]
    mode, only = _choice(tool_choice, names)
    if mode == "none":  # the model is not told about tools it may not call
        return ToolPlan()
    if mode == "auto":  # lazy: free text until the model writes <tool_call> (one token or several)
        grammar = (tool_call_grammar(tools, None, think=False, parallel=parallel), "root", [], [TRIGGER])
        return ToolPlan(tools, grammar, frozenset(names))
    grammar = tool_call_grammar(tools, only, think=thinking, parallel=parallel, think_open=think_open)
    return ToolPlan(tools, (grammar, "root"),
                    frozenset([only] if only else names))


def parse_tool_calls(text: str, names: frozenset, truncated: bool = False) -> Optional[tuple[str, list[dict]]]:
    """(text outside the calls, OpenAI tool_calls) if `text` holds well-formed calls to known
    tools, else None. `truncated` (the reply ran out of max_tokens): a last block cut short (an
    opener without its closer, or part of an opener) is dropped when complete calls precede it."""
    calls, outside, pos = [], [], 0
    while True:
        start = text.find(OPEN, pos)
        if start < 0:
            tail = text[pos:]
            if truncated and calls:  # "...</tool_call>\n<tool_ca": the start of a call, cut
                tail = tail[:len(tail) - partial_marker_len(tail, OPEN)]
            outside.append(tail)
            break
        end = text.find(CLOSE, start)
        if end < 0:
            if truncated and calls:
                outside.append(text[pos:start])
                break
            return None
        outside.append(text[pos:start])
        try:
            call = json.loads(text[start + len(OPEN):end])
        except json.JSONDecodeError:
            return None
        if not isinstance(call, dict) or call.get("name") not in names or not isinstance(call.get("arguments", {}), dict):
            return None
        calls.append({"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
                      "function": {"name": call["name"],
                                   "arguments": json.dumps(call.get("arguments", {}), ensure_ascii=False)}})
        pos = end + len(CLOSE)
    if not calls:
        return None
    return "".join(outside).strip(), calls


def partial_marker_len(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0
