"""Speculative decoding in Llama (pybonsai.speculative): output exactly that of plain decoding
(greedy, seeded sampling, logprobs, stop strings, grammar, logits processors, streaming) whatever
the drafts, the sampling distribution unchanged (a chi-square test that a planted bug fails), the
rejected drafts' KV cells dropped, the draft length adapting, draft models of another vocabulary
refused, and models with a recurrent state left to plain decoding."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from pybonsai import Llama, LlamaGrammar, UnsupportedParameterWarning
from pybonsai import speculative, synth
from pybonsai.llama_speculative import GGUFDraftModel, LlamaDraftModel, LlamaPromptLookupDecoding

PROMPTS = ["The quick brown fox", "a b c a b c a b c", "Once upon a time, in a land far away,", "1, 2, 3, 4,"]


class PlantedDrafter(LlamaDraftModel):
    """Proposes the reference continuation `cont` of `prompt_len` prompt tokens, each drafted token
    replaced by a wrong one with probability 1 - alpha (seeded)."""

    def __init__(self, prompt_len: int, cont: list, alpha: float, num_pred_tokens: int, n_vocab: int, seed: int = 0):
        self.prompt_len, self.cont, self.alpha, self.num_pred_tokens = prompt_len, cont, alpha, num_pred_tokens
        self.n_vocab, self.rng = n_vocab, np.random.default_rng(seed)

    def __call__(self, input_ids, /, max_tokens=None, **kwargs):
        m = len(input_ids) - self.prompt_len
        out = self.cont[m:m + (max_tokens or self.num_pred_tokens)]
        return np.array([t if self.rng.random() < self.alpha else (t + 1 + int(self.rng.integers(50))) % self.n_vocab
                         for t in out], dtype=np.intc)


def _fixed(llm: Llama, k: int) -> Llama:
    llm._speculation.length = speculative.DraftLength(k, adaptive=False)  # always draft k (exactness tests)
    return llm


def _tokens(llm, prompt, n, **kw):
    return list(itertools.islice(llm.generate(llm.tokenize(prompt.encode()), **kw), n))


@pytest.fixture(scope="module")
def plain(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=512) as llm:
        yield llm


@pytest.mark.parametrize("alpha,k", [(1.0, 4), (0.7, 3), (0.3, 8), (0.0, 2)])
def test_greedy_identical_with_planted_drafts(plain, tiny_model_path, alpha, k):
    for seed, prompt in enumerate(PROMPTS):
        want = _tokens(plain, prompt, 40, temp=0)
        n_prompt = len(plain.tokenize(prompt.encode()))
        drafter = PlantedDrafter(n_prompt, want + [0] * 16, alpha, k, plain.n_vocab(), seed=seed)
        with Llama(tiny_model_path, n_ctx=512, draft_model=drafter) as spec:
            got = _tokens(_fixed(spec, k), prompt, 40, temp=0)
            stats = spec._speculation.stats
        assert got == want, (prompt, alpha)
        assert stats["drafted"] > 0
        if alpha == 1.0:  # all accepted but the round the consumer left early
            assert stats["drafted"] - stats["accepted"] <= k
        if alpha == 0.0:
            assert stats["accepted"] < stats["drafted"] / 4


def test_seeded_sampling_and_logprobs_identical(plain, tiny_model_path):
    kw = dict(max_tokens=32, temperature=1.2, top_k=0, top_p=1.0, min_p=0.0, logprobs=3)
    for seed, prompt in enumerate(PROMPTS):
        want = plain.create_completion(prompt, seed=seed, **kw)["choices"][0]
        cont = _tokens(plain, prompt, 32, temp=1.2, top_k=0, top_p=1.0, min_p=0.0, seed=seed)  # the same draws
        n_prompt = len(plain.tokenize(prompt.encode()))
        with Llama(tiny_model_path, n_ctx=512, draft_model=PlantedDrafter(n_prompt, cont, 0.6, 4, plain.n_vocab(),
                                                                          seed=seed)) as spec:
            got = _fixed(spec, 4).create_completion(prompt, seed=seed, **kw)["choices"][0]
            assert spec._speculation.stats["accepted"] > 0
        assert got["text"] == want["text"]
        assert got["logprobs"]["tokens"] == want["logprobs"]["tokens"]
        assert np.allclose(got["logprobs"]["token_logprobs"], want["logprobs"]["token_logprobs"], atol=1e-5)
        assert len(got["logprobs"]["top_logprobs"]) == len(want["logprobs"]["top_logprobs"])
        for g, w in zip(got["logprobs"]["top_logprobs"], want["logprobs"]["top_logprobs"]):
            assert g.keys() == w.keys() and all(abs(g[k] - w[k]) <= 1e-5 for k in g)


def test_stop_grammar_processor_and_streaming_unchanged(plain, tiny_model_path):
    grammar = LlamaGrammar.from_string('root ::= ("yes" | "no" | "maybe") (" " ("yes" | "no" | "maybe"))*')
    boost = lambda ids, scores: scores + (np.arange(scores.size) % 7 == 0) * 3.0  # noqa: E731
    cases = [dict(grammar=grammar), dict(logits_processor=boost), dict(stop=["e"]), dict(stream=True)]
    for case in cases:
        kw = dict(max_tokens=24, temperature=0.9, seed=11, **case)
        want = plain.create_completion("Answer:", **kw)
        with Llama(tiny_model_path, n_ctx=512, draft_model=LlamaPromptLookupDecoding(num_pred_tokens=3)) as spec:
            _fixed(spec, 3)
            got = spec.create_completion("Answer:", **kw)
            if case.get("stream"):
                want, got = ["".join(c["choices"][0]["text"] for c in x) for x in (want, got)]
            else:
                want, got = want["choices"][0]["text"], got["choices"][0]["text"]
        assert got == want, case


def test_rejected_drafts_leave_no_kv_cells(plain, tiny_model_path):
    prompt = "The quick brown fox"
    want = _tokens(plain, prompt, 30, temp=0)
    n_prompt = len(plain.tokenize(prompt.encode()))
    drafter = PlantedDrafter(n_prompt, want + [0] * 16, 0.5, 6, plain.n_vocab())
    with Llama(tiny_model_path, n_ctx=512, draft_model=drafter) as spec:
        for stop_after in (5, 17, 30):  # the consumer stops mid-round too
            got = _tokens(_fixed(spec, 6), prompt, stop_after, temp=0)
            assert got == want[:stop_after]
            assert spec.n_tokens == n_prompt + stop_after - 1 and spec.input_ids[:spec.n_tokens].tolist() == \
                plain.tokenize(prompt.encode()) + got[:-1]
            spec.eval([got[-1]])  # a cell left behind would change these logits
            plain.reset()
            plain.eval(plain.tokenize(prompt.encode()) + got)
            assert np.array_equal(spec.last_logits, plain.last_logits)


def test_sampling_distribution_is_the_models(tiny_model_path, monkeypatch):
    """Position 2 after a forced first token, top-8 at temperature 1, a drafter that always proposes
    the least likely of the 8: the emitted tokens follow the model's distribution (chi-square over
    600 seeded draws); a planted bug (a rejected draft's position drawn again, instead of emitting
    the sample) fails the same test."""
    with Llama(tiny_model_path, n_ctx=64) as ref:
        prompt = ref.tokenize(b"Pick one:")
        forced = 1000
        ref.eval(prompt + [forced])
        logits = ref.last_logits.astype(np.float64)
    top = np.argsort(logits)[-8:]
    p = np.exp(logits[top] - logits[top].max())
    p /= p.sum()
    draft = int(top[np.argmin(p)])
    force = lambda ids, s: np.where(np.arange(s.size) == forced, 0.0, -np.inf).astype(np.float32) \
        if len(ids) == len(prompt) else s  # noqa: E731

    class Always(LlamaDraftModel):
        num_pred_tokens = 1

        def __call__(self, ids, /, **kw):
            return np.array([draft], dtype=np.intc)

    def chi2() -> float:
        with Llama(tiny_model_path, n_ctx=64, draft_model=Always()) as spec:
            _fixed(spec, 1)
            counts = np.zeros(len(top))
            for seed in range(600):
                out = list(itertools.islice(spec.generate(prompt, temp=1.0, top_k=8, top_p=1.0, min_p=0.0, seed=seed,
                                                          logits_processor=force), 2))
                counts[list(top).index(out[1])] += 1
            assert spec._speculation.stats["drafted"] >= 600
        expected = p * counts.sum()
        return float(((counts - expected) ** 2 / expected).sum())

    assert chi2() < 24.3  # chi-square, 7 degrees of freedom, p = 0.001
    original = speculative._pick

    def resample_rejected(llm, sampler, lp, rows, i, history):
        token = original(llm, sampler, lp, rows, i, history)
        return original(llm, sampler, lp, rows, i, history) if i == 0 and rows is not None and token != draft else token
    monkeypatch.setattr(speculative, "_pick", resample_rejected)
    assert chi2() > 24.3


def test_gguf_draft_model(plain, tiny_model_path, tmp_path):
    want = _tokens(plain, "Hello there", 30, temp=0)
    with Llama(tiny_model_path, n_ctx=512, draft_model=GGUFDraftModel(tiny_model_path, num_pred_tokens=4)) as spec:
        assert _tokens(_fixed(spec, 4), "Hello there", 30, temp=0) == want
        stats = spec._speculation.stats
        assert stats["drafted"] > 0 and stats["drafted"] - stats["accepted"] <= 4  # the same model drafts
    other = synth.write_model(tmp_path / "neox.gguf", "tiny-mamba")  # GPT-NeoX's vocabulary
    with pytest.raises(ValueError, match="vocabulary"):
        Llama(tiny_model_path, n_ctx=128, draft_model=GGUFDraftModel(other))


def test_recurrent_models_decode_plainly(tiny_hybrid_model_path):
    with pytest.warns(UnsupportedParameterWarning, match="recurrent"):
        llm = Llama(tiny_hybrid_model_path, n_ctx=128, draft_model=LlamaPromptLookupDecoding())
    with llm:
        assert llm._speculation is None
        assert llm.create_completion("Hi", max_tokens=4, temperature=0)["choices"][0]["text"] is not None


def test_draft_length_adapts():
    off = speculative.DraftLength(8, cost=0.2)
    off.record(0, 0, 0.1)  # a plain step: 0.1 s
    for _ in range(30):
        k = off.next()
        off.record(k, 0, 0.1 * (1 + 0.2 * k)) if k else off.record(0, 0, 0.1)
    assert off.best() == 0  # nothing is ever accepted: drafting turns off ...
    assert 1 in [off.next() for _ in range(speculative.PROBE_EVERY + 1)]  # ... and probes now and then
    on = speculative.DraftLength(8, cost=0.2)
    on.record(0, 0, 0.1)
    for _ in range(30):
        k = on.next()
        on.record(k, k, 0.1 * (1 + 0.2 * k)) if k else on.record(0, 0, 0.1)
    assert on.best() == 8
    expensive = speculative.DraftLength(8, cost=0.2)
    expensive.record(0, 0, 0.1)
    for _ in range(30):
        k = expensive.next()
        expensive.record(k, k // 2, 0.1 * (1 + 2.0 * k)) if k else expensive.record(0, 0, 0.1)
    assert expensive.cost > 0.5 and expensive.best() == 0  # verifying costs as much as decoding: off


def test_draft_length_follows_a_machine_that_slows_down():
    """Drafting one token is worth it here (acceptance 0.6; a batch of two costs 1.15 steps, longer
    ones 1 + 0.35 per draft), also after the machine slows to 1.4x its speed at round 10: round
    costs are judged against a recent plain step, not the one measured before the slowdown (which
    turned drafting off for 16 rounds, until a probe), and k = 1 by its own measured cost."""
    length = speculative.DraftLength(8, cost=0.25)
    plain = 0
    for i in range(120):
        k = length.next()
        speed = 1.0 if i < 10 else 1.4
        cost = 1.0 if k == 0 else 1.15 if k == 1 else 1.0 + 0.35 * k
        accepted = min(k, 1 if i % 5 < 3 else 0)  # the first draft accepted 3 rounds in 5
        length.record(k, accepted, 0.1 * speed * cost)
        plain += 10 <= i < 60 and k == 0
    assert length.best() == 1
    assert plain <= 6  # the re-measures (every REMEASURE_EVERY rounds) and a round or two after the change


def test_one_slow_round_does_not_keep_a_draft_length_out():
    """A length's measured cost is used for FORGET_AFTER rounds only: a round of 8 drafts that was
    slow once (a spike: 41 steps instead of 2.6) is judged by the slope again later, so the best
    length, 8 when every draft is accepted, comes back."""
    length = speculative.DraftLength(8, cost=0.2)
    spiked, last = False, []
    for i in range(200):
        k = length.next()
        cost = 1.0 + 0.2 * k
        if k == 8 and not spiked:
            cost, spiked = 1.0 + 5.0 * k, True
        length.record(k, k, 0.1 * cost)
        last.append(k)
    assert spiked and 8 in last[-50:] and length.best() == 8


def test_draft_length_counts_the_other_sequences_of_the_step():
    """In the Engine's batch a sequence's drafts slow every sequence's step: with acceptance 0.6
    and a drafted token costing 0.3 of a step, drafting one token pays for a sequence alone
    (1.6 tokens for 1.3 steps) but not beside three others (4.6 tokens for 2.2 steps, against 4
    for 1.9 without); at acceptance 1 drafting pays in both."""
    length = speculative.DraftLength(8, cost=0.3, measure=False)
    length._hits, length._tests = 30.0, 50.0
    assert length.best() == 1 and length.best(others=3) == 0
    length._hits = 50.0
    assert length.best() >= 4 and length.best(others=3) >= 4


def test_bad_drafters(tiny_model_path):
    with pytest.raises(TypeError, match="draft_model"):
        Llama(tiny_model_path, n_ctx=64, draft_model="draft.gguf")

    class OutOfRange(LlamaDraftModel):
        num_pred_tokens = 2

        def __call__(self, ids, /, **kw):
            return np.array([10**9], dtype=np.intc)
    with Llama(tiny_model_path, n_ctx=64, draft_model=OutOfRange()) as llm:
        _fixed(llm, 2)
        with pytest.raises(ValueError, match="outside the vocabulary"):
            _tokens(llm, "Hi", 3, temp=0)


def test_greedy_identical_on_the_mid_model(mid_model_path):
    """A second model (4 layers of 1024, a byte-level vocabulary): bigger matrices, other kernel shapes."""
    with Llama(mid_model_path, n_ctx=256, n_threads=1) as ref:
        for seed, prompt in enumerate(["hello world, hello world, hello", "abcabcabc"]):
            want = _tokens(ref, prompt, 24, temp=0)
            n_prompt = len(ref.tokenize(prompt.encode()))
            drafter = PlantedDrafter(n_prompt, want + [0] * 8, 0.6, 4, ref.n_vocab(), seed=seed)
            with Llama(mid_model_path, n_ctx=256, n_threads=1, draft_model=drafter) as spec:
                assert _tokens(_fixed(spec, 4), prompt, 24, temp=0) == want
                assert spec._speculation.stats["accepted"] > 0
