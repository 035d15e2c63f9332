"""The Engine checks requests in the caller's thread (issue 28): bounds before any work, fields the
engine thread would trip over, a dead engine thread refuses new requests, queued requests leave
the queue when cancelled, close() ends running requests as cancelled."""
from __future__ import annotations

import threading
import time

import pytest

from pybonsai import Engine, Llama
from pybonsai.engine import EngineClosed, QueueFull
from pybonsai.limits import LimitExceeded, ParamError, RequestLimits

HUGE_GRAMMAR = "root ::= " + " | ".join(f'"w{i}"' for i in range(40_000))
HUGE_ENUM = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"enum": [f"v{i}" for i in range(40_000)]}}}


@pytest.fixture(scope="module")
def engine(tiny_model_path):
    with Engine(str(tiny_model_path), n_parallel=4, n_ctx=4096, n_threads=1) as e:
        yield e


def _text(result) -> str:
    return result["choices"][0]["text"]


def test_bounds_are_openai_and_refused_before_any_work(engine):
    cases = [
        (lambda: engine.completion_job("hi", logprobs=200_000), "logprobs", "integer_above_max_value"),
        (lambda: engine.completion_job("hi", logprobs=6), "logprobs", "integer_above_max_value"),
        (lambda: engine.chat_completion_job([{"role": "user", "content": "hi"}], logprobs=True, top_logprobs=21),
         "top_logprobs", "integer_above_max_value"),
        (lambda: engine.completion_job("hi", stop=[str(i) for i in range(300_000)]), "stop", "array_above_max_length"),
        (lambda: engine.completion_job("hi", stop=["x" * 257]), "stop", "string_above_max_length"),
        (lambda: engine.completion_job("hi", grammar=HUGE_GRAMMAR), "grammar", "grammar_too_complex"),
        (lambda: engine.chat_completion_job([{"role": "user", "content": "hi"}], response_format=HUGE_ENUM),
         "response_format", "grammar_too_complex"),
    ]
    for make, param, code in cases:
        t0 = time.monotonic()
        with pytest.raises(LimitExceeded) as e:
            make()
        assert (e.value.param, e.value.code) == (param, code)
        assert time.monotonic() - t0 < 1.0  # generous: the checks are linear scans, no model work
    # too long to fit even as the vocabulary's longest tokens: refused before tokenizing / rendering
    for make, param in [(lambda: engine.completion_job("word " * 700_000), "prompt"),
                        (lambda: engine.chat_completion_job([{"role": "user", "content": "word " * 60}] * 4000),
                         "messages")]:
        t0 = time.monotonic()
        with pytest.raises(ParamError, match="exceed context window") as e:
            make()
        assert e.value.param == param and time.monotonic() - t0 < 1.0
    # at the bounds: accepted
    got = engine.create_completion("hi", max_tokens=2, temperature=0, logprobs=5, stop=["a", "b", "c", "d"])
    assert len(got["choices"][0]["logprobs"]["top_logprobs"][0]) >= 5


def test_limits_are_configurable(tiny_model_path):
    with Engine(str(tiny_model_path), n_parallel=1, n_ctx=512, n_threads=1,
                limits=RequestLimits(logprobs=10, stop=1)) as e:
        assert e.create_completion("hi", max_tokens=1, temperature=0, logprobs=10)["choices"][0]["logprobs"]
        with pytest.raises(LimitExceeded, match="maximum length 1"):
            e.completion_job("hi", stop=["a", "b"])
    with pytest.raises(ValueError, match="RequestLimits.stop"):
        RequestLimits(stop=-1)


def test_llama_caps_logprobs_at_openais_chat_bound(tiny_model_path):
    with Llama(str(tiny_model_path), n_ctx=256, n_threads=1, verbose=False) as llm:
        with pytest.raises(LimitExceeded, match="Expected a value <= 20"):
            llm.create_completion("hi", max_tokens=1, logprobs=200_000)
        with pytest.raises(LimitExceeded):
            llm.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=1, logprobs=True,
                                       top_logprobs=21)
        assert llm.create_completion("hi", max_tokens=1, logprobs=20)["choices"][0]["logprobs"]


@pytest.mark.parametrize("max_tokens", ["5", float("nan"), 5.0, True])
def test_bad_max_tokens_raise_in_the_callers_thread(engine, max_tokens):
    with pytest.raises(ParamError) as e:
        engine.submit(engine.completion_job("hi", max_tokens=max_tokens))
    assert e.value.param == "max_tokens"
    assert engine.alive
    assert _text(engine.create_completion("hi", max_tokens=3, temperature=0))


def test_bad_job_fields_never_reach_the_engine_thread(engine):
    neighbour = engine.submit(engine.completion_job("Once upon a time", max_tokens=30, temperature=0))
    with pytest.raises(ValueError, match="out of range"):
        engine.submit(engine.completion_job([1, 2, 10**9], max_tokens=2))
    with pytest.raises(ParamError, match="suffix"):
        engine.submit(engine.completion_job("hi", suffix=5))
    with pytest.raises(TypeError, match="CompletionJob"):
        engine.submit({"prompt": "hi"})
    assert [s.finish_reason for s in neighbour.steps()][-1] == "length"  # the neighbour never noticed


