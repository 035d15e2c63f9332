"""What a request to the Engine is from the outside: its handle (events, cancel, steps), the
errors `enqueue` raises, and the engine's counters for /metrics."""
from __future__ import annotations

import collections
import itertools
import queue
import threading
import time
from typing import Any, Callable, Iterator, Optional, Union

from .completions import CompletionJob, TokenTextStream, _Step, _Usage
from .echo_logprobs import PromptLogprobs

__all__ = ["EngineClosed", "Event", "QueueFull", "RequestHandle", "EngineStats"]


class QueueFull(RuntimeError):
    """The engine's waiting queue is full; retry later."""


class EngineClosed(RuntimeError):
    """The engine is shut down (or shutting down) and takes no requests."""


Event = Union[_Step, BaseException]


class RequestHandle:
    """One submitted request. Events (`_Step`s, the last one with finish_reason, or an exception)
    go to the sink given at submit; without one they queue here for `steps()`."""

    _ids = itertools.count()

    def __init__(self, job: CompletionJob, sink: Optional[Callable[[Event], None]]):
        self.id = next(self._ids)
        self.job = job
        self.usage = _Usage(prompt_tokens=len(job.prompt_tokens))
        self._queue: Optional[queue.SimpleQueue] = None
        if sink is None:
            self._queue = queue.SimpleQueue()
            sink = self._queue.put
        self._sink = sink
        self.cancelled = False
        self.finished = threading.Event()
        self.submitted_at = time.monotonic()
        self.first_token_at: Optional[float] = None
        self._sampler: Any = None  # built by Engine.prepare, in the caller's thread
        self._stream: Optional[TokenTextStream] = None
        self._echo: Optional[PromptLogprobs] = None  # echo=True with logprobs
        self._withdraw: Optional[Callable[["RequestHandle"], None]] = None  # set when queued

    def cancel(self) -> None:
        """Stop this request: a queued one leaves the queue at once (its last event says
        "cancelled"); a running one's KV cells are freed at the engine's next step."""
        self.cancelled = True
        if self._withdraw is not None:
            self._withdraw(self)

    def _emit(self, event: Event) -> None:
        if isinstance(event, BaseException) or event.finish_reason is not None:
            self.finished.set()
        try:
            self._sink(event)
        except Exception:  # the consumer is gone (closed event loop, ...): stop generating for it
            self.cancelled = True

    def steps(self) -> Iterator[_Step]:
        """The request's steps as they come (blocking); closing the iterator cancels it."""
        if self._queue is None:
            raise RuntimeError("this request delivers its events to a sink")
        try:
            while True:
                event = self._queue.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if event.finish_reason is not None:
                    return
        finally:
            if not self.finished.is_set():
                self.cancel()


class EngineStats:
    """Counters for /metrics (written by the engine thread, read anywhere)."""

    def __init__(self) -> None:
        self.requests = 0
        self.rejected = 0
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.prefix_reused_tokens = 0   # prompt tokens whose KV cells a request found in place
        self.prefix_dropped_tokens = 0  # retained tokens whose cells were dropped for a new request
        self._recent: collections.deque[tuple[float, int]] = collections.deque(maxlen=256)

    def note_step(self, n_generated: int, seconds: float) -> None:
        self._recent.append((time.monotonic(), n_generated))

    def tokens_per_second(self, window: float = 10.0) -> float:
        """Generated tokens per second over the last `window` seconds."""
        now = time.monotonic()
        recent = [(t, n) for t, n in list(self._recent) if now - t <= window]
        if not recent:
            return 0.0
        span = max(now - recent[0][0], 1e-3)
        return sum(n for _, n in recent) / span
