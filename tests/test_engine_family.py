"""The Engine (and once the server) with the rest of the Bonsai family: the Qwen3.5 hybrid of
Bonsai 27B, whose Gated DeltaNet layers keep a recurrent state per sequence (one state cell per
Engine slot: llama.cpp sizes the hybrid memory's recurrent part by n_seq_max = n_parallel), and
ternary Q2_0 weights. A request's greedy text must be what it is alone, whatever it is batched
with and whichever slot it gets, also a slot that an earlier or a cancelled request used."""
from __future__ import annotations

import threading
import time

import numpy as np
import openai
import pytest

from pybonsai import Engine, Llama, kv_cache
from server_process import ServerProcess

PROMPTS = [f"Story number {i}: once upon a time" for i in range(6)] + [" ".join(["word"] * 70)]


def _text(result) -> str:
    return result["choices"][0]["text"]


def _reference(path, prompts, max_tokens, flash_attn):
    """Greedy texts from the plain Llama, one request at a time, with the Engine's attention."""
    with Llama(str(path), n_ctx=512, n_threads=2, flash_attn=flash_attn) as llm:
        return [_text(llm.create_completion(p, max_tokens=max_tokens, temperature=0)) for p in prompts]


def _concurrently(engine, prompts, max_tokens):
    out = [None] * len(prompts)

    def run(i):
        out[i] = _text(engine.create_completion(prompts[i], max_tokens=max_tokens, temperature=0))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


@pytest.fixture(scope="module")
def hybrid_reference(tiny_hybrid_model_path):
    return _reference(tiny_hybrid_model_path, PROMPTS, 16, flash_attn=True)


@pytest.fixture(scope="module")
def hybrid_engine(tiny_hybrid_model_path):
    # a 32-token prefill chunk: the long prompt is decoded over several steps, beside other sequences
    with Engine(str(tiny_hybrid_model_path), n_parallel=4, n_ctx=2048, n_threads=2, prefill_chunk=32) as e:
        yield e


def test_hybrid_alone_and_slot_reuse(hybrid_engine, hybrid_reference):
    """One request at a time: every request after the first reuses sequence 0, whose recurrent
    state (and KV cells) the previous request left behind and seq_rm(seq, 0, -1) cleared."""
    assert hybrid_engine.n_ctx_per_seq == 512
    assert [_text(hybrid_engine.create_completion(p, max_tokens=16, temperature=0)) for p in PROMPTS] \
        == hybrid_reference


def test_hybrid_concurrent_requests_equal_alone(hybrid_engine, hybrid_reference):
    """Seven requests on four sequences: queued requests take freed slots; prompts are prefilled
    while other sequences decode; each text equals the request run alone."""
    seen = hybrid_engine.stats.generated_tokens
    assert _concurrently(hybrid_engine, PROMPTS, 16) == hybrid_reference
    assert hybrid_engine.stats.generated_tokens - seen == 16 * len(PROMPTS)


def test_hybrid_cancelled_request_leaves_a_clean_slot(hybrid_engine, hybrid_reference):
    """A request cancelled mid-generation (its recurrent state is mid-sequence) frees its slot;
    the next request there starts from a zero state."""
    handle = hybrid_engine.submit(hybrid_engine.completion_job(PROMPTS[6], max_tokens=400, temperature=0))
    steps = handle.steps()
    for _ in range(3):
        next(steps)
    handle.cancel()
    assert list(steps)[-1].finish_reason == "cancelled"
    deadline = time.monotonic() + 10
    while hybrid_engine.n_active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hybrid_engine.n_active == 0
    assert _text(hybrid_engine.create_completion(PROMPTS[0], max_tokens=16, temperature=0)) == hybrid_reference[0]


def test_ternary_engine(ternary_tiny_model_path):
    """Q2_0 weights through the Engine: alone and two at a time, the same greedy texts as Llama."""
    prompts = PROMPTS[:3]
    want = _reference(ternary_tiny_model_path, prompts, 6, flash_attn=True)
    with Engine(str(ternary_tiny_model_path), n_parallel=2, n_ctx=1024, n_threads=2) as e:
        assert [_text(e.create_completion(p, max_tokens=6, temperature=0)) for p in prompts] == want
        assert _concurrently(e, prompts, 6) == want


