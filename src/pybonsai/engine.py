"""`Engine`: one model, one llama.cpp context holding up to `n_parallel` sequences, and one
background thread that decodes them together (continuous batching).

Every step's batch carries one token of each generating sequence plus chunks of waiting prompts
(at most `prefill_chunk` prompt tokens a step, so a long prompt cannot stall the others);
requests join and leave between steps. Each request has its own sampler chain and seed, stop
strings, token limit and logprobs — the text side is completions.TokenTextStream, the same code
`Llama` runs. A cancelled request leaves at the next step.

A sequence keeps its KV cells after its request ends, and a new request starts from the longest
prompt prefix that a retained or running sequence (or, with `cache_ram`, a state saved to host
RAM) holds: see engine_prefix.

The KV cache is unified (one pool of n_ctx cells): at this llama.cpp pin a split cache splits a
batch into one micro-batch per run of consecutive sequence ids (llama_batch_allocr::split_equal
with sequential=true), i.e. one more pass over the weights whenever the active slots are not
0..k, and splits every mixed prefill+decode step. Each sequence still gets its own share
(n_ctx // n_parallel tokens), enforced here, so the pool can never run out.

Models with recurrent layers (the qwen35 hybrid of Bonsai 27B: Gated DeltaNet layers) also keep
one recurrent state per sequence: llama.cpp sizes that memory by n_seq_max = n_parallel cells, and
`seq_rm(seq, 0, -1)` frees a finished sequence's cell, so the next request starts from a zero
state (reused only whole: engine_prefix)."""
from __future__ import annotations

import collections
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

from . import _core, completions, kv_cache
from .completions import CompletionJob, TokenTextStream, _Step
from .echo_logprobs import PromptLogprobs
from .engine_handle import EngineClosed, EngineStats, Event, QueueFull, RequestHandle
from .engine_prefix import HostPromptCache, PrefixPlan, plan_prefix
from .engine_speculation import EngineSpeculation, SlotDrafting
from .limits import RequestLimits
from .llama import Llama, _default_threads
from .logits import check_logit_bias
from .request_checks import check_arguments, check_job, check_messages_size, check_prompt_size, grammar_param
from .sampling import DEFAULT_SEED, SamplingParams, build_sampler, prime_penalties, resolve_seed

__all__ = ["Engine", "EngineClosed", "QueueFull", "RequestHandle"]

ECHO_CHUNK = 16  # prompt tokens a step for echo + logprobs (each row's logits are copied: 4 B x n_vocab)


@dataclass
class _Slot:
    """A sequence of the context and the request running in it."""

    seq: int
    handle: Optional[RequestHandle] = None
    stream: Optional[TokenTextStream] = None
    sampler: Any = None
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet decoded
    pos: int = 0                                      # next position in the sequence
    last: int = -1                                    # the sampled token to decode next
    sampling: Optional[Future] = None                 # a pick (grammar) / logprobs, off the step
    echo: Optional[PromptLogprobs] = None             # echo=True + logprobs: the prompt's logprobs
    echo_rows: tuple = ()                             # batch rows of the prompt tokens in this step
    drafting: Optional[SlotDrafting] = None           # speculative decoding (engine_speculation)
    cached: list[int] = field(default_factory=list)   # the tokens whose KV cells the sequence holds
    last_used: float = float("-inf")                  # when its last request ended


