"""Llama(chat_format=..., chat_handler=...) as llama-cpp-python applies them.

A `chat_handler` (any callable with llama-cpp-python's handler protocol) answers every
create_chat_completion; otherwise a `chat_format` names a handler: "chat_template.<name>" for a
template the GGUF carries under tokenizer.chat_template.<name>, else a name in the handler
registry (pybonsai.llama_chat_format: "chatml", "llama-2", ...). The handler is called with
`llama=` the Llama and every request argument as keywords, and usually runs create_completion.

Without either (or with chat_format="chat_template.default") pybonsai renders the GGUF's own
template (or Llama(chat_template=)) itself, which is what its tools, reasoning and
response_format support is built on."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, Sequence

from . import completions

__all__ = ["GGUF_TEMPLATE_FORMATS", "resolve", "selected", "create_chat_completion"]

# chat_format values that mean "the GGUF's own template, rendered by pybonsai". llama-cpp-python's
# "chatml-function-calling" exists for tool calls, which pybonsai makes through the model's own
# template (Qwen3's <tool_call> format) with a grammar: the same request gets its tool_calls here.
GGUF_TEMPLATE_FORMATS = (None, "chat_template.default", "chatml-function-calling")
_NAMED_TEMPLATE = "chat_template."

# pybonsai's own create_chat_completion arguments (not in llama-cpp-python's): a handler gets one
# only when the caller gave it a value other than its default.
_OWN = ("enable_thinking", "chat_template_kwargs", "parallel_tool_calls", "reasoning_format", "stopping_criteria")


def _gguf_template_names(llm: Any) -> list[str]:
    return sorted(key[len("tokenizer."):] for key in llm.metadata if key.startswith("tokenizer." + _NAMED_TEMPLATE))


def _template_handler(llm: Any, name: str) -> Optional[Callable[..., Any]]:
    """A handler over the GGUF's tokenizer.chat_template.<name>, as llama-cpp-python builds one."""
    source = llm.model.chat_template(name)
    if not source:
        return None
    from .llama_chat_format import Jinja2ChatFormatter
    text = lambda t: llm.token_to_piece(t, special=True).decode("utf-8", "replace") if t >= 0 else ""
    eos = llm.token_eos()
    return Jinja2ChatFormatter(source, eos_token=text(eos), bos_token=text(llm.token_bos()),
                               stop_token_ids=[eos]).to_chat_handler()


def resolve(llm: Any, chat_format: Optional[str], chat_handler: Any) -> Dict[str, Callable[..., Any]]:
    """Check Llama()'s chat_format / chat_handler once the model is loaded (an unknown format name
    raises ValueError naming the known ones); return the Llama's handlers for templates the GGUF
    names (llama-cpp-python's Llama._chat_handlers, here only the one asked for)."""
    if chat_handler is not None:
        if not callable(chat_handler):
            raise TypeError(f"chat_handler must be callable (llama-cpp-python's chat handler protocol), "
                            f"got {type(chat_handler).__name__}")
        return {}
    if chat_format in GGUF_TEMPLATE_FORMATS:
        return {}
    if not isinstance(chat_format, str):
        raise TypeError(f"chat_format must be a str, got {type(chat_format).__name__}")
    if chat_format.startswith(_NAMED_TEMPLATE):
        handler = _template_handler(llm, chat_format[len(_NAMED_TEMPLATE):])
        if handler is not None:
            return {chat_format: handler}
    from .llama_chat_format import LlamaChatCompletionHandlerRegistry
    registered = LlamaChatCompletionHandlerRegistry()._chat_handlers
    if chat_format not in registered:
        known = ["chat_template.default", *_gguf_template_names(llm), *sorted(registered)]
        raise ValueError(f"unknown chat_format {chat_format!r}; known formats: {', '.join(known)}")
    return {}


def selected(llm: Any) -> Optional[Callable[..., Any]]:
    """The handler create_chat_completion uses (llama-cpp-python's order: chat_handler, the GGUF's
    named templates, the registry), or None for pybonsai's own rendering of the GGUF template."""
    if llm.chat_handler is not None:
        return llm.chat_handler
    if llm.chat_format in GGUF_TEMPLATE_FORMATS:
        return None
    handler = llm._chat_handlers.get(llm.chat_format)
    if handler is not None:
        return handler
    from .llama_chat_format import get_chat_completion_handler
    return get_chat_completion_handler(llm.chat_format)


def _handler_arguments(llm: Any, messages: Sequence[dict], args: tuple, kwargs: dict) -> Dict[str, Any]:
    """The request as keywords (positional ones named, defaults filled in, as llama-cpp-python
    passes them); pybonsai's own arguments only where given a non-default value."""
    signature = inspect.signature(completions.create_chat_completion)
    bound = signature.bind(llm, messages, *args, **kwargs)
    bound.apply_defaults()
    out = dict(bound.arguments)
    del out[next(iter(signature.parameters))]  # the Llama: passed as llama=
    for name in _OWN:
        if out[name] is signature.parameters[name].default:
            del out[name]
    return out


def create_chat_completion(llm: Any, messages: Sequence[dict], *args: Any, **kwargs: Any) -> Any:
    """llama-cpp-python's create_chat_completion: through the chosen chat handler, or pybonsai's
    rendering of the GGUF's template when none is chosen."""
    handler = selected(llm)
    if handler is None:
        return completions.create_chat_completion(llm, messages, *args, **kwargs)
    return handler(llama=llm, **_handler_arguments(llm, messages, args, kwargs))


create_chat_completion.__signature__ = inspect.signature(completions.create_chat_completion)  # type: ignore[attr-defined]
