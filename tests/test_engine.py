"""pybonsai.Engine: many sequences in one context, continuous batching, per-request sampling."""
from __future__ import annotations

import threading
import time

import pytest

from pybonsai import Engine, Llama
from pybonsai.engine import QueueFull

PROMPTS = [f"Story number {i}: once upon a time" for i in range(8)]
NO_EOS = {151643: -100.0, 151645: -100.0}  # the Qwen end-of-text tokens: generate max_tokens


@pytest.fixture(scope="module")
def engine(tiny_model_path):
    with Engine(str(tiny_model_path), n_parallel=8, n_ctx=4096, n_threads=2) as e:
        yield e


@pytest.fixture(scope="module")
def reference(tiny_model_path):
    """Greedy texts from the plain Llama (one sequence, one request at a time), with the Engine's
    attention (flash attention on, the Engine's default on the CPU)."""
    with Llama(str(tiny_model_path), n_ctx=512, n_threads=2, flash_attn=True) as llm:
        return [llm.create_completion(p, max_tokens=24, temperature=0)["choices"][0]["text"] for p in PROMPTS]


def _text(result) -> str:
    return result["choices"][0]["text"]


def test_alone_matches_llama(engine, reference):
    assert engine.n_ctx_per_seq == 512
    assert [_text(engine.create_completion(p, max_tokens=24, temperature=0)) for p in PROMPTS] == reference


def test_same_greedy_text_among_seven_others(engine, reference):
    """Flash attention on (the default) and every prompt already retained from the test above: the
    requests start from reused prefixes, batched, and give the texts of one at a time."""
    out = [None] * len(PROMPTS)
    steps_seen = engine.stats.generated_tokens
    reused = engine.stats.prefix_reused_tokens

    def run(i):
        out[i] = _text(engine.create_completion(PROMPTS[i], max_tokens=24, temperature=0))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == reference
    assert engine.stats.generated_tokens - steps_seen == 24 * len(PROMPTS)
    assert engine.stats.prefix_reused_tokens - reused >= 8 * len(PROMPTS)


def test_streaming_seed_stop_logprobs(engine, tiny_model_path, reference):
    chunks = list(engine.create_completion(PROMPTS[0], max_tokens=24, temperature=0, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == reference[0]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    a, b = (_text(engine.create_completion(PROMPTS[1], max_tokens=16, temperature=0.9, seed=7)) for _ in range(2))
    assert a == b
    stop = reference[2][5:9]
    cut = engine.create_completion(PROMPTS[2], max_tokens=24, temperature=0, stop=[stop])
    assert _text(cut) == reference[2][:reference[2].index(stop)] and cut["choices"][0]["finish_reason"] == "stop"
    with Llama(str(tiny_model_path), n_ctx=512, n_threads=2, flash_attn=True) as llm:
        want = llm.create_completion(PROMPTS[3], max_tokens=4, temperature=0, logprobs=2)["choices"][0]["logprobs"]
    got = engine.create_completion(PROMPTS[3], max_tokens=4, temperature=0, logprobs=2)["choices"][0]["logprobs"]
    assert got["tokens"] == want["tokens"]
    assert got["token_logprobs"] == pytest.approx(want["token_logprobs"], abs=1e-4)


def test_chat_and_usage(engine):
    result = engine.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=5, temperature=0,
                                           enable_thinking=False)
    assert result["object"] == "chat.completion"
    assert result["usage"]["completion_tokens"] <= 5 and result["usage"]["prompt_tokens"] > 5


def test_cancel_frees_the_slot(engine):
    handle = engine.submit(engine.completion_job(PROMPTS[0], max_tokens=400, temperature=0))
    steps = handle.steps()
    next(steps)  # generating
    assert engine.n_active == 1
    handle.cancel()
    rest = list(steps)
    assert rest[-1].finish_reason == "cancelled"
    deadline = time.monotonic() + 10
    while engine.n_active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.n_active == 0
    assert handle.usage.completion_tokens < 400
    # the freed sequence is clean: the same prompt gives the same text as before
    again = engine.create_completion(PROMPTS[0], max_tokens=24, temperature=0)
    assert again["choices"][0]["finish_reason"] == "length"


def test_more_requests_than_slots_and_long_prompts(tiny_model_path):
    """More requests than sequences queue and all finish; a prompt longer than prefill_chunk is
    decoded in several steps while the others keep generating."""
    long_prompt = " ".join(["word"] * 300)
    with Engine(str(tiny_model_path), n_parallel=2, n_ctx=2048, n_threads=2, prefill_chunk=64) as e, \
            Llama(str(tiny_model_path), n_ctx=1024, n_threads=2, flash_attn=True) as llm:
        want = [_text(llm.create_completion(p, max_tokens=12, temperature=0)) for p in (long_prompt, *PROMPTS[:3])]
        handles = [e.submit(e.completion_job(p, max_tokens=12, temperature=0)) for p in (long_prompt, *PROMPTS[:3])]
        got = ["".join(s.text for s in h.steps()) for h in handles]
        assert got == want
        assert e.stats.prompt_tokens >= 300


def test_bad_requests_raise_and_queue_bound(tiny_model_path):
    # (a context long enough that the running request cannot finish while the test submits more,
    # even on a loaded machine)
    with Engine(str(tiny_model_path), n_parallel=1, n_ctx=16384, n_threads=2, max_queue=1) as e:
        with pytest.raises(ValueError, match="exceed context window of 16384"):
            e.completion_job(" ".join(["word"] * 17000))
        with pytest.raises(ValueError, match="temperature"):
            e.submit(e.completion_job("hi", temperature=float("nan")))
        running = e.submit(e.completion_job("hi", max_tokens=16000, temperature=0, logit_bias=NO_EOS))
        steps = running.steps()  # kept: a dropped steps() iterator cancels its request
        next(steps)
        waiting = e.submit(e.completion_job("hi", max_tokens=2))
        with pytest.raises(QueueFull):
            e.submit(e.completion_job("hi", max_tokens=2))
        running.cancel()
        assert [s.finish_reason for s in waiting.steps()][-1] == "length"
    with pytest.raises(ValueError, match="n_parallel"):
        Engine(str(tiny_model_path), n_parallel=0)
