"""Text and chat completions in OpenAI's shapes: one generation loop (`_generate_text`) that
yields text as it becomes final, and two thin formatters over it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, Union

import numpy as np

from .chat import ChatTemplate
from .text import TextAssembler
from .types import new_id, now

if TYPE_CHECKING:
    from .llama import Llama


@dataclass
class _Step:
    """What one generation step produced: final text, and (with logprobs) per-token details."""

    text: str = ""
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    finish_reason: Optional[str] = None


@dataclass
class _Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def _as_stop_list(stop: Union[str, Sequence[str], None]) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    for s in stops:
        if not isinstance(s, str):
            raise TypeError(f"stop must be a string or a list of strings, got {s!r}")
    return [s for s in stops if s]


def _prompt_tokens(llm: "Llama", prompt: Union[str, Sequence[int]]) -> list[int]:
    if isinstance(prompt, str):
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True) if prompt else []
    elif isinstance(prompt, (bytes, bytearray)):
        raise TypeError("prompt must be a str or a list of token ids, not bytes")
    else:
        tokens = [int(t) for t in prompt]
    if not tokens:
        if llm.token_bos() < 0:
            raise ValueError("the prompt is empty and the model has no BOS token to start from")
        tokens = [llm.token_bos()]
    _check_fits(llm, tokens)
    return tokens


def _check_fits(llm: "Llama", tokens: list[int]) -> None:
    if len(tokens) > llm.n_ctx():
        raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {llm.n_ctx()}")


def _sampling(temperature, top_p, min_p, top_k, repeat_penalty, frequency_penalty, presence_penalty, seed):
    """Completion-API argument names to Llama.generate's."""
    return dict(temp=temperature, top_p=top_p, min_p=min_p, top_k=top_k, repeat_penalty=repeat_penalty,
                frequency_penalty=frequency_penalty, presence_penalty=presence_penalty, seed=seed)


def _top_logprobs(llm: "Llama", logits: np.ndarray, token: int, n: int) -> tuple[float, dict[str, float]]:
    shifted = logits.astype(np.float64) - logits.max()
    logprobs = shifted - np.log(np.exp(shifted).sum())
    top = np.argpartition(-logprobs, n)[:n] if n < logprobs.size else np.arange(logprobs.size)
    top = top[np.argsort(-logprobs[top])]
    table = {_piece_text(llm, int(t)): float(logprobs[t]) for t in top}
    return float(logprobs[token]), table


def _piece_text(llm: "Llama", token: int) -> str:
    return llm.token_to_piece(token).decode("utf-8", errors="replace")


def _generate_text(
    llm: "Llama",
    prompt_tokens: list[int],
    usage: _Usage,
    *,
    max_tokens: Optional[int],
    stop: list[str],
    logprobs: Optional[int],
    sampling: dict[str, Any],
) -> Iterator[_Step]:
    """Yield _Steps as text becomes final; the last one carries finish_reason."""
    n_ctx = llm.n_ctx()
    room = n_ctx - len(prompt_tokens)
    limit = room if max_tokens is None or max_tokens <= 0 else min(max_tokens, room)
    usage.prompt_tokens = len(prompt_tokens)
    assembler = TextAssembler(stop)
    finish = "length"
    step = _Step()
    generator = llm.generate(prompt_tokens, **sampling) if limit > 0 else iter(())
    try:
        for token in generator:
            if llm.model.is_eog(token):
                finish = "stop"
                break
            usage.completion_tokens += 1
            if logprobs is not None:
                lp, table = _top_logprobs(llm, llm.last_logits, token, max(int(logprobs), 1))
                step.tokens.append(_piece_text(llm, token))
                step.token_logprobs.append(lp)
                step.top_logprobs.append(table)
            step.text += assembler.push(llm.token_to_piece(token))
            if assembler.stopped:
                finish = "stop"
                break
            if usage.completion_tokens >= limit:
                break
            if step.text:
                yield step
                step = _Step()
    finally:
        if hasattr(generator, "close"):
            generator.close()
    if not assembler.stopped:
        step.text += assembler.finish()
        if assembler.stopped:  # a stop string held back for a longer candidate, settled at the end
            finish = "stop"
    step.finish_reason = finish
    yield step


