"""Speculative decoding in the Engine's continuous batch (pybonsai.engine_speculation) and
`pybonsai serve --spec ngram` (a draft model: test_engine_draft_model): every request's output is
what the Engine gives without drafts (greedy and seeded, requests batched together), drafts are
verified and counted, a request can turn drafting off (speculative.n_max = 0), and what the Engine
cannot do is refused clearly."""
from __future__ import annotations

import httpx
import numpy as np
import pytest

from pybonsai import Engine
from pybonsai.llama_speculative import LlamaDraftModel
from server_process import openai_client, running_server

PROMPTS = ["a b c a b c a b c a b", "The quick brown fox jumps", "1 2 3 1 2 3 1 2 3 1"]


def _texts(engine, prompts, **kw):
    handles = [engine.submit(engine.completion_job(p, **kw)) for p in prompts]
    return ["".join(step.text for step in h.steps()) for h in handles]


class Planted(LlamaDraftModel):
    """Drafts each prompt's reference continuation (token ids), 70% of drafted tokens right."""
    num_pred_tokens = 6

    def __init__(self, refs):
        self.refs, self.rng, self.calls = refs, np.random.default_rng(0), 0

    def __call__(self, ids, /, max_tokens=None, **kwargs):
        self.calls += 1
        ids = list(ids)
        for prompt, cont in self.refs:
            if ids[:len(prompt)] == prompt:
                m = len(ids) - len(prompt)
                return np.array([t if self.rng.random() < 0.7 else (t + 1) % 1000
                                 for t in cont[m:m + (max_tokens or 6)]], dtype=np.intc)
        return np.array([], dtype=np.intc)


# Flash attention on: our CPU kernel gives a sequence the same logits whatever else the batch holds
# (drafts change the batches); llama.cpp's attention with it off rounds differently per batch shape.
FA = dict(flash_attn=True)


def _references(tiny_model_path, **kw):
    with Engine(str(tiny_model_path), n_parallel=3, n_ctx=1536, **FA) as plain:
        texts = _texts(plain, PROMPTS, **kw)
        refs = [(plain.llm.tokenize(p.encode()), list(plain.llm.tokenize(t.encode(), add_bos=False)))
                for p, t in zip(PROMPTS, texts)]
    return texts, refs


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1.1, top_k=0, top_p=1.0, min_p=0.0,
                                                                seed=5)])
def test_batched_output_identical_with_drafts(tiny_model_path, sampling):
    want, refs = _references(tiny_model_path, max_tokens=40, **sampling)
    with Engine(str(tiny_model_path), n_parallel=3, n_ctx=1536, draft_model=Planted(refs), draft_max=6,
                **FA) as spec:
        got = _texts(spec, PROMPTS, max_tokens=40, **sampling)
        drafted, accepted = spec.draft_counts
    assert got == want
    assert drafted > 0 and 0 < accepted < drafted


def test_a_request_can_turn_drafting_off(tiny_model_path):
    want, refs = _references(tiny_model_path, max_tokens=24, temperature=0)
    drafter = Planted(refs)
    with Engine(str(tiny_model_path), n_parallel=3, n_ctx=1536, draft_model=drafter, **FA) as spec:
        jobs = [spec.completion_job(p, max_tokens=24, temperature=0) for p in PROMPTS]
        for job in jobs:
            job.draft_max = 0
        texts = ["".join(s.text for s in spec.submit(job).steps()) for job in jobs]
        assert spec.draft_counts == (0, 0) and drafter.calls == 0
    assert texts == want


def test_what_the_engine_refuses(tiny_model_path):
    with pytest.raises(ValueError, match="ngram"):
        Engine(str(tiny_model_path), draft_model="eagle")
    with pytest.raises(ValueError, match="binds to a Llama"):
        Engine(str(tiny_model_path), draft_model=type("Bound", (LlamaDraftModel,), {
            "__call__": lambda self, ids, **kw: ids[:0], "bind": lambda self, llm: None})())
    with pytest.raises(ValueError, match="draft_max"):
        Engine(str(tiny_model_path), draft_model="ngram", draft_max=0)


def test_serve_spec_ngram(tiny_model_path, tmp_path):
    with running_server(tiny_model_path, tmp_path / "spec.log", "--spec", "ngram", "--draft-max", "4",
                        "--parallel", "2", "--n-ctx", "1024") as srv, openai_client(srv) as client:
        out = client.completions.create(model="tiny", prompt="a b a b a b a b", max_tokens=16, temperature=0)
        assert out.choices[0].finish_reason in ("length", "stop")
        off = client.completions.create(model="tiny", prompt="a b a b a b a b", max_tokens=16, temperature=0,
                                        extra_body={"speculative.n_max": 0})
        assert off.choices[0].text == out.choices[0].text
        bad = httpx.post(srv.base_url + "/v1/completions", json={"prompt": "x", "speculative.n_max": -1})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "speculative.n_max"
        metrics = httpx.get(srv.base_url + "/metrics").text
        assert "pybonsai_draft_tokens_total " in metrics and "pybonsai_draft_tokens_accepted_total " in metrics
