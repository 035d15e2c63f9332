"""A request cancelled while its prompt's prefill step runs stops that step within ~1 ms of work
(vendor/patches/0009) when the step serves nobody else; a step shared with a live request runs on,
and the live request's answer is unchanged."""
from __future__ import annotations

import threading
import time

import pytest

from pybonsai import Engine

PROMPT = [(7 * i) % 250 for i in range(2000)]  # the wide model's vocabulary: ids below 250


@pytest.fixture(scope="module")
def engine(wide_model_path):
    # one step takes the whole prompt: prefill_chunk = n_batch (= n_ubatch in the Engine); every
    # request prefills its whole prompt (no prefix reuse), so every prefill takes as long
    with Engine(wide_model_path, n_parallel=2, n_ctx=4096, n_batch=2048, prefill_chunk=2048, n_threads=2,
                cache_prompt=False) as e:
        yield e


def _first_token(engine: Engine, prompt) -> tuple[list, float]:
    """The request's events (greedy, one token) and the seconds from submit to its end."""
    start = time.perf_counter()
    events = list(engine.submit(engine.completion_job(prompt, max_tokens=1, temperature=0)).steps())
    return events, time.perf_counter() - start


def _cancelled_after(engine: Engine, prompt, delay: float) -> tuple[str, float]:
    """Submit, cancel after `delay` s: the finish reason and the seconds from cancel() to it."""
    handle = engine.submit(engine.completion_job(prompt, max_tokens=1, temperature=0))
    time.sleep(delay)
    asked = time.perf_counter()
    handle.cancel()
    events = list(handle.steps())
    return events[-1].finish_reason, time.perf_counter() - asked


def test_cancel_stops_a_lone_prefill_step(engine):
    _first_token(engine, PROMPT)  # warm-up: first touches of the KV cells
    expected, full = _first_token(engine, PROMPT)
    latencies = []
    for fraction in (0.3, 0.2, 0.4, 0.25, 0.35, 0.15, 0.45):
        reason, latency = _cancelled_after(engine, PROMPT, full * fraction)
        if reason == "cancelled":
            latencies.append(latency)
        if len(latencies) == 3:
            break
    assert len(latencies) == 3, f"the step ran to its end: not cut, or done before the cancel ({full:.3f} s uncancelled)"
    # Waiting for the step would take the rest of it (>= half the prefill); the cut lands in ms.
    # Two of three within a tenth of the prefill (one may meet a stall of a loaded machine).
    assert sorted(latencies)[1] < full / 10, (latencies, full)
    assert engine.n_active == 0
    again, _ = _first_token(engine, PROMPT)  # the engine goes on, unchanged
    assert [(e.text, e.finish_reason) for e in again] == [(e.text, e.finish_reason) for e in expected]


def test_cancel_does_not_stop_a_step_shared_with_a_live_request(engine):
    live, other = PROMPT[:900], PROMPT[900:1800]
    expected, full = _first_token(engine, live)
    got: dict = {}
    worker = threading.Thread(target=lambda: got.update(events=_first_token(engine, live)[0]))
    cancelled = engine.submit(engine.completion_job(other, max_tokens=1, temperature=0))
    worker.start()  # both prompts in one step (2 x 900 <= n_batch)
    time.sleep(full * 0.5)
    cancelled.cancel()
    worker.join(60)
    assert list(cancelled.steps())[-1].finish_reason in ("cancelled", "length")
    assert [(e.text, e.finish_reason) for e in got["events"]] == [(e.text, e.finish_reason) for e in expected]
