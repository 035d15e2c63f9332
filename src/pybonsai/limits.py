"""What one request may ask of a shared `Engine` (and of `pybonsai serve`): bounds checked before
any work is done, so that no request can make every neighbour's decode step slow or the server's
memory grow without bound.

The defaults are OpenAI's where OpenAI has one (completions `logprobs` <= 5, chat `top_logprobs`
<= 20, at most 4 `stop` strings, at most 1000 enum values in a schema); the others are pybonsai's:
a stop string of at most 256 characters and a grammar budget (GBNF text, rules, alternatives)
that admits the JSON-schema, tool-call and hand-written grammars seen in practice. A request over
a bound raises `LimitExceeded` (a ValueError naming the parameter), which the server answers
with a 400 whose `param` names the field."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["LimitExceeded", "ParamError", "RequestLimits", "OPENAI_MAX_LOGPROBS", "OPENAI_MAX_TOP_LOGPROBS"]

OPENAI_MAX_LOGPROBS = 5        # /v1/completions `logprobs`
OPENAI_MAX_TOP_LOGPROBS = 20   # /v1/chat/completions `top_logprobs`


class ParamError(ValueError):
    """A bad request argument: `param` names it, `code` is OpenAI's error code for the case."""

    def __init__(self, message: str, param: Optional[str], code: str = "invalid_value"):
        super().__init__(message)
        self.param, self.code = param, code


class LimitExceeded(ParamError):
    """A request argument over one of the engine's `RequestLimits`."""


@dataclass(frozen=True)
class RequestLimits:
    logprobs: int = OPENAI_MAX_LOGPROBS           # completions: top alternatives per token
    top_logprobs: int = OPENAI_MAX_TOP_LOGPROBS   # chat: top alternatives per token
    stop: int = 4                                 # stop strings per request
    stop_chars: int = 256                         # characters per stop string
    grammar_chars: int = 128 * 1024               # GBNF text (given, or made from a schema / tools)
    grammar_rules: int = 1024                     # GBNF rules (`name ::= ...`)
    grammar_alternatives: int = 1024              # `|` alternatives over the whole grammar
    enum_values: int = 1000                       # enum / const values over a whole JSON schema

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"RequestLimits.{f.name} must be an int >= 0, got {v!r}")

    # -- checks (cheap: linear in what the client sent, no model work) ---------------------
    def check_logprobs(self, value: Any, *, chat: bool) -> None:
        name, limit = ("top_logprobs", self.top_logprobs) if chat else ("logprobs", self.logprobs)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise LimitExceeded(f"Invalid '{name}': integer above maximum value. Expected a value <= {limit}, "
                                f"but got {value} instead.", name, "integer_above_max_value")

    def check_stop(self, stop: Any) -> None:
        if stop is None or isinstance(stop, str):
            stops = [] if stop is None else [stop]
        elif isinstance(stop, (list, tuple)):
            stops = list(stop)
            if len(stops) > self.stop:
                raise LimitExceeded(f"Invalid 'stop': array too long. Expected an array with maximum length "
                                    f"{self.stop}, but got an array with length {len(stops)} instead.", "stop",
                                    "array_above_max_length")
        else:
            raise ParamError(f"stop must be a string or a list of strings, got {type(stop).__name__}", "stop",
                             "invalid_type")
        for s in stops:
            if not isinstance(s, str):
                raise ParamError(f"stop must be a string or a list of strings, got {s!r}", "stop", "invalid_type")
            if len(s) > self.stop_chars:
                raise LimitExceeded(f"Invalid 'stop': a stop string has {len(s)} characters; the limit is "
                                    f"{self.stop_chars}.", "stop", "string_above_max_length")

    def check_grammar(self, text: str, param: str = "grammar") -> None:
        """The GBNF budget: characters, rules and alternatives (literals, character classes
        and comments are not counted)."""
        if len(text) > self.grammar_chars:
            raise self._too_complex(param, f"{len(text)} characters", f"{self.grammar_chars} characters")
        code = _GBNF_NON_SYNTAX.sub("", text)
        rules = code.count("::=")
        if rules > self.grammar_rules:
            raise self._too_complex(param, f"{rules} rules", f"{self.grammar_rules} rules")
        alternatives = code.count("|")
        if alternatives > self.grammar_alternatives:
            raise self._too_complex(param, f"{alternatives} alternatives", f"{self.grammar_alternatives} alternatives")

    def check_schema(self, schema: Any, param: str) -> None:
        """The enum budget of a JSON schema (counted before it is turned into a grammar)."""
        count, stack = 0, [schema]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                enum = node.get("enum")
                count += len(enum) if isinstance(enum, list) else 0
                count += "const" in node
                stack.extend(v for k, v in node.items() if k not in ("enum", "const"))
            elif isinstance(node, list):
                stack.extend(node)
            if count > self.enum_values:
                raise self._too_complex(param, f"more than {self.enum_values} enum values",
                                        f"{self.enum_values} enum values")

    @staticmethod
    def _too_complex(param: str, got: str, limit: str) -> LimitExceeded:
        return LimitExceeded(f"Invalid '{param}': the grammar is too complex ({got}; the limit is {limit}): every "
                             "token it constrains checks the whole vocabulary against it.", param,
                             "grammar_too_complex")


# String literals, character classes and comments of GBNF: their '|' and '::=' are text.
_GBNF_NON_SYNTAX = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*')
