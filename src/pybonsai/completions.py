"""Text and chat completions in OpenAI's shapes.

One request is a `CompletionJob` (validated arguments, prompt tokens, response head). Whoever runs
it — `Llama` one token at a time (`_generate_text`), or the batching `Engine` — feeds the sampled
tokens to a `TokenTextStream`, which turns them into `_Step`s of final text; the job formats steps
into a Completion / ChatCompletion dict or into stream chunks, step by step (`job.formatter()`), so
that synchronous iterators and the asynchronous server share every piece."""
from __future__ import annotations

import codecs
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from . import llama_cache
from .chat import ChatTemplate
from .chat_output import ChatOutput
from .compat import ignored_sampling_args, pending_feature_args
from .grammar import grammar_text
from .limits import OPENAI_MAX_TOP_LOGPROBS, RequestLimits
from .logits import StoppingCriteria
from .structured import chat_constraints
from .text import TextAssembler
from .types import new_id, now

if TYPE_CHECKING:
    from .llama import Llama


@dataclass
class _Step:
    """What one generation step produced: final text, and (with logprobs) per-token details.
    `text_offset` counts characters from the start of the generated text."""

    text: str = ""
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[Optional[float]] = field(default_factory=list)
    top_logprobs: list[Optional[dict[str, float]]] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)
    finish_reason: Optional[str] = None

    def add_token(self, text: str, offset: int, logprob: Optional[float], top: Optional[dict[str, float]]) -> None:
        self.tokens.append(text)
        self.text_offset.append(offset)
        self.token_logprobs.append(logprob)
        self.top_logprobs.append(top)


class _Offsets:
    """Character offsets of tokens in the decoded text (invalid UTF-8 -> U+FFFD), computed from
    the decoded prefix: a token starts after every character completed by the bytes before it.
    A token that completes a character split across tokens starts at that character; an
    incomplete tail that the token does not continue has become a U+FFFD before it."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.chars = 0

    def push(self, piece: bytes) -> int:
        """The offset of the token whose bytes are `piece`; then account for them."""
        start = self.chars
        tail = self._decoder.getstate()[0]
        if tail and piece and codecs.getincrementaldecoder("utf-8")(errors="replace").decode(
                tail + piece[:1]).startswith("\ufffd"):
            start += 1  # the dangling tail is a U+FFFD of its own
        self.chars += len(self._decoder.decode(piece))
        return start


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


def _sampling(temperature, top_p, min_p, top_k, repeat_penalty, frequency_penalty, presence_penalty, seed,
              typical_p=1.0, tfs_z=1.0, mirostat_mode=0, mirostat_tau=5.0, mirostat_eta=0.1):
    """Completion-API argument names to Llama.generate's (tfs_z, which llama.cpp dropped, warns)."""
    ignored_sampling_args(tfs_z=tfs_z, stacklevel=4)
    return dict(temp=temperature, top_p=top_p, min_p=min_p, top_k=top_k, repeat_penalty=repeat_penalty,
                frequency_penalty=frequency_penalty, presence_penalty=presence_penalty, seed=seed,
                typical_p=typical_p, mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau,
                mirostat_eta=mirostat_eta)


def _pending(**given: Any) -> None:
    """Arguments whose feature (structured output: grammars, JSON, tools, logit processing) has
    not landed in this build: accepted, and named in one warning each."""
    pending_feature_args({name: "structured output / logits processing" for name, value in given.items()
                          if value is not None}, stacklevel=4)


