"""Chat templates (the GGUF's `tokenizer.chat_template`), rendered as Hugging Face transformers
renders them: jinja2's immutable sandbox with trim_blocks/lstrip_blocks and loopcontrols, plus the
`raise_exception`, `strftime_now` and non-ASCII-keeping `tojson` helpers.

Templates are untrusted input, so rendering is bounded: sandbox violations raise (instead of
rendering as empty), every output piece and assigned value counts against a size budget, and for
loops, calls and filters check a wall-clock deadline. Operations that expand their inputs (repeat,
join, replace, format, indent, `~`, rendering a container) are sized before they run
(pybonsai.template_size), so a template cannot make the process allocate gigabytes first and fail
afterwards. Every failure is a `ChatTemplateError`
naming the template and the cause."""
from __future__ import annotations

import json
import re
import time
import traceback
from collections.abc import Iterator as _IteratorABC, Sized
from contextvars import ContextVar
from datetime import datetime
from functools import wraps
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.ext import Extension
from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from .template_size import expansion, rendered_size, str_method_expansion

__all__ = ["ChatTemplate", "ChatTemplateError"]

DEFAULT_MAX_OUTPUT_CHARS = 1_000_000
DEFAULT_TIMEOUT_S = 5.0
_GUARD_ITER, _GUARD_VALUE, _GUARD_OUTPUT = "_pybonsai_guard_iter", "_pybonsai_guard_value", "_pybonsai_guard_output"
_GUARD_CONCAT = "_pybonsai_guard_concat"
_HUGE_WIDTH = re.compile(r"%[#0 +\-]*(\d*\.)?\d{7}|\{[^{}]*:[^{}]*\d{7}")  # "%9999999s", "{:>9999999}"


class ChatTemplateError(ValueError):
    """The chat template or the messages given to it cannot be rendered."""


class _Abort(Exception):
    """A render limit was hit (size, time, huge argument); the message says which."""


class _Raised(Exception):
    """The template called raise_exception(message)."""


