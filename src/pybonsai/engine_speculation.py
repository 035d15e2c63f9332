"""Speculative decoding inside the Engine's continuous batch (`Engine(draft_model=...)`,
`pybonsai serve --spec ngram`): a generating sequence's step carries its next token plus the
tokens a drafter proposes after it, every one with logits; each position is then sampled in order
with the request's own sampler and a drafted token is kept while it equals the sample, exactly as
pybonsai.speculative does for Llama (so a request's output is the same with or without drafts);
the KV cells of rejected drafts are dropped with seq_rm.

Drafting applies to requests on the step's fast path (no grammar, no logprobs: those are picked
beside the step) whose per-request cap (llama-server's `speculative.n_max`) is not 0. Each
sequence keeps its own acceptance estimate; the cost of a drafted token (relative to a step) is
estimated for the engine from the steps' timings: step time ~ a + b * tokens in the batch.

Drafters: prompt lookup ("ngram": pybonsai.llama_speculative.LlamaPromptLookupDecoding), any
LlamaDraftModel called per sequence, or a draft model (GGUFDraftModel: its path and n_gpu_layers)
run by pybonsai.engine_draft_model on a context of its own that drafts for all sequences together,
once per step; its time is added to the step's when the cost of a drafted token is fitted.
`draft_min` (llama-server's --draft-min) drops a draft shorter than that; `draft_p_min`
(--draft-p-min) stops a draft model's draft where its top probability falls below it."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .llama_speculative import GGUFDraftModel, LlamaDraftModel, LlamaPromptLookupDecoding
from .speculative import DraftLength

SEED_WEIGHT = 8.0     # tested drafts a new request's acceptance estimate starts from (the engine's)
ENGINE_DECAY = 0.98   # per settled round, for the engine's acceptance


@dataclass
class SlotDrafting:
    """One sequence's drafting state."""
    history: list    # the request's tokens so far (prompt + generated), what the drafter reads
    length: DraftLength
    cap: int         # the request's own limit (speculative.n_max)
    seq: int = 0     # the Engine slot's sequence (a draft model's sequence too)
    drafts: tuple = ()  # proposed for the step being decoded


class StepCost:
    """Online least squares of step seconds against batch tokens (exponentially forgotten)."""

    def __init__(self, decay: float = 0.98):
        self.decay = decay
        self.s = np.zeros(5)  # sum of w, n, t, n*n, n*t
        self.extra = 0.0      # seconds spent drafting for the next step (a draft model), added to it

    def add(self, n: int, seconds: float) -> None:
        seconds, self.extra = seconds + self.extra, 0.0
        self.s = self.decay * self.s + np.array([1.0, n, seconds, n * n, n * seconds])

    def marginal(self) -> Optional[float]:
        """b / (a + b): one more token's cost as a fraction of a one-token step, once the steps
        seen vary enough in size to tell."""
        w, n, t, nn, nt = self.s
        var = w * nn - n * n
        if w < 8 or var < 1e-9 * max(w * nn, 1.0) or var / (w * w) < 0.25:
            return None
        b = (w * nt - n * t) / var
        a = (t - b * n) / w
        if b <= 0 or a + b <= 0:
            return None
        return float(min(2.0, max(0.01, b / max(a + b, 1e-9))))


