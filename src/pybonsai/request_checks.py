"""The `Engine`'s checks of a request, run in the caller's thread before it is queued: the bounds of
`RequestLimits` on the arguments (before any tokenizing, template rendering or grammar parsing),
then the built job's fields that the engine thread would otherwise trip over (a `max_tokens` that
is not an int, token ids outside the vocabulary, a grammar made from a schema or from tools that
is over the grammar budget)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from .limits import ParamError, RequestLimits

if TYPE_CHECKING:
    from .completions import CompletionJob

__all__ = ["check_arguments", "check_job", "check_messages_size", "check_prompt_size", "grammar_param"]


def _grammar_source(grammar: Any) -> Any:
    if grammar is None or isinstance(grammar, str):
        return grammar
    if isinstance(grammar, tuple):
        return grammar[0] if grammar else None
    return getattr(grammar, "_grammar", None)  # LlamaGrammar (ours or llama-cpp-python's)


def check_arguments(limits: RequestLimits, kwargs: Mapping[str, Any], *, chat: bool) -> None:
    """Bounds on create_completion / create_chat_completion keyword arguments, before any work."""
    if chat:
        if kwargs.get("logprobs"):
            limits.check_logprobs(kwargs.get("top_logprobs"), chat=True)
    else:
        limits.check_logprobs(kwargs.get("logprobs"), chat=False)
    limits.check_stop(kwargs.get("stop"))
    text = _grammar_source(kwargs.get("grammar"))
    if isinstance(text, str):
        limits.check_grammar(text, "grammar")
    for name in ("response_format", "tools"):
        if kwargs.get(name) is not None:
            limits.check_schema(kwargs[name], name)


def grammar_param(kwargs: Mapping[str, Any]) -> str:
    """Which argument a chat job's grammar came from."""
    for name in ("grammar", "response_format", "tools"):
        if kwargs.get(name):
            return name
    return "grammar"


def check_job(job: "CompletionJob", limits: RequestLimits, n_vocab: int, grammar_from: str = "grammar") -> None:
    """A built job's fields, as the engine thread will use them."""
    max_tokens = job.max_tokens
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)):
        raise ParamError(f"max_tokens must be None or an int (<= 0: up to the context's end), got {max_tokens!r}",
                         "max_tokens", "invalid_type")
    if not isinstance(job.suffix, str):
        raise ParamError(f"suffix must be a string, got {type(job.suffix).__name__}", "suffix", "invalid_type")
    if not isinstance(job.stream, bool):
        raise ParamError(f"stream must be a bool, got {job.stream!r}", "stream", "invalid_type")
    bad = next((t for t in job.prompt_tokens if not 0 <= t < n_vocab), None)
    if bad is not None:
        raise ParamError(f"token id {bad} is out of range [0, {n_vocab})", "prompt", "invalid_value")
    limits.check_logprobs(job.logprobs, chat=job.chat)
    limits.check_stop(job.stop)
    if job.grammar is not None:
        limits.check_grammar(job.grammar[0], grammar_from)


def check_messages_size(messages: Any, n_ctx: int, longest_piece: Callable[[], int]) -> None:
    """check_prompt_size for a chat, before its template is rendered (pure Python: seconds for
    thousands of messages): the user and tool messages' text, which chat templates render
    verbatim (some drop parts of assistant turns, e.g. earlier reasoning, or system messages)."""
    if not isinstance(messages, (list, tuple)) or len(messages) <= 4:
        return
    texts = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") in ("user", "tool")]
    check_prompt_size("".join(t for t in texts if isinstance(t, str)), n_ctx, longest_piece, "messages")


def check_prompt_size(prompt: Any, n_ctx: int, longest_piece: Callable[[], int], param: str = "prompt") -> None:
    """A text prompt that needs more than `n_ctx` tokens even if every token were the
    vocabulary's longest is refused before it is tokenized (a 4 MB body would take seconds)."""
    if not isinstance(prompt, str) or len(prompt) <= 4 * n_ctx:  # (short ones: tokenizing is cheap)
        return
    try:
        n_bytes = len(prompt.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ParamError(f"{param} is not valid Unicode text: {exc}", param) from None
    at_least = -(-n_bytes // max(longest_piece(), 1))
    if at_least > n_ctx:
        raise ParamError(f"Requested tokens (at least {at_least}) exceed context window of {n_ctx}", param,
                         "context_length_exceeded")
