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

Drafters: prompt lookup (pybonsai.llama_speculative.LlamaPromptLookupDecoding). A draft model
(GGUFDraftModel) keeps one context for one sequence, so the Engine refuses it for now."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding
from .speculative import DraftLength


@dataclass
class SlotDrafting:
    """One sequence's drafting state."""
    history: list    # the request's tokens so far (prompt + generated), what the drafter reads
    length: DraftLength
    cap: int         # the request's own limit (speculative.n_max)
    drafts: tuple = ()  # proposed for the step being decoded


class StepCost:
    """Online least squares of step seconds against batch tokens (exponentially forgotten)."""

    def __init__(self, decay: float = 0.98):
        self.decay = decay
        self.s = np.zeros(5)  # sum of w, n, t, n*n, n*t

    def add(self, n: int, seconds: float) -> None:
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
    def __init__(self, drafter: Any, max_len: int):
        self.drafter = drafter
        self.max_len = max_len
        self.cost = StepCost()
        self.drafted = 0
        self.accepted = 0

    @classmethod
    def make(cls, drafter: Any, max_len: int) -> Optional["EngineSpeculation"]:
        if drafter is None:
            return None
        if not isinstance(max_len, int) or isinstance(max_len, bool) or not 1 <= max_len <= 32:
            raise ValueError(f"draft_max must be an int in [1, 32], got {max_len!r}")
        if isinstance(drafter, str):
            if drafter != "ngram":
                raise ValueError(f"draft_model must be 'ngram' or a drafter object, got {drafter!r}")
            drafter = LlamaPromptLookupDecoding(max_ngram_size=3, num_pred_tokens=max_len)
        if not callable(drafter):
            raise TypeError(f"draft_model must be a drafter (pybonsai.llama_speculative), got {type(drafter).__name__}")
        if hasattr(drafter, "bind"):
            raise ValueError("a draft model (GGUFDraftModel) is not supported by the Engine yet: it keeps one "
                             "context for one sequence; use prompt lookup ('ngram') here, or Llama(draft_model=)")
        return cls(drafter, max_len)

    def start(self, prompt_tokens: list, cap: Optional[int]) -> SlotDrafting:
        cap = self.max_len if cap is None else min(cap, self.max_len)
        return SlotDrafting(history=list(prompt_tokens), length=DraftLength(self.max_len, measure=False), cap=cap)

    def propose(self, state: SlotDrafting, room: int) -> tuple:
        """Drafts for a sequence's next step (at most `room`), or ()."""
        cost = self.cost.marginal()
        if cost is not None:
            state.length.cost = cost
        k = min(state.length.next(), state.cap, room)
        if k <= 0:
            return ()
        ids = np.asarray(state.history, dtype=np.intc)
        out = self.drafter(ids, max_tokens=k) if isinstance(self.drafter, LlamaDraftModel) else self.drafter(ids)
        return tuple(int(t) for t in np.asarray(out).reshape(-1)[:k])

    def settle(self, state: SlotDrafting, accepted: int) -> None:
        drafted = len(state.drafts)
        if drafted:
            state.length.record(drafted, accepted, 0.0)
            self.drafted += drafted
            self.accepted += accepted
        state.drafts = ()