class EngineSpeculation:
    def __init__(self, drafter: Any, max_len: int, min_len: int = 0, p_min: float = 0.0):
        self.drafter = drafter
        self.max_len = max_len
        self.min_len = min_len
        self.p_min = p_min
        self.model: Optional[Any] = None  # a draft model's BatchedDraftModel, once bound
        self.cost = StepCost()
        self.drafted = 0
        self.accepted = 0
        self._hits = 0.0   # the engine's recent drafts accepted / tested (decayed), a new request's start
        self._tests = 0.0

    @classmethod
    def make(cls, drafter: Any, max_len: int, min_len: int = 0, p_min: float = 0.0) -> Optional["EngineSpeculation"]:
        if drafter is None:
            return None
        if not isinstance(max_len, int) or isinstance(max_len, bool) or not 1 <= max_len <= 32:
            raise ValueError(f"draft_max must be an int in [1, 32], got {max_len!r}")
        if not isinstance(min_len, int) or isinstance(min_len, bool) or not 0 <= min_len <= max_len:
            raise ValueError(f"draft_min must be an int in [0, draft_max], got {min_len!r}")
        if isinstance(p_min, bool) or not isinstance(p_min, (int, float)) or not 0.0 <= p_min <= 1.0:
            raise ValueError(f"draft_p_min must be a probability in [0, 1], got {p_min!r}")
        if isinstance(drafter, str):
            if drafter != "ngram":
                raise ValueError(f"draft_model must be 'ngram', a GGUFDraftModel or a drafter object, got {drafter!r}")
            drafter = LlamaPromptLookupDecoding(max_ngram_size=3, num_pred_tokens=max_len)
        if not callable(drafter):
            raise TypeError(f"draft_model must be a drafter (pybonsai.llama_speculative), got {type(drafter).__name__}")
        if isinstance(drafter, GGUFDraftModel):
            max_len = min(max_len, drafter.num_pred_tokens)
            min_len = min(min_len, max_len)
            if not os.path.isfile(drafter.model_path):
                raise ValueError(f"the draft model {drafter.model_path!r} is not a file")
        elif hasattr(drafter, "bind"):
            raise ValueError("a drafter that binds to a Llama is not supported by the Engine: use 'ngram', "
                             "a GGUFDraftModel or a plain LlamaDraftModel")
        return cls(drafter, max_len, min_len, float(p_min))

    def bind(self, engine: Any, n_threads: int, n_threads_batch: int) -> None:
        """Load a draft model for `engine` (after its context exists): ValueError for another
        vocabulary. Nothing to do for other drafters, or where drafting never applies."""
        if not isinstance(self.drafter, GGUFDraftModel) or engine.llm.is_recurrent:
            return
        from .engine_draft_model import BatchedDraftModel
        kw = self.drafter.llama_kwargs
        ctx = engine._ctx
        self.model = BatchedDraftModel(self.drafter.model_path, engine.llm, n_parallel=engine.n_parallel,
                                       n_ctx=ctx.n_ctx, n_batch=ctx.n_batch, n_threads=kw.get("n_threads") or n_threads,
                                       n_threads_batch=kw.get("n_threads_batch") or n_threads_batch,
                                       n_gpu_layers=kw.get("n_gpu_layers", engine.n_gpu_layers), p_min=self.p_min,
                                       verbose=kw.get("verbose", False))

    def close(self) -> None:
        if self.model is not None:
            self.model.close()
            self.model = None

    def start(self, prompt_tokens: list, cap: Optional[int], seq: int = 0) -> SlotDrafting:
        cap = self.max_len if cap is None else min(cap, self.max_len)
        length = DraftLength(self.max_len, measure=False)
        if self._tests > 0:  # the acceptance other requests saw: a request beside others otherwise
            length.seed(self._hits / self._tests, SEED_WEIGHT)  # starts too unsure to draft
        return SlotDrafting(history=list(prompt_tokens), length=length, cap=cap, seq=seq)

    def propose_all(self, states: list, budget: int, n_rows: int = 0) -> None:
        """Set `drafts` for this step of every drafting sequence: `states` holds (SlotDrafting,
        room in its sequence); `budget` is the batch room for drafts, shared in order; `n_rows`:
        the generating sequences in the step (each one's drafts slow the others' step too)."""
        cost = self.cost.marginal()
        wants = []
        others = max(0, n_rows - 1)
        for state, room in states:
            if cost is not None:
                state.length.cost = cost
            k = state.length.next(others)
            k = min(max(k, self.min_len) if k else 0, state.cap, room, budget)  # draft_min: at least that
            state.drafts = ()
            if k <= 0 or k < self.min_len:
                continue
            budget -= k
            wants.append((state, k))
        if self.model is not None:
            t0 = time.monotonic()
            got = self.model.draft([(state.seq, state.history, k) for state, k in wants]) if wants else {}
            self.cost.extra += time.monotonic() - t0
            for state, k in wants:
                state.drafts = tuple(got.get(state.seq, ()))[:k]
        else:
            for state, k in wants:
                state.drafts = self._call(state, k)
        for state, _ in wants:
            if len(state.drafts) < self.min_len:
                state.drafts = ()

    def _call(self, state: SlotDrafting, k: int) -> tuple:
        ids = np.asarray(state.history, dtype=np.intc)
        out = self.drafter(ids, max_tokens=k) if isinstance(self.drafter, LlamaDraftModel) else self.drafter(ids)
        return tuple(int(t) for t in np.asarray(out).reshape(-1)[:k])

    def settle(self, state: SlotDrafting, accepted: int) -> None:
        drafted = len(state.drafts)
        if drafted:
            state.length.record(drafted, accepted, 0.0)
            self.drafted += drafted
            self.accepted += accepted
            self._hits = ENGINE_DECAY * self._hits + accepted
            self._tests = ENGINE_DECAY * self._tests + accepted + (1 if accepted < drafted else 0)
        state.drafts = ()
