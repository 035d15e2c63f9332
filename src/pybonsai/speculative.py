"""Speculative decoding for `Llama.generate`: a drafter (pybonsai.llama_speculative) proposes the
next tokens, the model evaluates them in one batch with the token before them, and each position
is then sampled in order; a drafted token is kept while it equals the token sampled at its
position, and the first sample that differs ends the round (it is the next token, and the KV
cells of the drafts after it are dropped).

Why this is exact: every position is sampled from the model's own logits for exactly the tokens
before it, with the same sampler (penalties, grammar, logit bias, logits processor, seed) and one
draw per emitted token, as plain decoding does: greedy output is the same token for token, and so
is seeded sampling wherever the logits of a batch equal those of single steps (the CPU kernels are
batch-invariant). For a drafter that proposes one token d (a point mass), "accept d if the sample
equals it, else emit the sample" is speculative sampling's rule (accept with probability p(d),
else draw from p without d, renormalized), so the distribution of the output is the model's.

The draft length adapts (DraftLength): it estimates the acceptance rate and what a drafted token
costs to verify, and drafts the length that maximizes tokens per unit of time, down to none (then
it probes now and then)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generator, Optional, Sequence

import numpy as np

from .logits import run_logits_processor
from .sampling import prime_penalties

if TYPE_CHECKING:
    from .llama import Llama

PROBE_EVERY = 16      # tokens decoded plainly between probes while drafting is off
REMEASURE_EVERY = 16  # rounds between plain steps that re-measure a single token's cost (a shared
                      # machine's speed drifts: a stale measure made every round look dear)
FORGET_AFTER = 32     # rounds after which a draft length's measured cost is no longer used
MIN_GAIN = 1.02       # a longer draft must promise this much more speed
MIN_COST = 0.05       # floor of a drafted token's estimated cost, in single steps (timing noise)


class DraftLength:
    """The number of tokens to draft next. Model: each drafted token is accepted with probability
    alpha (independently, until the first rejection); verifying k drafts costs c_k single steps:
    the recent seconds of rounds of k drafts over those of a plain step (each an average that
    follows the machine's speed), or 1 + cost*k where k has not been measured (a batch of two is
    often much cheaper than the slope of longer ones says).
    k maximizes (1 + alpha + ... + alpha^k) / c_k over 0..max_len."""

    def __init__(self, max_len: int, cost: float = 0.25, decay: float = 0.9, adaptive: bool = True,
                 measure: bool = True):
        self.max_len = max_len
        self.adaptive = adaptive  # False: always max_len (tests, benchmarks)
        self.measure = measure    # False: `cost` is set from outside (the Engine's step timings)
        self.cost = cost
        self.decay = decay
        self._hits = 0.0    # decayed counts of drafted tokens accepted / tested
        self._tests = 0.0
        self._t_single: Optional[float] = None  # seconds of a plain step (EMA)
        self._measured = False                   # `cost` still the prior
        self._round_seconds: dict[int, tuple] = {}  # k -> (seconds of a round of k drafts (EMA), round)
        self._idle = 0
        self._rounds = 0

    @property
    def alpha(self) -> float:
        return (self._hits + 1.0) / (self._tests + 2.0)

    def seed(self, alpha: float, weight: float) -> None:
        """Start from an acceptance rate seen elsewhere (the Engine's other requests), worth
        `weight` tested drafts, instead of the prior 1/2."""
        self._hits, self._tests = alpha * weight, weight

    def best(self, others: int = 0) -> int:
        """`others`: tokens of other sequences in the same step (the Engine's batch). Drafts slow
        their step too, so k is chosen for the step's throughput: (others + expected tokens) /
        (1 + cost * (others + k)) steps, against (others + 1) / (1 + cost * others) undrafted."""
        expected, p = 1.0, 1.0
        best_k = 0
        best = (others + 1.0) / (1.0 + self.cost * others) if others else 1.0
        for k in range(1, self.max_len + 1):
            p *= self.alpha
            expected += p
            cost = self._cost_of(k) if not others else 1.0 + self.cost * (others + k)
            value = (others + expected) / cost
            if value > best * MIN_GAIN:
                best_k, best = k, value
        return best_k

    def _cost_of(self, k: int) -> float:
        seen = self._round_seconds.get(k)
        # a length not drafted for a while is judged by the slope again (one slow round must not
        # keep it out for good)
        if seen is None or not self._t_single or self._rounds - seen[1] > FORGET_AFTER:
            return 1.0 + self.cost * k
        return seen[0] / self._t_single

    def next(self, others: int = 0) -> int:
        if not self.adaptive:
            return self.max_len
        self._rounds += 1
        if self.measure and (self._t_single is None or self._rounds % REMEASURE_EVERY == 0):
            return 0  # a plain step: measures what one token costs
        k = self.best(others)
        if k == 0:
            self._idle += 1
            if self._idle >= PROBE_EVERY:
                self._idle = 0
                return 1
        return k

    def record(self, drafted: int, accepted: int, seconds: float) -> None:
        """One round: `drafted` tokens proposed, `accepted` kept, `seconds` to draft and verify."""
        if drafted == 0:
            if not self.measure:
                return
            self._t_single = seconds if self._t_single is None else 0.5 * self._t_single + 0.5 * seconds
            return
        tests = accepted + (1 if accepted < drafted else 0)
        self._hits = self.decay * self._hits + accepted
        self._tests = self.decay * self._tests + tests
        if self.measure and self._t_single:
            known = self._round_seconds.get(drafted)
            ema = seconds if known is None or self._rounds - known[1] > FORGET_AFTER else 0.7 * known[0] + 0.3 * seconds
            self._round_seconds[drafted] = (ema, self._rounds)
            observed = min(2.0, max(MIN_COST, (seconds / self._t_single - 1.0) / drafted))
            # the first measurement replaces the prior; then an average that follows the machine
            self.cost = observed if not self._measured else 0.7 * self.cost + 0.3 * observed
            self._measured = True


@dataclass
class Speculation:
    """A drafter attached to a Llama, its adaptive length and counters."""
    drafter: Any
    length: DraftLength
    stats: dict = field(default_factory=lambda: {"rounds": 0, "drafted": 0, "accepted": 0})

    def propose(self, llm: "Llama", context: Sequence[int], room: int) -> list[int]:
        k = min(self.length.next(), room)
        if k <= 0:
            return []
        ids = np.asarray(context, dtype=np.intc)
        try:
            drafted = self.drafter(ids, max_tokens=k)
        except TypeError:  # a llama-cpp-python drafter without our max_tokens hint
            drafted = self.drafter(ids)
        n_vocab = llm.n_vocab()
        out = []
        for t in np.asarray(drafted).reshape(-1)[:k]:
            t = int(t)
            if not 0 <= t < n_vocab:
                raise ValueError(f"the draft model proposed token id {t}, outside the vocabulary [0, {n_vocab})")
            out.append(t)
        return out

    def record(self, drafted: int, accepted: int, seconds: float) -> None:
        self.length.record(drafted, accepted, seconds)
        if drafted:
            self.stats["rounds"] += 1
            self.stats["drafted"] += drafted
            self.stats["accepted"] += accepted


def _pick(llm: "Llama", sampler: Any, logits_processor: Any, rows: Optional[np.ndarray], i: int,
          history: np.ndarray) -> int:
    """Sample position i of the round: from the context's logits (i == 0, right after the decode,
    under the same lock) or from the copied row (later positions; another call may have used the
    context in between)."""
    row = None if rows is None else rows[i]
    if logits_processor is not None:
        logits = llm.last_logits if row is None else row
        return sampler.sample_logits(llm.model, run_logits_processor(logits_processor, history, logits))
    if i == 0:
        return sampler.sample(llm.ctx, -1 if rows is None else -len(rows))
    return sampler.sample_logits(llm.model, row)


def _show(llm: "Llama", n_before: int, rows: Optional[np.ndarray], i: int) -> None:
    """The Llama's view while position i's token is handed out: the tokens before it, and its logits."""
    llm.n_tokens = n_before
    if rows is not None and not llm.logits_all:
        llm._scores[0] = rows[i]
        llm._scores_live = False


def _stops(stopping_criteria: Any, history: np.ndarray, token: int, llm: "Llama") -> bool:
    return stopping_criteria is not None and stopping_criteria(np.append(history, np.intc(token)), llm.last_logits)


def generate(llm: "Llama", spec: Speculation, sampler: Any, params: Any, pending: list[int], target: list[int],
             me: object, logits_processor: Any, stopping_criteria: Any) -> Generator[int, Optional[Sequence[int]], None]:
    """Llama.generate's loop with drafting (see the module docstring), after generate's set-up:
    its sampler, the tokens still to evaluate (`pending`) and the context they complete (`target`)."""
    while True:
        with llm._lock:
            if llm._owner is not me:  # first step, or another call used the context since
                pending = llm._reuse_prefix(target)
            room = min(llm.ctx.n_batch - len(pending), llm.n_ctx() - llm.n_tokens - len(pending) - 1)
            start = time.perf_counter()
            drafts = spec.propose(llm, target, room) if len(pending) == 1 else []
            rows: Optional[np.ndarray] = None
            llm._inside.generating = True
            try:
                if drafts:
                    for _, chunk_rows in llm._eval_chunks(pending + drafts, all_logits=True):
                        rows = chunk_rows
                    rows = rows[len(rows) - len(drafts) - 1:]  # after the last pending token, then each draft
                else:
                    llm.eval(pending)  # through eval(), as llama-cpp-python does (callers hook it)
            finally:
                llm._inside.generating = False
            llm._owner = me
            spent = time.perf_counter() - start
            base = llm.n_tokens - len(drafts)  # the context before the first draft
            _show(llm, base, rows, 0)
            history = np.asarray(target, dtype=np.intc)
            token = _pick(llm, sampler, logits_processor, rows, 0, history)
            stop = _stops(stopping_criteria, history, token, llm)
        emitted: list[int] = []
        accepted, sent = 0, None
        try:
            for i in range(len(drafts) + 1):
                if i > 0:
                    with llm._lock:
                        if llm._owner is me:
                            _show(llm, base + i, rows, i)
                        history = np.asarray([*target, *drafts[:i]], dtype=np.intc)
                        token = _pick(llm, sampler, logits_processor, rows, i, history)
                        stop = _stops(stopping_criteria, history, token, llm)
                if stop:
                    return
                emitted.append(token)
                sent = yield token
                if sent is not None or i == len(drafts) or token != drafts[i]:
                    break
                accepted += 1
        finally:
            with llm._lock:
                if drafts and llm._owner is me:  # keep the drafts up to the last accepted one
                    llm._forget_after(base + accepted)
                    llm._owner = me  # its own cut: the context is what it expects
                    _show(llm, base + accepted, rows, accepted)
            if len(pending) == 1:  # a prompt's (or send()'s) batch says nothing about a step's cost
                spec.record(len(drafts), accepted, spent)
        pending = [emitted[-1]]
        target = [*target, *drafts[:accepted], emitted[-1]]
        if sent is not None:
            sent = [int(t) for t in sent]
            pending += sent
            target += sent
            prime_penalties(sampler, params, sent)


def attach(llm: "Llama", drafter: Any) -> Optional[Speculation]:
    """Llama(draft_model=...): the Speculation its generate() uses, or None (no drafter; or a model
    with a recurrent state, whose memory cannot drop rejected drafts: warned, decoding stays plain)."""
    if drafter is None:
        return None
    if not callable(drafter):
        raise TypeError(f"draft_model must be a drafter (pybonsai.llama_speculative.LlamaDraftModel or a callable "
                        f"input_ids -> draft token ids), got {type(drafter).__name__}")
    if llm.is_recurrent:
        import warnings
        from .compat import UnsupportedParameterWarning
        warnings.warn("draft_model is not applied: this model keeps a recurrent state, which cannot drop rejected "
                      "draft tokens; generation runs without speculation", UnsupportedParameterWarning, stacklevel=3)
        return None
    bind = getattr(drafter, "bind", None)
    if callable(bind):
        bind(llm)  # a draft model: loads, and checks that it shares the vocabulary
    max_len = getattr(drafter, "num_pred_tokens", 8)
    if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1:
        raise ValueError(f"the drafter's num_pred_tokens must be an int >= 1, got {max_len!r}")
    return Speculation(drafter, DraftLength(min(max_len, 32)))
