"""What a chat completion's structured-output arguments (response_format, tools/tool_choice,
grammar, reasoning_format) mean for one request: the tools the template shows, the one grammar
that constrains sampling, and how the output is parsed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from .grammar import grammar_text
from .json_schema import response_format_grammar
from .tool_calls import plan_tools

if TYPE_CHECKING:
    from .llama import Llama


@dataclass(frozen=True)
class ChatConstraints:
    tools: Optional[list]
    grammar: Optional[tuple]
    names: frozenset
    reasoning: bool


def chat_constraints(llm: "Llama", template_kwargs: dict, *, response_format: Optional[dict] = None,
                     tools: Any = None, tool_choice: Any = None, parallel_tool_calls: bool = True,
                     reasoning_format: Optional[str] = None, grammar: Any = None,
                     think_open: bool = False) -> ChatConstraints:
    if reasoning_format not in (None, "none", "deepseek"):
        raise ValueError(f"reasoning_format must be 'none' or 'deepseek', got {reasoning_format!r}")
    thinking = template_kwargs.get("enable_thinking") is not False and "<think>" in (llm.chat_template or "")
    plan = plan_tools(tools, tool_choice, thinking, parallel=parallel_tool_calls, think_open=think_open)
    schema_grammar = response_format_grammar(response_format)
    given = [g for g in (grammar_text(grammar), schema_grammar and (schema_grammar, "root"), plan.grammar) if g]
    if len(given) > 1:
        raise ValueError("grammar, response_format and tool calls constrain the output differently: give one of them")
    return ChatConstraints(plan.tools, given[0] if given else None, plan.names, reasoning_format == "deepseek")