class _Budget:
    """Limits of one render; found through a context variable by the environment's hooks."""

    def __init__(self, max_chars: int, timeout_s: float):
        self.max_chars, self.timeout_s = max_chars, timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.produced, self.max_produced = 0, 8 * max_chars  # output incl. macro/set-block buffers

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Abort(f"rendering took longer than {self.timeout_s:g} s (runaway loop?)")

    def check_value(self, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > 64 * self.max_chars:
                raise _Abort("an integer is too large")
            return value
        size = rendered_size(value, self.max_chars)
        if size > self.max_chars:
            raise _Abort(f"a {type(value).__name__} standing for more than {self.max_chars} characters "
                         "exceeds the limit")
        return value

    def check_expansion(self, size: int, what: str) -> None:
        """Refuse an operation whose result would exceed the limit, before it runs."""
        if size > self.max_chars:
            raise _Abort(f"{what} would produce {size} characters, which exceeds the limit of {self.max_chars}")

    def bounded_list(self, iterable: Any) -> list:
        """The items of an iterator, collected while counting their rendered size."""
        items, total = [], 0
        for item in iterable:
            self.tick()
            total += rendered_size(item, self.max_chars)
            self.check_expansion(total, "collecting the items of an iterator")
            items.append(item)
        return items

    def counted(self, iterator: Any) -> Iterator[Any]:
        """`iterator`, with what it yields counted against the render's production budget
        (`big | map('upper') | list` makes new strings without any single one being large)."""
        for item in iterator:
            self.tick()
            self.produce(rendered_size(item, self.max_chars))
            yield item

    def produce(self, size: int) -> None:
        self.produced += size
        if self.produced > self.max_produced:
            raise _Abort(f"the template produced more than {self.max_produced} characters")

    def check_args(self, args: Iterable[Any]) -> None:
        for arg in args:
            if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > self.max_chars:
                raise _Abort(f"argument {arg} is too large (limit {self.max_chars})")

    @staticmethod
    def check_format(fmt: Any) -> None:
        if isinstance(fmt, str) and _HUGE_WIDTH.search(fmt):
            raise _Abort("a format string asks for a huge field width")


_BUDGET: ContextVar[Optional[_Budget]] = ContextVar("pybonsai_chat_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # also stops jinja2 from constant-folding guarded calls at compile time
        raise _Abort("no render in progress")
    return budget


class _SandboxEnvironment(ImmutableSandboxedEnvironment):
    """The HF-compatible sandbox, with violations raising and every call/operator bounded."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} "
                            "object is unsafe")

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        if not isinstance(obj, Macro):  # str.ljust(10**9), "{:>9999999}".format(1), lipsum(10**9)
            budget.check_args((*args, *kwargs.values()))
            name = getattr(obj, "__name__", None)
            owner = getattr(getattr(obj, "__wrapped__", obj), "__self__", None)  # str.format is sandbox-wrapped
            if name in ("format", "format_map"):
                budget.check_format(owner)
            if isinstance(owner, str) and isinstance(name, str):
                if name == "join" and args and not isinstance(args[0], Sized):
                    args = (budget.bounded_list(args[0]), *args[1:])
                budget.check_expansion(str_method_expansion(owner, name, args, kwargs, budget.max_chars),
                                       f"str.{name}")
        return budget.check_value(super().call(context, obj, *args, **kwargs))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.tick()
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and left.bit_length() * right > 64 * budget.max_chars:
                raise _Abort(f"{left} ** {right} is too large")
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and count > 0 \
                        and rendered_size(seq, budget.max_chars) * count > budget.max_chars:
                    raise _Abort(f"repeating a {type(seq).__name__} {count} times is too large")
            if isinstance(left, int) and isinstance(right, int) \
                    and left.bit_length() + right.bit_length() > 64 * budget.max_chars:
                raise _Abort("a product is too large")
        elif operator == "%" and isinstance(left, str):
            budget.check_format(left)
            values = right if isinstance(right, tuple) else (right,)
            budget.check_args(values)
            budget.check_expansion(len(left) + left.count("%") * max(
                (rendered_size(v, budget.max_chars) for v in values), default=0), "a % format")
        elif operator == "+" and isinstance(left, (str, list, tuple)):
            budget.check_expansion(rendered_size(left, budget.max_chars) + rendered_size(right, budget.max_chars),
                                   "a concatenation")
        return budget.check_value(super().call_binop(context, operator, left, right))


class _GenerationTag(Extension):
    """transformers' `{% generation %}...{% endgeneration %}` marker; renders its body as is."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def _guard_filter(func: Any, name: str) -> Any:
    """A filter wrapped to respect the render budget: arguments, the size of what it will
    produce (checked before it runs), the size of its result, and what a lazy result yields."""
    skip = 2 if hasattr(func, "jinja_pass_arg") else 1  # the context/environment, the value

    @wraps(func)  # keeps jinja's pass_context/pass_environment marker
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        budget.check_args((*args[skip:], *kwargs.values()))
        if name == "format":  # "%9999999s"|format(x)
            budget.check_format(args[skip - 1])
        if name == "join" and len(args) >= skip and not isinstance(args[skip - 1], Sized):
            args = (*args[:skip - 1], budget.bounded_list(args[skip - 1]), *args[skip:])
        for arg in (*args[skip - 1:], *kwargs.values()):  # `wide_list | tojson`, `| string`, ...
            budget.check_value(arg)
        if len(args) >= skip:
            budget.check_expansion(expansion(name, args[skip - 1], args[skip:], kwargs, budget.max_chars),
                                   f"the {name} filter")
        result = budget.check_value(func(*args, **kwargs))
        return budget.counted(result) if isinstance(result, _IteratorABC) else result
    return guarded


def _raise_exception(message: Any) -> None:
    raise _Raised(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


@jinja2.pass_context
def _guard_iter(context: Any, iterable: Any) -> Iterator[Any]:
    budget = _budget()
    for item in iterable:
        budget.tick()
        yield item


@jinja2.pass_context
def _guard_value(context: Any, value: Any) -> Any:
    return _budget().check_value(value)


@jinja2.pass_context
def _guard_output(context: Any, value: Any) -> Any:
    budget = _budget()
    budget.check_value(value)  # before jinja calls str() on it
    budget.produce(rendered_size(value, budget.max_chars))
    return value


@jinja2.pass_context
def _guard_concat(context: Any, values: list) -> str:
    """`a ~ b ~ c`, sized before the strings are built."""
    budget = _budget()
    budget.check_expansion(sum(rendered_size(v, budget.max_chars) for v in values), "a ~ concatenation")
    return "".join(map(str, values))


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    budget = _budget()
    budget.check_expansion(n * max * 12, "lipsum")  # words are at most ~11 characters and a space
    return jinja2.utils.generate_lorem_ipsum(n=n, html=html, min=min, max=max)


def _make_environment() -> _SandboxEnvironment:
    env = _SandboxEnvironment(trim_blocks=True, lstrip_blocks=True,
                              extensions=["jinja2.ext.loopcontrols", _GenerationTag])
    env.filters["tojson"] = _tojson
    for key, func in list(env.filters.items()):  # tests are cheap predicates: left alone
        env.filters[key] = _guard_filter(func, key)
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, lipsum=_lipsum)
    env.filters.update({_GUARD_ITER: _guard_iter, _GUARD_VALUE: _guard_value,
                        _GUARD_OUTPUT: _guard_output, _GUARD_CONCAT: _guard_concat})
    return env


_ENV = _make_environment()


def _guard(node: nodes.Expr, filter_name: str) -> nodes.Filter:
    return nodes.Filter(node, filter_name, [], [], None, None, lineno=node.lineno)


class _SizeConcat(NodeTransformer):
    """`a ~ b` becomes `[a, b] | _pybonsai_guard_concat`, which sizes the result first."""

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), _GUARD_CONCAT, [], [], None, None,
                            lineno=node.lineno)


