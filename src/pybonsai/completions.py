"""Text and chat completions in OpenAI's shapes.

One request is a `CompletionJob` (validated arguments, prompt tokens, response head). Whoever runs
it — `Llama` one token at a time (`_generate_text`), or the batching `Engine` — feeds the sampled
tokens to a `TokenTextStream`, which turns them into `_Step`s of final text; the job formats steps
into a Completion / ChatCompletion dict or into stream chunks, step by step (`job.formatter()`), so
that synchronous iterators and the asynchronous server share every piece."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from . import llama_cache
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


def _prompt_tokens(llm: "Llama", prompt: Union[str, Sequence[int]], n_ctx: int) -> list[int]:
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
    _check_fits(tokens, n_ctx)
    return tokens


def _check_fits(tokens: list[int], n_ctx: int) -> None:
    if len(tokens) > n_ctx:
        raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {n_ctx}")


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


class TokenTextStream:
    """One generation's sampled tokens in, `_Step`s of final text out.

    push(token) returns a step when text became final (or None); the step that ends the generation
    (EOG token, stop string, token limit) carries finish_reason and sets `done`. `finish(reason)`
    ends it early (no more tokens: the context is full, or the request was cancelled)."""

    def __init__(self, llm: "Llama", prompt_len: int, n_ctx: int, usage: _Usage, *,
                 max_tokens: Optional[int], stop: list[str], logprobs: Optional[int]):
        room = n_ctx - prompt_len
        self.limit = room if max_tokens is None or max_tokens <= 0 else min(max_tokens, room)
        self.llm, self.usage, self.logprobs = llm, usage, logprobs
        usage.prompt_tokens = prompt_len
        self._assembler = TextAssembler(stop)
        self._step = _Step()
        self.done = self.limit <= 0

    def push(self, token: int, logits: Optional[Callable[[], np.ndarray]] = None) -> Optional[_Step]:
        """Add one sampled token; `logits()` gives the row it was sampled from (for logprobs)."""
        if self.done:
            raise RuntimeError("TokenTextStream.push() after the generation ended")
        if self.llm.model.is_eog(token):
            return self.finish("stop")
        self.usage.completion_tokens += 1
        step = self._step
        if self.logprobs is not None:
            lp, table = _top_logprobs(self.llm, logits(), token, max(int(self.logprobs), 1))
            step.tokens.append(_piece_text(self.llm, token))
            step.token_logprobs.append(lp)
            step.top_logprobs.append(table)
        step.text += self._assembler.push(self.llm.token_to_piece(token))
        if self._assembler.stopped:
            return self.finish("stop")
        if self.usage.completion_tokens >= self.limit:
            return self.finish("length")
        if step.text:
            self._step = _Step()
            return step
        return None

    def finish(self, reason: str = "length") -> _Step:
        """End the generation: the last step, with what was held back and `finish_reason`."""
        self.done = True
        step, self._step = self._step, _Step()
        if not self._assembler.stopped:
            step.text += self._assembler.finish()
            if self._assembler.stopped:  # a stop string held back for a longer candidate, settled at the end
                reason = "stop"
        step.finish_reason = reason
        return step


def _generate_text(llm: "Llama", job: "CompletionJob", usage: _Usage) -> Iterator[_Step]:
    """Run `job` on the Llama's own context; yield _Steps (the last one carries finish_reason)."""
    stream = job.text_stream(llm, llm.n_ctx(), usage)
    if stream.done:
        yield stream.finish()
        return
    llama_cache.restore_longest_prefix(llm, job.prompt_tokens)
    generator = llm.generate(job.prompt_tokens, **job.sampling)
    try:
        for token in generator:
            step = stream.push(token, lambda: llm.last_logits)
            if step is not None:
                yield step
            if stream.done:
                return
    finally:
        generator.close()
        llama_cache.remember(llm)


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


@dataclass
class CompletionJob:
    """A validated completion request, independent of what runs it."""

    chat: bool
    prompt_tokens: list[int]
    sampling: dict[str, Any]
    max_tokens: Optional[int]
    stop: list[str]
    logprobs: Optional[int]
    head: dict[str, Any]
    stream: bool = False
    prefix: str = ""
    suffix: str = ""

    def text_stream(self, llm: "Llama", n_ctx: int, usage: _Usage) -> TokenTextStream:
        return TokenTextStream(llm, len(self.prompt_tokens), n_ctx, usage, max_tokens=self.max_tokens,
                               stop=self.stop, logprobs=self.logprobs)

    def result(self, steps: Sequence[_Step], usage: _Usage) -> dict[str, Any]:
        """The whole Completion / ChatCompletion dict."""
        finish = steps[-1].finish_reason if steps else None
        if self.chat:
            message = {"role": "assistant", "content": "".join(s.text for s in steps)}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            return {**self.head, "object": "chat.completion", "choices": [choice], "usage": usage.as_dict()}
        text = self.prefix + "".join(s.text for s in steps) + self.suffix
        choice = {"text": text, "index": 0, "finish_reason": finish,
                  "logprobs": _logprobs_dict(steps, len(self.prefix)) if self.logprobs is not None else None}
        return {**self.head, "object": "text_completion", "choices": [choice], "usage": usage.as_dict()}

    def formatter(self) -> "_ChunkFormatter":
        return _ChatChunks(self) if self.chat else _CompletionChunks(self)

    def respond(self, steps: Iterable[_Step], usage: _Usage):
        """The dict (steps run to the end) or, with stream, an iterator of chunks."""
        if self.stream:
            return self.formatter().chunks(steps)
        return self.result(list(steps), usage)