def _logprobs_dict(steps: Sequence[_Step], offset: int) -> dict[str, Any]:
    tokens, lps, tops, offsets = [], [], [], []
    for s in steps:
        for tok, lp, top in zip(s.tokens, s.token_logprobs, s.top_logprobs):
            offsets.append(offset)
            offset += len(tok)
            tokens.append(tok)
            lps.append(lp)
            tops.append(top)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def create_completion(
    llm: "Llama",
    prompt: Union[str, Sequence[int]],
    suffix: Optional[str] = None,
    max_tokens: Optional[int] = 16,
    temperature: float = 0.8,
    top_p: float = 0.95,
    min_p: float = 0.05,
    echo: bool = False,
    stop: Union[str, Sequence[str], None] = None,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
    repeat_penalty: float = 1.0,
    top_k: int = 40,
    stream: bool = False,
    seed: Optional[int] = None,
    logprobs: Optional[int] = None,
    model: Optional[str] = None,
):
    """llama-cpp-python's create_completion: a Completion dict, or CompletionChunks if stream."""
    if logprobs is not None and (not isinstance(logprobs, int) or logprobs < 0):
        raise ValueError(f"logprobs must be None or an int >= 0, got {logprobs!r}")
    tokens = _prompt_tokens(llm, prompt)
    usage = _Usage()
    steps = _generate_text(llm, tokens, usage, max_tokens=max_tokens, stop=_as_stop_list(stop), logprobs=logprobs,
                           sampling=_sampling(temperature, top_p, min_p, top_k, repeat_penalty,
                                              frequency_penalty, presence_penalty, seed))
    head = {"id": new_id("cmpl"), "created": now(), "model": model or llm.model_path}
    prefix = llm.detokenize(tokens).decode("utf-8", errors="replace") if echo else ""
    if stream:
        return _stream_completion(head, steps, prefix, suffix, logprobs is not None)
    steps = list(steps)
    text = prefix + "".join(s.text for s in steps) + (suffix or "")
    choice = {"text": text, "index": 0, "finish_reason": steps[-1].finish_reason,
              "logprobs": _logprobs_dict(steps, len(prefix)) if logprobs is not None else None}
    return {**head, "object": "text_completion", "choices": [choice], "usage": usage.as_dict()}


def _stream_completion(head, steps, prefix, suffix, with_logprobs) -> Iterator[dict]:
    offset = 0

    def chunk(text, finish, logprob_steps):
        lp = _logprobs_dict(logprob_steps, offset) if with_logprobs else None
        return {**head, "object": "text_completion",
                "choices": [{"text": text, "index": 0, "logprobs": lp, "finish_reason": finish}]}

    if prefix:
        yield chunk(prefix, None, [])
        offset += len(prefix)
    for step in steps:
        text = step.text + (suffix or "" if step.finish_reason else "")
        if text or step.finish_reason is None:
            yield chunk(text, None, [step])
        offset += len(text)
        if step.finish_reason:
            yield chunk("", step.finish_reason, [])


def create_chat_completion(
    llm: "Llama",
    messages: Sequence[dict],
    temperature: float = 0.2,
    top_p: float = 0.95,
    top_k: int = 40,
    min_p: float = 0.05,
    stream: bool = False,
    stop: Union[str, Sequence[str], None] = None,
    seed: Optional[int] = None,
    max_tokens: Optional[int] = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    repeat_penalty: float = 1.0,
    model: Optional[str] = None,
    enable_thinking: Optional[bool] = None,
    chat_template_kwargs: Optional[dict[str, Any]] = None,
):
    """llama-cpp-python's create_chat_completion over the GGUF's (or the given) chat template."""
    prompt = render_chat_prompt(llm, messages, enable_thinking, chat_template_kwargs)
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    _check_fits(llm, tokens)
    usage = _Usage()
    steps = _generate_text(llm, tokens, usage, max_tokens=max_tokens, stop=_as_stop_list(stop), logprobs=None,
                           sampling=_sampling(temperature, top_p, min_p, top_k, repeat_penalty,
                                              frequency_penalty, presence_penalty, seed))
    head = {"id": new_id("chatcmpl"), "created": now(), "model": model or llm.model_path}
    if stream:
        return _stream_chat(head, steps)
    steps = list(steps)
    message = {"role": "assistant", "content": "".join(s.text for s in steps)}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": steps[-1].finish_reason}
    return {**head, "object": "chat.completion", "choices": [choice], "usage": usage.as_dict()}


def _stream_chat(head, steps) -> Iterator[dict]:
    def chunk(delta, finish):
        return {**head, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    yield chunk({"role": "assistant"}, None)
    for step in steps:
        if step.text:
            yield chunk({"content": step.text}, None)
        if step.finish_reason:
            yield chunk({}, step.finish_reason)


def render_chat_prompt(llm: "Llama", messages: Sequence[dict], enable_thinking: Optional[bool] = None,
                       chat_template_kwargs: Optional[dict[str, Any]] = None) -> str:
    """The prompt text for `messages`, from the model's chat template."""
    source = llm.chat_template
    if not source:
        raise ValueError(f"{llm.model_path} has no chat template (tokenizer.chat_template); "
                         "pass chat_template= to Llama or use create_completion")
    special = lambda t: llm.token_to_piece(t, special=True).decode("utf-8", "replace") if t >= 0 else ""
    template = ChatTemplate(source, bos_token=special(llm.token_bos()), eos_token=special(llm.token_eos()))
    kwargs = dict(chat_template_kwargs or {})
    if enable_thinking is not None:
        kwargs["enable_thinking"] = enable_thinking
    # OpenAI clients send an assistant turn with tool_calls and content None; templates want text.
    messages = [dict(m, content="") if isinstance(m, dict) and m.get("role") == "assistant"
                and m.get("content") is None else m for m in messages]
    return template.render(messages, add_generation_prompt=True, **kwargs)