def test_hybrid_through_the_server(tiny_hybrid_model_path, hybrid_reference, tmp_path):
    """`pybonsai serve` with the hybrid model, driven by the real openai client, four at a time."""
    srv = ServerProcess(tiny_hybrid_model_path, "--parallel", "4", "--n-ctx", "2048",
                        log=tmp_path / "server.log")
    try:
        with openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0, timeout=120) as client:
            out = [None] * 4

            def run(i):
                r = client.completions.create(model="tiny", prompt=PROMPTS[i], max_tokens=16, temperature=0)
                out[i] = r.choices[0].text

            threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert out == hybrid_reference[:4]
            stream = client.completions.create(model="tiny", prompt=PROMPTS[5], max_tokens=16, temperature=0,
                                               stream=True)
            assert "".join(c.choices[0].text for c in stream) == hybrid_reference[5]
    finally:
        assert srv.terminate() == 0, srv.log()


def _schedule(ctx, prompts, slots, max_tokens=16, chunk=32):
    """The Engine's batching, deterministic: `slots` sequences, prompts admitted in order as
    slots free up (seq_rm on release), one decode token per generating sequence plus prompt
    chunks each step. Returns each request's logits rows (after its prompt, then each token)."""
    queue, logs = list(range(len(prompts))), [[] for _ in prompts]
    active = {}  # seq -> [request, pending prompt, next position, last token]
    while queue or active:
        for seq in range(slots):
            if seq not in active and queue:
                r = queue.pop(0)
                active[seq] = [r, list(prompts[r]), 0, None]
        toks, pos, seqs, want, rows = [], [], [], [], []
        for seq, (r, pending, p, last) in active.items():
            if not pending:
                rows.append((seq, len(toks)))
                toks.append(last)
                pos.append(p)
                seqs.append(seq)
                want.append(True)
        budget = chunk
        for seq, st in active.items():
            if st[1] and budget > 0:
                part = st[1][:budget]
                del st[1][:len(part)]
                budget -= len(part)
                toks += part
                pos += range(st[2], st[2] + len(part))
                seqs += [seq] * len(part)
                want += [False] * len(part)
                st[2] += len(part)
                if not st[1]:
                    want[-1] = True
                    rows.append((seq, len(toks) - 1))
        ctx.decode_batch(toks, pos, seqs, want)
        for seq, row in rows:
            st = active[seq]
            logits = np.array(ctx.logits_ith(row))
            logs[st[0]].append(logits)
            if st[3] is not None:  # a decode row: the token it fed is now in the sequence
                st[2] += 1
            st[3] = int(np.argmax(logits))
            if len(logs[st[0]]) == max_tokens:
                ctx.seq_rm(seq, 0, -1)
                del active[seq]
    return logs


FLASH = kv_cache.FLASH_ATTN_ENABLED  # what Engine() picks for a hybrid (flash_attn=None)


def test_hybrid_logits_do_not_depend_on_where_other_sequences_lie(tiny_hybrid_model_path):
    """The batches of a concurrent run that once gave a different greedy text (requests 4 and 5
    take the slots freed by 0 and 1; 2 and 3 finish, the long prompt refills slot 2), replayed
    deterministically with the Engine's default attention for a hybrid: every request's logits
    are the same bits as alone. (With llama.cpp's non-flash attention and an f16 KV cache they
    are not: request 5 moved by 0.03 at its tenth token, enough to change its greedy text.)"""
    from pybonsai import _core

    with Llama(str(tiny_hybrid_model_path), vocab_only=True) as vocab:
        prompts = [vocab.tokenize(p.encode()) for p in PROMPTS]
    model = _core.Model(str(tiny_hybrid_model_path), n_gpu_layers=0, vocab_only=False, use_mmap=True,
                        progress=None)

    def context(n_seq):
        return _core.Context(model, n_ctx=2048, n_batch=512, n_ubatch=512, n_threads=2, n_threads_batch=2,
                             flash_attn=FLASH, type_k=1, type_v=1, n_seq_max=n_seq, kv_unified=True)

    try:
        ctx = context(4)
        together = _schedule(ctx, prompts, slots=4)
        ctx.close()
        for i, prompt in enumerate(prompts):
            ctx = context(1)
            alone = _schedule(ctx, [prompt], slots=1)[0]
            ctx.close()
            assert all(np.array_equal(a, b) for a, b in zip(alone, together[i])), i
    finally:
        model.close()
