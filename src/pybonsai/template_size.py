"""Sizes for the chat-template sandbox (pybonsai.chat), computed BEFORE an operation runs.

A template can build a value that is cheap to hold but huge to render: `["a" * 10**6] * 1500`
is a list of 1500 references to one string (a few kilobytes), and `| join`, `~`, `str()` or
`tojson` of it allocate 1.5 GB. Checking lengths after the fact is too late, so the sandbox asks
this module how many characters a value stands for when rendered (containers counted through
their items) and how many an expanding operation (repeat, join, replace, format, indent, ...)
would produce, and refuses before allocating anything.

Every count stops just past `cap`, so a check costs O(cap) at worst whatever the value.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from jinja2.utils import Namespace

__all__ = ["rendered_size", "expansion", "str_method_expansion"]

_ITEM_OVERHEAD = 4  # quotes and ", " around each item of a rendered container


def rendered_size(value: Any, cap: int) -> int:
    """Characters `value` stands for once rendered (str() of containers included); stops
    counting once the total exceeds `cap`."""
    total, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v)
        elif isinstance(v, (bytes, bytearray)):
            total += 4 * len(v) + 3  # repr escapes
        elif isinstance(v, (list, tuple, set, frozenset, dict)):
            if len(v) > cap:
                return cap + 1
            total += 2 + _ITEM_OVERHEAD * len(v)
            if isinstance(v, dict):
                stack.extend(v.keys())
                stack.extend(v.values())
            else:
                stack.extend(v)
        elif isinstance(v, Namespace):
            stack.append(v._Namespace__attrs)  # type: ignore[attr-defined]  # its repr shows them
        elif isinstance(v, int) and not isinstance(v, bool):
            total += v.bit_length() // 3 + 2
        else:
            total += 16  # numbers, None, Undefined, macros, ranges, generators: short reprs
        if total > cap:
            return total
    return total


def _largest(values: Iterable[Any], cap: int) -> int:
    return max((rendered_size(v, cap) for v in values), default=0)


def _join(sep: str, items: Sequence[Any], cap: int) -> int:
    total = len(sep) * max(len(items) - 1, 0)
    for item in items:
        if total > cap:
            break
        total += rendered_size(item, cap)
    return total


def _replace(s: str, old: Any, new: Any, count: Any = None) -> int:
    if not (isinstance(s, str) and isinstance(old, str) and isinstance(new, str)):
        return len(s) if isinstance(s, str) else 0
    hits = len(s) + 1 if old == "" else s.count(old)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(len(new) - len(old), 0)


def _format(fmt: Any, args: Sequence[Any], kwargs: Mapping[str, Any], marker: str, cap: int) -> int:
    if not isinstance(fmt, str):
        return 0
    return len(fmt) + fmt.count(marker) * _largest([*args, *kwargs.values()], cap)


def expansion(filter_name: str, value: Any, args: Sequence[Any], kwargs: Mapping[str, Any], cap: int) -> int:
    """Characters the jinja2 filter `filter_name` would produce from `value`; 0 for filters
    whose output is bounded by the size of their inputs (those are checked separately)."""
    arg = lambda i, key, default=None: args[i] if len(args) > i else kwargs.get(key, default)  # noqa: E731
    if filter_name == "join" and isinstance(value, Sequence):
        sep = arg(0, "d", "")
        return _join(sep if isinstance(sep, str) else "", value, cap)
    if filter_name == "replace" and isinstance(value, str):
        return _replace(value, arg(0, "old"), arg(1, "new"), arg(2, "count"))
    if filter_name == "indent" and isinstance(value, str):
        width = arg(0, "width", 4)
        width = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        return len(value) + (value.count("\n") + 1) * max(width, 0)
    if filter_name == "wordwrap" and isinstance(value, str):
        width, wrap = arg(0, "width", 79), arg(2, "wrapstring") or "\n"
        width = width if isinstance(width, int) and width > 0 else 1
        return len(value) + (len(value) // width + value.count("\n") + 1) * (len(wrap) if isinstance(wrap, str) else 1)
    if filter_name == "format":
        return _format(value, args, kwargs, "%", cap)
    return 0


def str_method_expansion(s: str, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], cap: int) -> int:
    """Characters the str method `s.name(*args, **kwargs)` would produce; 0 if not expanding."""
    if name == "join" and args and isinstance(args[0], Sequence):
        return _join(s, args[0], cap)
    if name == "replace" and len(args) >= 2:
        return _replace(s, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count"))
    if name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        return len(s) + s.count("\t") * (size if isinstance(size, int) else 8)
    if name == "translate" and args and isinstance(args[0], Mapping):
        return len(s) * max(_largest(args[0].values(), cap), 1)
    if name in ("format", "format_map"):
        values = list(args) if name == "format" else list(args[0].values()) if args and isinstance(args[0], Mapping) else []
        return _format(s, values, kwargs, "{", cap)
    return 0