class Engine:
    """Serve many completions at once from one model and one context (see the module doc).

    `n_ctx` is the whole KV pool (default 2048 per sequence); every request may use
    `n_ctx_per_seq` = n_ctx // n_parallel tokens, prompt included. `flash_attn=None` (the
    default) is on for a CPU model ("auto" when layers are offloaded): our CPU flash-attention
    kernel gives a sequence the same logits whatever else is in the batch and wherever its KV
    cells lie, while llama.cpp's attention without it rounds differently for different batch
    shapes (a request's greedy text could change beside other requests or with a reused prefix).
    `flash_attn=False` is still accepted.

    `cache_prompt` (default on) lets a request start from a prefix retained from earlier ones
    (per request: the job's `cache_prompt`); `cache_ram` MiB (0: off, -1: no limit) keeps the
    states of dropped prefixes in host RAM (llama-server's --cache-ram).

    `limits` (pybonsai.limits.RequestLimits; default OpenAI's bounds) caps what one request may
    ask (logprobs, stop strings, grammar size): over a bound, the job builders raise
    LimitExceeded (a ValueError naming the parameter) before any work; a text prompt that cannot
    fit (more bytes than n_ctx_per_seq of the vocabulary's longest tokens) is refused before it is
    tokenized. Grammar-constrained picks and top-logprobs lists run in worker threads beside the
    shared decode step (a grammar checks the whole vocabulary for a token: 30-80 ms on a Qwen
    vocabulary, more for large alternations; a logprobs list ~0.7 ms), so that they slow only their
    own request (which skips the steps while its pick is made)."""

    def __init__(self, model_path: str, *, n_parallel: int = 4, n_ctx: Optional[int] = None,
                 n_batch: int = 512, n_threads: Optional[int] = None, n_threads_batch: Optional[int] = None,
                 n_gpu_layers: int = 0, seed: int = DEFAULT_SEED, chat_template: Optional[str] = None,
                 flash_attn: Union[bool, str, None] = None, max_queue: int = 64, prefill_chunk: int = 256,
                 verbose: bool = False, type_k: kv_cache.KVType = None, type_v: kv_cache.KVType = None,
                 limits: Optional[RequestLimits] = None, draft_model: Any = None, draft_max: int = 8,
                 draft_min: int = 0, draft_p_min: float = 0.0, cache_prompt: bool = True, cache_ram: int = 0) -> None:
        for name, v in (("n_parallel", n_parallel), ("n_batch", n_batch), ("max_queue", max_queue),
                        ("prefill_chunk", prefill_chunk)):
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "max_queue" else 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if limits is not None and not isinstance(limits, RequestLimits):
            raise TypeError(f"limits must be a pybonsai.limits.RequestLimits, got {type(limits).__name__}")
        self.limits = limits or RequestLimits()
        # "ngram", a GGUFDraftModel (engine_draft_model) or a drafter; None: off
        self._spec = EngineSpeculation.make(draft_model, draft_max, draft_min, draft_p_min)
        if not isinstance(cache_ram, int) or isinstance(cache_ram, bool) or cache_ram < -1:
            raise ValueError(f"cache_ram must be an int of MiB (-1: no limit, 0: off), got {cache_ram!r}")
        self.cache_prompt = bool(cache_prompt)
        self._saved = HostPromptCache(cache_ram << 20 if cache_ram >= 0 else 1 << 62) if cache_ram else None
        # ValueError before anything loads (the default counts as off until the model is known)
        kv = kv_cache.resolve(type_k, type_v, False if flash_attn is None else flash_attn)
        if n_parallel > 256:
            raise ValueError(f"n_parallel must be at most 256, got {n_parallel}")
        # The vocab-only Llama tokenizes, renders chat templates and turns tokens into text for
        # the shared completion code; the weights are loaded once, for the context below.
        self.llm = Llama(model_path, vocab_only=True, seed=seed, chat_template=chat_template,
                         n_gpu_layers=n_gpu_layers, verbose=verbose)
        self.model_path = self.llm.model_path
        self._model = _core.Model(self.model_path, n_gpu_layers=n_gpu_layers, vocab_only=False,
                                  use_mmap=True, progress=None)
        if flash_attn is None:  # on (CPU) / auto (offloaded): see the class doc
            kv = kv_cache.resolve(type_k, type_v, True if n_gpu_layers == 0 else "auto")
        if n_ctx is None or n_ctx == 0:
            n_ctx = min(2048, self._model.n_ctx_train or 2048) * n_parallel
        if not isinstance(n_ctx, int) or n_ctx < n_parallel:
            raise ValueError(f"n_ctx must be an int >= n_parallel, got {n_ctx!r}")
        threads = n_threads or _default_threads()
        n_batch = max(n_batch, n_parallel)
        self._ctx = _core.Context(self._model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                                  n_threads=threads, n_threads_batch=n_threads_batch or threads,
                                  flash_attn=kv.flash_attn, type_k=kv.type_k, type_v=kv.type_v,
                                  n_seq_max=n_parallel, kv_unified=True)
        self.n_parallel = n_parallel
        self.n_gpu_layers = n_gpu_layers
        if self._spec is not None:
            self._spec.bind(self, threads, n_threads_batch or threads)  # a draft model loads (ValueError: vocabulary)
        self.n_ctx_per_seq = self._ctx.n_ctx // n_parallel
        self.n_batch = self._ctx.n_batch
        self.prefill_chunk = prefill_chunk
        self.max_queue = max_queue
        self._slots = [_Slot(seq=i) for i in range(n_parallel)]
        self._waiting: collections.deque[RequestHandle] = collections.deque()
        self._wake = threading.Condition()
        self._closing = False
        self._close_lock = threading.Lock()
        self._fatal: Optional[BaseException] = None
        self._step_lock = threading.Lock()  # guards _step_seqs: the sequences of the decode in flight
        self._step_seqs: frozenset = frozenset()
        self._pickers = ThreadPoolExecutor(max_workers=min(2, n_parallel), thread_name_prefix="pybonsai-grammar")
        self.stats = EngineStats()
        self._thread = threading.Thread(target=self._run, name="pybonsai-engine", daemon=True)
        self._thread.start()

    # -- requests ----------------------------------------------------------------------------
    def completion_job(self, prompt: Union[str, Sequence[int]], **kwargs: Any) -> CompletionJob:
        """Validate create_completion arguments for this engine (raises ValueError/TypeError;
        LimitExceeded, before any work, for arguments over `limits`)."""
        check_arguments(self.limits, kwargs, chat=False)
        check_prompt_size(prompt, self.n_ctx_per_seq, self._longest_piece)
        job = completions.completion_job(self.llm, self.n_ctx_per_seq, prompt, **kwargs)
        check_job(job, self.limits, self.llm.n_vocab())
        return job

    def chat_completion_job(self, messages: Sequence[dict], **kwargs: Any) -> CompletionJob:
        """Validate create_chat_completion arguments for this engine."""
        check_arguments(self.limits, kwargs, chat=True)
        check_messages_size(messages, self.n_ctx_per_seq, self._longest_piece)
        job = completions.chat_completion_job(self.llm, self.n_ctx_per_seq, messages, **kwargs)
        check_job(job, self.limits, self.llm.n_vocab(), grammar_param(kwargs))
        return job

    def prepare(self, job: CompletionJob, sink: Optional[Callable[[Event], None]] = None) -> RequestHandle:
        """Check `job` and build its sampler (grammar included) in the caller's thread; the
        handle is not queued yet (see `enqueue`). Raises ValueError/TypeError for a bad job."""
        if not isinstance(job, CompletionJob):
            raise TypeError(f"submit() takes a CompletionJob (Engine.completion_job), got {type(job).__name__}")
        check_job(job, self.limits, self.llm.n_vocab())
        sampling = dict(job.sampling)
        seed = resolve_seed(sampling.pop("seed"), self.llm.seed)
        params = SamplingParams(temperature=sampling.pop("temp"), seed=seed, **sampling)
        if job.logits_processor is not None or job.stopping_criteria is not None:
            raise ValueError("logits_processor and stopping_criteria run only with Llama, not in the Engine")
        sampler = build_sampler(self._model, params, seed, grammar=job.grammar,
                                logit_bias=check_logit_bias(job.logit_bias, self._model.n_vocab))
        prime_penalties(sampler, params, job.prompt_tokens)
        handle = RequestHandle(job, sink)
        handle._sampler = sampler
        handle._stream = job.text_stream(self.llm, self.n_ctx_per_seq, handle.usage)
        if job.prefix and job.logprobs is not None:
            handle._echo = PromptLogprobs(self.llm, job.prompt_tokens, job.logprobs)
            job.echoed = handle._echo.step  # filled during the prefill, before the first token
        return handle

    def enqueue(self, handle: RequestHandle) -> RequestHandle:
        """Queue a prepared request; raises QueueFull when `max_queue` requests already wait for
        a slot, EngineClosed when the engine is shutting down or its thread has stopped."""
        with self._wake:
            if self._closing:
                raise EngineClosed("the engine is shutting down")
            if not self._thread.is_alive():
                raise EngineClosed(f"the engine thread stopped: {self._fatal!r}")
            if len(self._waiting) >= self.max_queue:
                self.stats.rejected += 1
                raise QueueFull(f"{len(self._waiting)} requests are already waiting (max_queue={self.max_queue})")
            handle._withdraw = self._withdraw
            self._waiting.append(handle)
            self.stats.requests += 1
            self._wake.notify()
        return handle

    def submit(self, job: CompletionJob, sink: Optional[Callable[[Event], None]] = None) -> RequestHandle:
        """prepare(job) and enqueue it: raises QueueFull when `max_queue` requests already wait.

        `sink(event)` is called from the engine thread for every event (keep it short)."""
        return self.enqueue(self.prepare(job, sink))

    def _withdraw(self, handle: RequestHandle) -> None:
        """A queued request cancelled: out of the queue now (a running one: at the next step)."""
        with self._wake:
            try:
                self._waiting.remove(handle)
            except ValueError:
                self._wake.notify()  # running (or admitted): the engine frees it at its next step
                running = True
            else:
                running = False
        if running:
            self._abort_cancelled_step()
        else:
            handle._emit(_Step(finish_reason="cancelled"))

    def _abort_cancelled_step(self) -> None:
        """A decode in flight that serves only cancelled requests stops within ~1 ms of work
        (vendor/patches/0009) instead of running to its end: a step of a long prompt's prefill
        takes seconds on a CPU. A decode that also serves live requests runs on."""
        with self._step_lock:
            slots = [self._slots[s] for s in self._step_seqs]
            if slots and self._ctx is not None and all(s.handle is None or s.handle.cancelled for s in slots):
                self._ctx.request_abort()  # (a decode not started yet resets it: it runs whole)

    def create_completion(self, prompt: Union[str, Sequence[int]], **kwargs: Any):
        """Llama.create_completion, run among the engine's other requests."""
        job = self.completion_job(prompt, **kwargs)
        handle = self.submit(job)
        return job.respond(handle.steps(), handle.usage)

    def create_chat_completion(self, messages: Sequence[dict], **kwargs: Any):
        """Llama.create_chat_completion, run among the engine's other requests."""
        job = self.chat_completion_job(messages, **kwargs)
        handle = self.submit(job)
        return job.respond(handle.steps(), handle.usage)

    def _longest_piece(self) -> int:
        """Bytes of the vocabulary's longest token (computed once, when first needed)."""
        if self._max_piece is None:
            self._max_piece = max(len(self.llm.token_to_piece(t)) for t in range(self.llm.n_vocab()))
        return self._max_piece

    _max_piece: Optional[int] = None

    # -- state -------------------------------------------------------------------------------
    @property
    def n_active(self) -> int:
        return sum(s.handle is not None for s in self._slots)

    @property
    def draft_counts(self) -> tuple[int, int]:
        """(drafted, accepted) tokens of speculative decoding so far (0, 0 when it is off)."""
        return (self._spec.drafted, self._spec.accepted) if self._spec is not None else (0, 0)

    def slots_info(self) -> list[dict[str, Any]]:
        """Each sequence as llama-server's GET /slots shows it (the fields that apply here)."""
        out = []
        for s in list(self._slots):
            handle = s.handle
            out.append({"id": s.seq, "id_task": handle.id if handle is not None else -1,
                        "n_ctx": self.n_ctx_per_seq, "is_processing": handle is not None,
                        "n_cached_tokens": len(s.cached), "n_prompt_tokens_pending": len(s.pending),
                        "speculative": s.drafting is not None,
                        "next_token": {"n_decoded": handle.usage.completion_tokens if handle is not None else 0}})
        return out

    @property
    def saved_counts(self) -> tuple[int, int, int]:
        """Host-RAM prompt cache: (states saved, states restored, bytes held); zeros when off."""
        c = self._saved
        return (c.saved, c.restored, c.bytes) if c is not None else (0, 0, 0)

    @property
    def n_waiting(self) -> int:
        return len(self._waiting)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def closing(self) -> bool:
        return self._closing

    def close(self, drain_timeout: float = 0.0) -> None:
        """Stop taking requests; let running ones finish for up to `drain_timeout` seconds; then
        end the rest as "cancelled" (still queued ones get EngineClosed), stop the thread and free
        the context. Idempotent."""
        with self._close_lock:
            with self._wake:
                self._closing = True
                self._wake.notify()
            deadline = time.monotonic() + drain_timeout
            while (self.n_active or self.n_waiting) and time.monotonic() < deadline and self.alive:
                time.sleep(0.02)
            with self._wake:
                self._stop = True
                self._wake.notify()
            if self._ctx is not None:
                self._ctx.request_abort()  # a decode in progress stops early; its requests end
            self._thread.join()
            self._pickers.shutdown(wait=True)
            if self._ctx is not None:
                self._ctx.close()
                self._model.close()
                if self._spec is not None:
                    self._spec.close()
                self.llm.close()
                self._ctx = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the decode loop (engine thread) -----------------------------------------------------
    _stop = False

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug: fail every request rather than leave them waiting
            self._fatal = exc
            traceback.print_exc()  # (the server's log); submit() now raises EngineClosed
        finally:
            with self._wake:
                waiting, self._waiting = list(self._waiting), collections.deque()
            for slot in self._slots:
                if slot.handle is not None:
                    if slot.sampling is not None:
                        slot.sampling.cancel()
                        wait_done(slot.sampling)
                    event = slot.stream.finish("cancelled") if self._fatal is None else self._fatal
                    self._release(slot, event=event)
            for handle in waiting:
                handle._emit(EngineClosed("the engine was shut down") if self._fatal is None else self._fatal)

    def _has_work(self) -> bool:
        if self._waiting and any(s.handle is None for s in self._slots):
            return True
        return any(s.handle is not None and (s.sampling is None or s.sampling.done()) for s in self._slots)

    def _notify(self, _future: Any = None) -> None:
        with self._wake:
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self._has_work():
                    self._wake.wait()
                if self._stop:
                    return
                admitted = self._take_admitted()
            self._admit(admitted)  # outside the lock: placing a prefix may copy a saved state
            self._collect_picks()
            self._drop_cancelled()
            batch = self._build_batch()
            if batch[0]:
                self._step(*batch)

    def _take_admitted(self) -> list[RequestHandle]:
        """Take as many waiting requests as there are free slots (with self._wake held)."""
        n = min(len(self._waiting), sum(s.handle is None for s in self._slots))
        return [self._waiting.popleft() for _ in range(n)]  # (their cancel: _withdraw, running)

    def _admit(self, admitted: list[RequestHandle]) -> None:
        for handle in admitted:
            job = handle.job
            slot = self._place(job.prompt_tokens, job.cache_prompt and handle._echo is None)
            slot.handle, slot.sampler, slot.stream = handle, handle._sampler, handle._stream
            slot.echo = handle._echo
            slot.pending, slot.pos, slot.last = list(job.prompt_tokens[slot.pos:]), slot.pos, -1
            self.stats.prefix_reused_tokens += slot.pos
            if self._spec is not None and job.grammar is None and job.logprobs is None and job.draft_max != 0 \
                    and slot.echo is None and not self.llm.is_recurrent:  # the step's fast path only
                slot.drafting = self._spec.start(job.prompt_tokens, job.draft_max, slot.seq)
            if slot.stream.done:  # no room to generate anything
                self._release(slot, event=slot.stream.finish())

    def _drop_cancelled(self) -> None:
        for slot in self._slots:
            if slot.handle is not None and slot.handle.cancelled and slot.sampling is None:
                self._release(slot, event=slot.stream.finish("cancelled"))

    def _place(self, prompt: Sequence[int], reuse: bool) -> _Slot:
        """Pick a free slot for `prompt` and put the longest prefix of it that the retained
        sequences or saved states hold into that slot's sequence (engine_prefix); the slot's
        `pos` is then the number of prompt tokens already there."""
        free = [(s.seq, s.cached, s.last_used) for s in self._slots if s.handle is None]
        busy = [(s.seq, s.cached) for s in self._slots if s.handle is not None]
        plan = plan_prefix(prompt, free, busy, self._saved.entries() if self._saved else (),
                           reuse=reuse and self.cache_prompt, recurrent=self.llm.is_recurrent,
                           saving=self._saved is not None)
        slot = self._slots[plan.dest]
        if plan.save_dest:
            self._saved.put(slot.cached, self._ctx.state_seq_get(slot.seq))
        if len(slot.cached) > plan.keep or plan.source is not None or plan.entry is not None:
            self.stats.prefix_dropped_tokens += len(slot.cached) - (plan.keep if self._in_place(plan) else 0)
        slot.pos = self._fill(slot, plan)
        slot.cached = list(prompt[:slot.pos])
        return slot

    @staticmethod
    def _in_place(plan: PrefixPlan) -> bool:
        return plan.source is None and plan.entry is None

    def _fill(self, slot: _Slot, plan: PrefixPlan) -> int:
        """Make the slot's sequence hold exactly the plan's `keep` prompt tokens; returns how many
        it holds (0 where llama.cpp refused: a recurrent state cannot be cut, a saved state found
        no room)."""
        ctx, seq, keep = self._ctx, slot.seq, plan.keep
        if not self._in_place(plan):
            ctx.seq_rm(seq, 0, -1)
            if plan.source is not None:
                ctx.seq_cp(plan.source, seq, 0, keep)
            elif ctx.state_seq_set(plan.entry.data, seq):
                self._saved.touch(plan.entry)
                self._saved.restored += 1
            else:
                return 0
        if ctx.seq_pos_max(seq) >= keep and not ctx.seq_rm(seq, keep, -1):
            ctx.seq_rm(seq, 0, -1)
            return 0
        return keep

    def _release(self, slot: _Slot, event: Event, keep_cells: bool = True) -> None:
        """End the slot's request with `event`. Its sequence keeps its KV cells for a later request
        with the same prefix (engine_prefix), unless prefix reuse is off or the cells are suspect
        (`keep_cells` False: a failed decode)."""
        handle = slot.handle
        slot.handle, slot.stream, slot.sampler, slot.pending, slot.sampling = None, None, None, [], None
        slot.echo, slot.echo_rows, slot.drafting = None, (), None
        if not (keep_cells and self.cache_prompt):
            self._ctx.seq_rm(slot.seq, 0, -1)
            slot.cached = []
        slot.pos = 0
        slot.last_used = time.monotonic()
        handle._emit(event)

    def _build_batch(self):
        tokens, pos, seqs, want, rows = [], [], [], [], []
        generating = [s for s in self._slots if s.handle is not None and not s.pending and s.sampling is None]
        if self._spec is not None:  # every drafting sequence's drafts at once (a draft model: batched)
            self._spec.propose_all([(s.drafting, self.n_ctx_per_seq - s.pos - 1) for s in generating
                                    if s.drafting is not None], self.n_batch - len(generating), len(generating))
        for slot in generating:
            rows.append((slot, len(tokens)))
            # its next token, then the drafts after it (all with logits)
            drafts = slot.drafting.drafts if slot.drafting is not None else ()
            for i, t in enumerate((slot.last, *drafts)):
                tokens.append(t)
                pos.append(slot.pos + i)
                seqs.append(slot.seq)
                want.append(True)
        budget = min(self.prefill_chunk, self.n_batch - len(tokens))
        for slot in self._slots:
            if slot.handle is None or not slot.pending or budget <= 0 or slot.sampling is not None:
                continue
            # echo + logprobs: every prompt row's logits are copied and scored (beside the step)
            chunk = slot.pending[:min(budget, ECHO_CHUNK) if slot.echo is not None else budget]
            del slot.pending[:len(chunk)]
            budget -= len(chunk)
            if slot.echo is not None:
                slot.echo_rows = tuple(range(len(tokens), len(tokens) + len(chunk)))
            for i, t in enumerate(chunk):
                tokens.append(t)
                pos.append(slot.pos + i)
                seqs.append(slot.seq)
                want.append(slot.echo is not None)
            if not slot.pending:  # the prompt's last token: sample the first token from it
                want[-1] = True
                rows.append((slot, len(tokens) - 1))
            slot.pos += len(chunk) - 1  # _step advances every slot in `rows` by one more
            if slot.pending:
                slot.pos += 1
        return tokens, pos, seqs, want, rows

    def _step(self, tokens, pos, seqs, want, rows) -> None:
        t0 = time.monotonic()
        with self._step_lock:
            self._step_seqs = frozenset(seqs)
        try:
            self._ctx.decode_batch(tokens, pos, seqs, want)
            if self._spec is not None:
                self._spec.cost.add(len(tokens), time.monotonic() - t0)
        except Exception as exc:  # the worker survives; the requests in this batch fail
            for slot in self._slots:  # (or, when close() or cancels aborted the decode, end as cancelled)
                if slot.handle is not None and slot.seq in set(seqs):
                    cancelled = self._stop or slot.handle.cancelled
                    self._release(slot, event=slot.stream.finish("cancelled") if cancelled else exc,
                                  keep_cells=False)
            return
        finally:
            with self._step_lock:
                self._step_seqs = frozenset()
        for token, seq in zip(tokens, seqs):
            self._slots[seq].cached.append(token)
        self.stats.prompt_tokens += len(tokens) - sum(
            1 + (len(s.drafting.drafts) if s.drafting is not None else 0) for s, _ in rows if s.last >= 0)
        echoes = {}
        for slot in self._slots:
            if slot.echo_rows:
                echoes[slot.seq] = [self._ctx.logits_ith(r) for r in slot.echo_rows]
                slot.echo_rows = ()
        for slot, row in rows:
            slot.pos += 1
            try:
                job = slot.handle.job
                if job.grammar is not None or job.logprobs is not None:  # slow: off the shared step
                    logits = self._ctx.logits_ith(row)
                    token = None if job.grammar is not None else slot.sampler.sample(self._ctx, row)
                    self._off_step(slot, token, logits, echoes.pop(slot.seq, None))
                    continue
                token = slot.sampler.sample(self._ctx, row)
                step = slot.stream.push(token)
                if slot.drafting is not None and slot.drafting.drafts:
                    self._advance_drafted(slot, row, token, step)
                    continue
            except Exception as exc:
                self._release(slot, event=exc)
                continue
            self._advance(slot, token, step)
        for seq, rows_logits in echoes.items():  # prompts still prefilling
            self._off_step(self._slots[seq], None, None, rows_logits)
        self.stats.note_step(len(rows), time.monotonic() - t0)

    def _off_step(self, slot: _Slot, token: Optional[int], logits, echo_rows) -> None:
        slot.sampling = self._pickers.submit(self._pick_and_push, slot, token, logits, echo_rows)
        slot.sampling.add_done_callback(self._notify)

    def _pick_and_push(self, slot: _Slot, token: Optional[int], logits,
                       echo_rows=None) -> tuple[Optional[int], Optional[_Step]]:
        """In a worker thread, beside the shared step (the slot waits out of the batch): the
        prompt rows' logprobs (echo), the grammar mask (a pass over the whole vocabulary, the
        GIL released) and/or the top-logprobs list (numpy, the GIL mostly released) of one
        sampled token. (None, None) when the prompt is not done."""
        if echo_rows:
            slot.echo.feed(echo_rows)
        if logits is None:
            return None, None
        if token is None:
            token = slot.sampler.sample_logits(self._model, logits)
        return token, slot.stream.push(token, lambda: logits)

    def _collect_picks(self) -> None:
        for slot in self._slots:
            future = slot.sampling
            if future is None or not future.done():
                continue
            slot.sampling = None
            try:
                token, step = future.result()
            except Exception as exc:
                self._release(slot, event=exc)
                continue
            if token is not None:
                self._advance(slot, token, step)

    def _advance_drafted(self, slot: _Slot, row: int, token: int, step: Optional[_Step]) -> None:
        """Verify a slot's drafts (batch rows row+1..): sample each next position while the last
        sample equals the draft there; drop the KV cells of the drafts after the last kept one."""
        drafting = slot.drafting
        drafts, first, accepted = drafting.drafts, slot.pos, 0  # first: the first draft's position
        while True:
            self._advance(slot, token, step)
            if slot.handle is None or accepted == len(drafts) or token != drafts[accepted]:
                break
            accepted += 1
            token = slot.sampler.sample(self._ctx, row + accepted)
            step = slot.stream.push(token)
        self._spec.settle(drafting, accepted)
        if slot.handle is not None:  # (a finished request keeps them: `cached` says what they hold)
            self._ctx.seq_rm(slot.seq, first + accepted, -1)
            slot.pos = first + accepted
            del slot.cached[slot.pos:]

    def _advance(self, slot: _Slot, token: int, step: Optional[_Step]) -> None:
        """The slot's request sampled `token`, which made `step`."""
        if slot.drafting is not None:
            slot.drafting.history.append(token)
        handle = slot.handle
        if handle.first_token_at is None:
            handle.first_token_at = time.monotonic()
        slot.last = token
        self.stats.generated_tokens += 1
        if slot.stream.done:
            self._release(slot, event=step)
        elif step is not None:
            handle._emit(step)


def wait_done(future: Future) -> None:
    try:
        future.exception()
    except BaseException:
        pass