def _instrument(ast: nodes.Template) -> nodes.Template:
    """Route loop iterables, assigned values and output pieces through the budget filters."""
    ast = _SizeConcat().visit(ast)
    for node in list(ast.find_all((nodes.For, nodes.Assign, nodes.Output))):
        if isinstance(node, nodes.For):
            node.iter = _guard(node.iter, _GUARD_ITER)
        elif isinstance(node, nodes.Assign):
            node.node = _guard(node.node, _GUARD_VALUE)
        else:
            node.nodes = [_guard(nodes.Const(child.data, lineno=child.lineno)
                                 if isinstance(child, nodes.TemplateData) else child, _GUARD_OUTPUT)
                          for child in node.nodes]
    return ast


def _template_line(tb: Any) -> str:
    lines = [lineno for frame, lineno in traceback.walk_tb(tb)
             if frame.f_code.co_filename == "<template>"]
    return f" (line {lines[-1]})" if lines else ""


def _normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """Check the OpenAI-style messages; text-part lists become one string."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of dicts, got {type(messages).__name__}")
    if not messages:
        raise ChatTemplateError("messages is empty")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise TypeError(f"{where} must be a dict, got {type(message).__name__}")
        if "role" not in message:
            raise ChatTemplateError(f"{where} has no 'role'")
        message = dict(message)
        if not isinstance(message["role"], str):
            raise TypeError(f"{where}['role'] must be a str, got {type(message['role']).__name__}")
        content = message.get("content")
        if isinstance(content, (list, tuple)):
            texts = [part.get("text") if isinstance(part, Mapping) and part.get("type") == "text"
                     else None for part in content]
            if any(not isinstance(t, str) for t in texts):
                raise TypeError(f"{where}['content'] parts must be {{'type': 'text', 'text': str}}")
            message["content"] = content = "".join(texts)
        if content is not None and not isinstance(content, str):
            raise TypeError(f"{where}['content'] must be a str or None, "
                            f"got {type(content).__name__}")
        for key, kinds, label in (("tool_calls", (list, tuple), "a list"),
                                  ("reasoning_content", str, "a str")):
            if message.get(key) is not None and not isinstance(message[key], kinds):
                raise TypeError(f"{where}[{key!r}] must be {label} or None, "
                                f"got {type(message[key]).__name__}")
        out.append(message)
    return out


class ChatTemplate:
    """A compiled chat template. `render()` turns OpenAI-style messages into a prompt string."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "",
                 name: str = "tokenizer.chat_template",
                 max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
                 timeout_s: float = DEFAULT_TIMEOUT_S):
        if not isinstance(source, str):
            raise TypeError(f"{name}: the template source must be a str, got {type(source).__name__}")
        self.source, self.name = source, name
        self.bos_token, self.eos_token = bos_token, eos_token
        self.max_output_chars, self.timeout_s = max_output_chars, timeout_s
        try:
            self._template = _ENV.from_string(_instrument(_ENV.parse(source)))
        except TemplateSyntaxError as exc:
            raise ChatTemplateError(f"{name}: syntax error at line {exc.lineno}: {exc.message}") from None
        except RecursionError:
            raise ChatTemplateError(f"{name}: the template is nested too deeply") from None

    def __repr__(self) -> str:
        return f"ChatTemplate(name={self.name!r}, {len(self.source)} chars)"

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
               tools: Optional[Sequence[Mapping[str, Any]]] = None, **template_kwargs: Any) -> str:
        """The prompt for `messages`; template_kwargs (e.g. enable_thinking=False) go to the template."""
        messages = _normalize_messages(messages)
        if tools is not None and (isinstance(tools, (str, bytes, Mapping))
                                  or not isinstance(tools, Sequence)):
            raise TypeError(f"tools must be a list of dicts or None, got {type(tools).__name__}")
        for i, tool in enumerate(tools or ()):
            if not isinstance(tool, Mapping):
                raise TypeError(f"tools[{i}] must be a dict, got {type(tool).__name__}")
        inputs = sum(len(str(m.get("content") or "")) + len(str(m.get("reasoning_content") or ""))
                     + len(str(m.get("tool_calls") or "")) for m in messages) + len(str(tools or ""))
        limit = self.max_output_chars + 2 * inputs
        context = {"bos_token": self.bos_token, "eos_token": self.eos_token, **template_kwargs,
                   "messages": messages, "add_generation_prompt": bool(add_generation_prompt)}
        if tools is not None:  # left undefined otherwise, for `{% if tools is defined %}`
            context["tools"] = list(tools)
        token = _BUDGET.set(_Budget(limit, self.timeout_s))
        pieces, size, stream = [], 0, self._template.generate(**context)
        try:
            for piece in stream:
                size += len(piece)
                if size > limit:
                    raise _Abort(f"the rendered prompt exceeds {limit} characters")
                pieces.append(piece)
        except _Raised as exc:
            raise ChatTemplateError(f"{self.name}: the template raised an error: {exc}") from None
        except _Abort as exc:
            raise ChatTemplateError(f"{self.name}: {exc}{_template_line(exc.__traceback__)}") from None
        except SecurityError as exc:
            raise ChatTemplateError(f"{self.name}: sandbox violation{_template_line(exc.__traceback__)}: "
                                    f"{exc}") from None
        except RecursionError:
            raise ChatTemplateError(f"{self.name}: recursion too deep while rendering") from None
        except MemoryError:
            raise ChatTemplateError(f"{self.name}: out of memory while rendering") from None
        except Exception as exc:  # UndefinedError, TypeError from the template's own operations, ...
            raise ChatTemplateError(f"{self.name}: rendering failed{_template_line(exc.__traceback__)}: "
                                    f"{type(exc).__name__}: {exc}") from exc
        finally:
            stream.close()
            _BUDGET.reset(token)
        return "".join(pieces)