def test_submit_raises_once_the_engine_thread_died(tiny_model_path):
    e = Engine(str(tiny_model_path), n_parallel=2, n_ctx=1024, n_threads=1)
    try:
        def broken(*a):
            raise RuntimeError("a bug in the engine thread")

        e._build_batch = broken
        handle = e.submit(e.completion_job("hi", max_tokens=5))
        with pytest.raises(RuntimeError, match="a bug"):
            list(handle.steps())  # the request in flight learns it (it does not hang)
        e._thread.join(10)
        assert not e.alive
        with pytest.raises(EngineClosed, match="engine thread stopped"):
            e.submit(e.completion_job("hi", max_tokens=5))
    finally:
        e.close()


def test_cancelled_queued_request_leaves_the_queue_at_once(tiny_model_path):
    # (the running request must not finish while the test queues more: 900 tiny-model tokens took 0.3 s
    # on a quiet machine)
    with Engine(str(tiny_model_path), n_parallel=1, n_ctx=16384, n_threads=1, max_queue=2) as e:
        running = e.submit(e.completion_job("hi", max_tokens=16000, temperature=0,
                                            logit_bias={151643: -100.0, 151645: -100.0}))  # no end of text
        steps = running.steps()  # kept: a dropped steps() iterator cancels its request
        next(steps)
        queued = [e.submit(e.completion_job("hi", max_tokens=2)) for _ in range(2)]
        with pytest.raises(QueueFull):
            e.submit(e.completion_job("hi", max_tokens=2))
        for q in queued:
            q.cancel()
        assert e.n_waiting == 0
        assert [s.finish_reason for s in queued[0].steps()] == ["cancelled"]
        e.submit(e.completion_job("hi", max_tokens=2))  # room again
        running.cancel()


def test_close_ends_running_requests_as_cancelled(mid_model_path):
    """close() aborts the decode in progress (long prompts: it is nearly always in one); the
    requests of that batch end as cancelled, not with 'decode was aborted'."""
    e = Engine(str(mid_model_path), n_parallel=16, n_ctx=16 * 1024, n_threads=1, prefill_chunk=256)
    events: list = [[] for _ in range(15)]
    for i in range(15):
        prompt = [(7 * i + j) % 200 + 1 for j in range(600)]
        e.submit(e.completion_job(prompt, max_tokens=1000, temperature=0), sink=events[i].append)
    deadline = time.monotonic() + 60
    while e.stats.prompt_tokens < 512 and time.monotonic() < deadline:
        time.sleep(0.005)
    e.close()
    last = [evs[-1] for evs in events]
    assert [getattr(ev, "finish_reason", repr(ev)) for ev in last] == ["cancelled"] * 15


def _alone_and_batched(engine: Engine, prompts: list, text=None, **kw) -> tuple[list, list]:
    text = text or _text
    alone = [text(engine.create_completion(p, **kw)) for p in prompts]
    out = [None] * len(prompts)

    def run(i):
        out[i] = text(engine.create_completion(prompts[i], **kw))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return alone, out


def test_seeded_sampling_alone_equals_batched_short_prompts(tiny_model_path):
    prompts = [f"Story number {i}: once upon a time" for i in range(4)]
    with Engine(str(tiny_model_path), n_parallel=4, n_ctx=2048, n_threads=1, flash_attn=True) as e:
        alone, batched = _alone_and_batched(e, prompts, max_tokens=24, temperature=0.9, seed=1234)
    assert batched == alone


def test_logprobs_alone_equal_batched_with_reused_prefixes(tiny_model_path):
    """Every generated token's logprob, bit for bit, whether its request ran alone or beside three
    others, each batched request starting from the prefix its solo run left in the cache."""
    prompts = [" ".join(f"word{(i * 31 + j) % 97}" for j in range(170 + 40 * i)) for i in range(4)]
    with Engine(str(tiny_model_path), n_parallel=4, n_ctx=8192, n_threads=1, flash_attn=True) as e:
        alone, batched = _alone_and_batched(e, prompts, max_tokens=24, temperature=0, logprobs=1,
                                            text=lambda r: r["choices"][0]["logprobs"]["token_logprobs"])
    assert all(len(a) == 24 for a in alone)
    assert batched == alone


def test_seeded_sampling_alone_equals_batched_long_prompts(tiny_model_path):
    """490-840-token prompts, each run alone first: batched, each reuses its retained prefix, whose
    cells its new tokens may precede in the cache. Its attention still sums in position order
    (vendor/patches/0012), so its logits, and its seeded samples, are those it had alone."""
    prompts = [" ".join(f"word{(i * 31 + j) % 97}" for j in range(170 + 40 * i)) for i in range(4)]
    with Engine(str(tiny_model_path), n_parallel=4, n_ctx=8192, n_threads=1, flash_attn=True) as e:
        alone, batched = _alone_and_batched(e, prompts, max_tokens=32, temperature=0.9, seed=1234)
    assert batched == alone