class _ChunkFormatter:
    """Stream chunks, step by step: start(), then step(s) for every _Step."""

    def start(self) -> list[dict]:
        return []

    def step(self, step: _Step) -> list[dict]:
        raise NotImplementedError

    def chunks(self, steps: Iterable[_Step]) -> Iterator[dict]:
        yield from self.start()
        for s in steps:
            yield from self.step(s)


class _CompletionChunks(_ChunkFormatter):
    def __init__(self, job: CompletionJob):
        self.job, self.offset = job, 0

    def _chunk(self, text: str, finish: Optional[str], logprob_steps: list[_Step]) -> dict:
        lp = _logprobs_dict(logprob_steps, self.offset) if self.job.logprobs is not None else None
        return {**self.job.head, "object": "text_completion",
                "choices": [{"text": text, "index": 0, "logprobs": lp, "finish_reason": finish}]}

    def start(self) -> list[dict]:
        if not self.job.prefix:
            return []
        out = [self._chunk(self.job.prefix, None, [])]
        self.offset += len(self.job.prefix)
        return out

    def step(self, step: _Step) -> list[dict]:
        out = []
        text = step.text + (self.job.suffix if step.finish_reason else "")
        if text or step.finish_reason is None:
            out.append(self._chunk(text, None, [step]))
        self.offset += len(text)
        if step.finish_reason:
            out.append(self._chunk("", step.finish_reason, []))
        return out


class _ChatChunks(_ChunkFormatter):
    def __init__(self, job: CompletionJob):
        self.job = job

    def _chunk(self, delta: dict, finish: Optional[str]) -> dict:
        return {**self.job.head, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def start(self) -> list[dict]:
        return [self._chunk({"role": "assistant"}, None)]

    def step(self, step: _Step) -> list[dict]:
        out = []
        if step.text:
            out.append(self._chunk({"content": step.text}, None))
        if step.finish_reason:
            out.append(self._chunk({}, step.finish_reason))
        return out


def completion_job(
    llm: "Llama",
    n_ctx: int,
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
) -> CompletionJob:
    """Validate llama-cpp-python's create_completion arguments for a context of `n_ctx` tokens."""
    if logprobs is not None and (not isinstance(logprobs, int) or logprobs < 0):
        raise ValueError(f"logprobs must be None or an int >= 0, got {logprobs!r}")
    tokens = _prompt_tokens(llm, prompt, n_ctx)
    head = {"id": new_id("cmpl"), "created": now(), "model": model or llm.model_path}
    prefix = llm.detokenize(tokens).decode("utf-8", errors="replace") if echo else ""
    return CompletionJob(chat=False, prompt_tokens=tokens, max_tokens=max_tokens, stop=_as_stop_list(stop),
                         logprobs=logprobs, head=head, stream=stream, prefix=prefix, suffix=suffix or "",
                         sampling=_sampling(temperature, top_p, min_p, top_k, repeat_penalty,
                                            frequency_penalty, presence_penalty, seed))


def create_completion(llm: "Llama", prompt: Union[str, Sequence[int]], **kwargs: Any):
    """llama-cpp-python's create_completion: a Completion dict, or CompletionChunks if stream."""
    job = completion_job(llm, llm.n_ctx(), prompt, **kwargs)
    usage = _Usage()
    return job.respond(_generate_text(llm, job, usage), usage)


def chat_completion_job(
    llm: "Llama",
    n_ctx: int,
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
) -> CompletionJob:
    """Validate llama-cpp-python's create_chat_completion arguments; render the chat template."""
    prompt = render_chat_prompt(llm, messages, enable_thinking, chat_template_kwargs)
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    _check_fits(tokens, n_ctx)
    head = {"id": new_id("chatcmpl"), "created": now(), "model": model or llm.model_path}
    return CompletionJob(chat=True, prompt_tokens=tokens, max_tokens=max_tokens, stop=_as_stop_list(stop),
                         logprobs=None, head=head, stream=stream,
                         sampling=_sampling(temperature, top_p, min_p, top_k, repeat_penalty,
                                            frequency_penalty, presence_penalty, seed))


def create_chat_completion(llm: "Llama", messages: Sequence[dict], **kwargs: Any):
    """llama-cpp-python's create_chat_completion over the GGUF's (or the given) chat template."""
    job = chat_completion_job(llm, llm.n_ctx(), messages, **kwargs)
    usage = _Usage()
    return job.respond(_generate_text(llm, job, usage), usage)


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