def _check_logprobs(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ValueError(f"{name} must be None or an int >= 0, got {value!r}")
    # Llama: OpenAI's chat bound (20) for both (llama-cpp-python's chat handlers pass
    # top_logprobs on as logprobs); the Engine and the server apply OpenAI's 5 for completions.
    RequestLimits(logprobs=OPENAI_MAX_TOP_LOGPROBS).check_logprobs(value, chat=name == "top_logprobs")


_TOP_GRID = 64  # rows of the grid a logits row is viewed as, to find its top entries


def _top_logprobs(llm: "Llama", logits: np.ndarray, token: int, n: int) -> tuple[float, dict[str, float]]:
    """The sampled token's logprob, and the `n` most likely tokens' (plus the sampled one, always
    included, as llama-cpp-python does)."""
    lse = _log_sum_exp(logits)
    top = _top_ids(logits, n)
    table = {_piece_text(llm, int(t)): float(logits[t]) - lse for t in top}
    table[_piece_text(llm, token)] = float(logits[token]) - lse
    return float(logits[token]) - lse, table


def _log_sum_exp(logits: np.ndarray) -> float:
    # One exp pass in float32 (numpy's SIMD exp; pairwise summation keeps the sum to ~1e-6 relative)
    peak = np.float32(logits.max())
    e = np.subtract(logits, peak, dtype=np.float32)
    np.exp(e, out=e)
    return float(peak) + float(np.log(e.sum(dtype=np.float32)))


def _top_ids(logits: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest logits, largest first (ties: lower index first), exactly, without a
    selection over the whole row (~0.4 ms at 152k): the row's first cols * _TOP_GRID entries are
    viewed as a grid of _TOP_GRID rows and `cols` columns; the n-th largest column maximum tau is at
    most the n-th largest logit (n columns each hold one >= tau), so every top-n entry is in a
    column whose maximum is >= tau (or in the row's tail past the grid) and the selection runs
    over those few columns. NaN logits are never listed."""
    size = logits.size
    if n <= 0:
        return np.arange(0)
    cols = size // _TOP_GRID
    if cols < n:
        picked = np.flatnonzero(~np.isnan(logits))
    else:
        col_max = np.fmax.reduce(logits[:cols * _TOP_GRID].reshape(_TOP_GRID, cols), axis=0)  # NaN skipped
        col_max[np.isnan(col_max)] = -np.inf  # a column of NaN only
        tau = np.partition(col_max, cols - n)[cols - n]
        hit = np.flatnonzero(col_max >= tau)
        picked = (hit[None, :] + cols * np.arange(_TOP_GRID)[:, None]).ravel()
        picked = np.concatenate([picked, np.arange(cols * _TOP_GRID, size)])
        picked = np.sort(picked[logits[picked] >= tau])
    return picked[np.argsort(-logits[picked], kind="stable")[:n]]


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
        self._offsets = _Offsets()
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
        piece = self.llm.token_to_piece(token)
        if self.logprobs is not None:
            step.add_token(piece.decode("utf-8", errors="replace"), self._offsets.push(piece),
                           *_top_logprobs(self.llm, logits(), token, int(self.logprobs)))
        step.text += self._assembler.push(piece)
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
    # After a cache hit has restored its seed, as llama-cpp-python: seed= or the chain's next step.
    sampling = dict(job.sampling, seed=llm._completion_seed(job.sampling["seed"]))
    generator = llm.generate(job.prompt_tokens, **sampling, grammar=job.grammar, logit_bias=job.logit_bias,
                             logits_processor=job.logits_processor)
    try:
        for token in generator:
            step = stream.push(token, lambda: llm.last_logits)
            if step is not None:
                yield step
            if not stream.done and job.stopping_criteria is not None and job.stopping_criteria(
                    np.append(llm.input_ids[:llm.n_tokens], np.intc(token)), llm.last_logits):
                yield stream.finish("stop")
            if stream.done:
                return
    finally:
        generator.close()
        llama_cache.remember(llm)


def _prompt_logprobs(llm: "Llama", tokens: list[int], n: int) -> _Step:
    """echo=True with logprobs: every prompt token with the logprob the model gave it (the first
    has none, as in OpenAI's and llama-cpp-python's responses; a leading BOS is left out).
    Evaluates the prompt on the Llama's own context (generation then reuses it)."""
    from .echo_logprobs import PromptLogprobs

    echo = PromptLogprobs(llm, tokens, n)
    llm.reset()
    for _, rows in llm._eval_chunks(tokens, all_logits=True):
        echo.feed(rows)
    return echo.step


def _logprobs_dict(steps: Sequence[_Step], base: int) -> dict[str, Any]:
    """CompletionLogprobs of `steps`, offsets shifted by `base` characters."""
    out: dict[str, list] = {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}
    for s in steps:
        out["tokens"] += s.tokens
        out["text_offset"] += [base + o for o in s.text_offset]
        out["token_logprobs"] += s.token_logprobs
        out["top_logprobs"] += s.top_logprobs
    return out


def _chat_logprobs(steps: Sequence[_Step]) -> dict[str, Any]:
    """Completion logprobs in the chat shape: {"content": [{token, logprob, bytes, top_logprobs}]}."""
    def entry(token: str, logprob: Optional[float]) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    content = []
    for s in steps:
        for token, lp, top in zip(s.tokens, s.token_logprobs, s.top_logprobs):
            content.append({**entry(token, lp), "top_logprobs": [entry(t, v) for t, v in (top or {}).items()]})
    return {"content": content, "refusal": None}


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
    prompt_chars: int = 0             # text_offset counts from the prompt's start (llama-cpp-python, OpenAI)
    echoed: Optional[_Step] = None    # echo=True + logprobs: the prompt tokens' logprobs
    # Constraints and hooks (pybonsai.grammar, pybonsai.logits); the chat output's parsing.
    grammar: Optional[tuple] = None
    logit_bias: Optional[dict] = None
    logits_processor: Optional[Callable] = None
    stopping_criteria: Optional[StoppingCriteria] = None
    reasoning: bool = False
    think_open: bool = False          # the prompt opened the <think> block (Qwen3.5's template)
    tool_names: frozenset = frozenset()
    draft_max: Optional[int] = None   # the Engine's per-request draft cap (llama-server's speculative.n_max)
    cache_prompt: bool = True         # the Engine may reuse a retained prefix (llama-server's cache_prompt)

    def chat_output(self) -> ChatOutput:
        return ChatOutput(reasoning=self.reasoning, tool_names=self.tool_names, think_open=self.think_open)

    def text_stream(self, llm: "Llama", n_ctx: int, usage: _Usage) -> TokenTextStream:
        return TokenTextStream(llm, len(self.prompt_tokens), n_ctx, usage, max_tokens=self.max_tokens,
                               stop=self.stop, logprobs=self.logprobs)

    def result(self, steps: Sequence[_Step], usage: _Usage) -> dict[str, Any]:
        """The whole Completion / ChatCompletion dict."""
        finish = steps[-1].finish_reason if steps else None
        if self.chat:
            message, finish = self.chat_output().message([s.text for s in steps], finish)
            choice = {"index": 0, "message": message, "finish_reason": finish,
                      "logprobs": _chat_logprobs(steps) if self.logprobs is not None else None}
            return {**self.head, "object": "chat.completion", "choices": [choice], "usage": usage.as_dict()}
        text = self.prefix + "".join(s.text for s in steps) + self.suffix
        lp = None
        if self.logprobs is not None:
            echoed = _logprobs_dict([self.echoed] if self.echoed else [], 0)
            lp = {key: echoed[key] + value for key, value in _logprobs_dict(steps, self.prompt_chars).items()}
        choice = {"text": text, "index": 0, "finish_reason": finish, "logprobs": lp}
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
        self.job = job

    def _chunk(self, text: str, finish: Optional[str], logprob_steps: list[_Step], base: int) -> dict:
        lp = _logprobs_dict(logprob_steps, base) if self.job.logprobs is not None else None
        return {**self.job.head, "object": "text_completion",
                "choices": [{"text": text, "index": 0, "logprobs": lp, "finish_reason": finish}]}

    def start(self) -> list[dict]:
        if not self.job.prefix:
            return []
        return [self._chunk(self.job.prefix, None, [self.job.echoed] if self.job.echoed else [], 0)]

    def step(self, step: _Step) -> list[dict]:
        out = []
        text = step.text + (self.job.suffix if step.finish_reason else "")
        # A step without new text still carries its tokens' logprobs (those of a stop string).
        if text or step.tokens or step.finish_reason is None:
            out.append(self._chunk(text, None, [step], self.job.prompt_chars))
        if step.finish_reason:
            out.append(self._chunk("", step.finish_reason, [], self.job.prompt_chars))
        return out


class _ChatChunks(_ChunkFormatter):
    def __init__(self, job: CompletionJob):
        self.job, self.output = job, job.chat_output()

    def _chunk(self, delta: dict, finish: Optional[str], logprobs: Optional[dict] = None) -> dict:
        return {**self.job.head, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}

    def start(self) -> list[dict]:
        return [self._chunk({"role": "assistant"}, None)]

    def step(self, step: _Step) -> list[dict]:
        out = []
        with_logprobs = self.job.logprobs is not None
        deltas = self.output.feed(step.text)
        if with_logprobs and step.tokens:  # logprobs ride on the step's first delta
            deltas = deltas or [{"content": ""}]
        for i, delta in enumerate(deltas):
            out.append(self._chunk(delta, None, _chat_logprobs([step]) if with_logprobs and i == 0 else None))
        if step.finish_reason:
            final, finish = self.output.final_deltas(step.finish_reason)
            out += [self._chunk(delta, None) for delta in final]
            out.append(self._chunk({}, finish))
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
    typical_p: float = 1.0,
    logprobs: Optional[int] = None,
    echo: bool = False,
    stop: Union[str, Sequence[str], None] = None,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
    repeat_penalty: float = 1.0,
    top_k: int = 40,
    stream: bool = False,
    seed: Optional[int] = None,
    tfs_z: float = 1.0,
    mirostat_mode: int = 0,
    mirostat_tau: float = 5.0,
    mirostat_eta: float = 0.1,
    model: Optional[str] = None,
    stopping_criteria: Any = None,
    logits_processor: Any = None,
    grammar: Any = None,
    logit_bias: Optional[dict[int, float]] = None,
) -> CompletionJob:
    """Validate llama-cpp-python's create_completion arguments (its positional order and
    defaults) for a context of `n_ctx` tokens."""
    _check_logprobs("logprobs", logprobs)
    tokens = _prompt_tokens(llm, prompt, n_ctx)
    head = {"id": new_id("cmpl"), "created": now(), "model": model or llm.model_path}
    prompt_text = prompt if isinstance(prompt, str) else llm.detokenize(tokens).decode("utf-8", errors="replace")
    return CompletionJob(chat=False, prompt_tokens=tokens, max_tokens=max_tokens, stop=_as_stop_list(stop),
                         logprobs=logprobs, head=head, stream=stream, prefix=prompt_text if echo else "",
                         suffix=suffix or "", prompt_chars=len(prompt_text),
                         sampling=_sampling(temperature, top_p, min_p, top_k, repeat_penalty, frequency_penalty,
                                            presence_penalty, seed, typical_p, tfs_z, mirostat_mode,
                                            mirostat_tau, mirostat_eta),
                         grammar=grammar_text(grammar), logit_bias=logit_bias, logits_processor=logits_processor,
                         stopping_criteria=stopping_criteria)


def _public_signature(job_factory: Callable) -> inspect.Signature:
    """The factory's signature without `n_ctx` (what Llama's methods take)."""
    sig = inspect.signature(job_factory)
    return sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "n_ctx"], return_annotation=Any)


def create_completion(llm: "Llama", prompt: Union[str, Sequence[int]], *args: Any, **kwargs: Any):
    """llama-cpp-python's create_completion: a Completion dict, or CompletionChunks if stream.
    logprobs work without logits_all; text_offset counts characters of prompt + completion text,
    as llama-cpp-python's (and OpenAI's) do."""
    job = completion_job(llm, llm.n_ctx(), prompt, *args, **kwargs)
    if job.prefix and job.logprobs is not None:
        job.echoed = _prompt_logprobs(llm, job.prompt_tokens, job.logprobs)
    usage = _Usage()
    return job.respond(_generate_text(llm, job, usage), usage)


def chat_completion_job(
    llm: "Llama",
    n_ctx: int,
    messages: Sequence[dict],
    functions: Optional[list[dict]] = None,
    function_call: Any = None,
    tools: Optional[list[dict]] = None,
    tool_choice: Any = None,
    temperature: float = 0.2,
    top_p: float = 0.95,
    top_k: int = 40,
    min_p: float = 0.05,
    typical_p: float = 1.0,
    stream: bool = False,
    stop: Union[str, Sequence[str], None] = None,
    seed: Optional[int] = None,
    response_format: Optional[dict] = None,
    max_tokens: Optional[int] = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    repeat_penalty: float = 1.0,
    tfs_z: float = 1.0,
    mirostat_mode: int = 0,
    mirostat_tau: float = 5.0,
    mirostat_eta: float = 0.1,
    model: Optional[str] = None,
    logits_processor: Any = None,
    grammar: Any = None,
    logit_bias: Optional[dict[int, float]] = None,
    logprobs: Optional[bool] = None,
    top_logprobs: Optional[int] = None,
    # pybonsai's own
    enable_thinking: Optional[bool] = None,
    chat_template_kwargs: Optional[dict[str, Any]] = None,
    parallel_tool_calls: bool = True,
    reasoning_format: Optional[str] = None,
    stopping_criteria: Optional[StoppingCriteria] = None,
) -> CompletionJob:
    """Validate llama-cpp-python's create_chat_completion arguments (its positional order and
    defaults); render the chat template. logprobs=True adds each token's logprob and its
    `top_logprobs` most likely alternatives, in OpenAI's chat shape.

    `response_format` ({"type": "json_object"} or {"type": "json_schema", ...}) or `grammar`
    constrain the answer; `tools`/`tool_choice` as OpenAI's (calls come back as message.tool_calls);
    reasoning_format="deepseek" returns Qwen3's <think> block as `reasoning_content` (default:
    it stays in `content`)."""
    _pending(functions=functions, function_call=function_call)
    _check_logprobs("top_logprobs", top_logprobs)
    kwargs = dict(chat_template_kwargs or {})
    if enable_thinking is not None:
        kwargs["enable_thinking"] = enable_thinking
    plan = chat_constraints(llm, kwargs, response_format=response_format, tools=tools, tool_choice=tool_choice,
                            parallel_tool_calls=parallel_tool_calls, reasoning_format=reasoning_format,
                            grammar=grammar)
    prompt = render_chat_prompt(llm, messages, None, kwargs, tools=plan.tools)
    think_open = prompt.rstrip().endswith("<think>")
    if think_open and plan.grammar is not None and tools is not None:  # a tool-call grammar starts inside it
        plan = chat_constraints(llm, kwargs, response_format=response_format, tools=tools, tool_choice=tool_choice,
                                parallel_tool_calls=parallel_tool_calls, reasoning_format=reasoning_format,
                                grammar=grammar, think_open=True)
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    _check_fits(tokens, n_ctx)
    head = {"id": new_id("chatcmpl"), "created": now(), "model": model or llm.model_path}
    return CompletionJob(chat=True, prompt_tokens=tokens, max_tokens=max_tokens, stop=_as_stop_list(stop),
                         logprobs=(top_logprobs or 0) if logprobs else None, head=head, stream=stream,
                         sampling=_sampling(temperature, top_p, min_p, top_k, repeat_penalty, frequency_penalty,
                                            presence_penalty, seed, typical_p, tfs_z, mirostat_mode,
                                            mirostat_tau, mirostat_eta),
                         grammar=plan.grammar, logit_bias=logit_bias, logits_processor=logits_processor,
                         stopping_criteria=stopping_criteria, reasoning=plan.reasoning, tool_names=plan.names,
                         think_open=think_open)


def create_chat_completion(llm: "Llama", messages: Sequence[dict], *args: Any, **kwargs: Any):
    """llama-cpp-python's create_chat_completion over the GGUF's (or the given) chat template."""
    job = chat_completion_job(llm, llm.n_ctx(), messages, *args, **kwargs)
    usage = _Usage()
    return job.respond(_generate_text(llm, job, usage), usage)


create_completion.__signature__ = _public_signature(completion_job)  # type: ignore[attr-defined]
create_chat_completion.__signature__ = _public_signature(chat_completion_job)  # type: ignore[attr-defined]


def render_chat_prompt(llm: "Llama", messages: Sequence[dict], enable_thinking: Optional[bool] = None,
                       chat_template_kwargs: Optional[dict[str, Any]] = None,
                       tools: Optional[Sequence[dict]] = None) -> str:
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
    return template.render(messages, add_generation_prompt=True, tools=tools, **kwargs)
