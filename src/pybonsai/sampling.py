"""Sampling parameters, validated in Python, turned into a llama.cpp sampler chain."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Mapping, Optional

from . import _core

DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: "pick a random seed"

# Below this a positive temperature cannot change the pick (the runner-up's probability,
# exp(-gap / T), underflows to 0 for any logit gap above 1e-18) while logit / T can overflow
# float32 (|logit| > 3.4e38 * T) and turn the draw into NaN/random: such temperatures are greedy.
GREEDY_BELOW = 1e-20


@dataclass(frozen=True)
class SamplingParams:
    """What llama-cpp-python's create_completion accepts, with its defaults."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: Optional[int] = None
    typical_p: float = 1.0
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1

    def __post_init__(self) -> None:
        def finite(name: str, v: float) -> None:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")

        for name in ("temperature", "top_p", "min_p", "repeat_penalty", "frequency_penalty", "presence_penalty",
                     "typical_p", "mirostat_tau", "mirostat_eta"):
            finite(name, getattr(self, name))
        if self.mirostat_mode not in (0, 1, 2):
            raise ValueError(f"mirostat_mode must be 0 (off), 1 or 2, got {self.mirostat_mode!r}")
        if self.mirostat_tau < 0 or self.mirostat_eta < 0:
            raise ValueError(f"mirostat_tau and mirostat_eta must be >= 0, got {self.mirostat_tau}, {self.mirostat_eta}")
        for name in ("top_p", "min_p", "typical_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 disables it), got {self.top_k!r}")
        if self.repeat_penalty <= 0:
            raise ValueError(f"repeat_penalty must be > 0 (1.0 disables it), got {self.repeat_penalty}")
        if not isinstance(self.repeat_last_n, int) or self.repeat_last_n < 0:
            raise ValueError(f"repeat_last_n must be an int >= 0, got {self.repeat_last_n!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or not 0 <= self.seed <= 0xFFFFFFFF):
            raise ValueError(f"seed must be an int in [0, 2**32), got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return 0 <= self.temperature < GREEDY_BELOW

    @property
    def penalized(self) -> bool:
        return self.repeat_last_n > 0 and (
            self.repeat_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0
        )


def resolve_seed(call_seed: Optional[int], model_seed: int) -> int:
    """The call's seed, else the model's, else (DEFAULT_SEED) a fresh random one."""
    if call_seed is not None:
        return call_seed
    if model_seed != DEFAULT_SEED:
        return model_seed
    return random.getrandbits(32)


def build_sampler(model: "_core.Model", params: SamplingParams, seed: int, grammar: Optional[tuple] = None,
                  logit_bias: Optional[Mapping[int, float]] = None) -> "_core.Sampler":
    """Grammar mask (if any; it runs apart from the chain and never sees prime_penalties'
    history), penalties, logit bias, then (as llama-cpp-python) greedy for temperature 0, a plain draw from the
    whole distribution for a negative temperature, mirostat 1/2 if asked, else
    top-k -> typical -> top-p -> min-p -> temperature -> seeded draw."""
    chain = _core.Sampler()
    if grammar is not None:
        chain.set_grammar(model, *grammar)  # (text, root[, lazy trigger tokens, trigger patterns])
    if params.penalized:
        chain.add_penalties(model, params.repeat_last_n, params.repeat_penalty,
                            params.frequency_penalty, params.presence_penalty)
    if logit_bias:
        chain.add_logit_bias(model, list(logit_bias.items()))
    if params.greedy:
        chain.add_greedy()
        if _never_raises(params, logit_bias):
            chain.set_greedy_shortcut(True)  # the chain (and a grammar) runs on the top logits first
        return chain
    if params.temperature < 0:
        chain.add_dist(seed)
        return chain
    if params.mirostat_mode == 1:
        chain.add_mirostat(model, seed, params.mirostat_tau, params.mirostat_eta, 100)
        return chain
    if params.mirostat_mode == 2:
        chain.add_mirostat_v2(seed, params.mirostat_tau, params.mirostat_eta)
        return chain
    if params.top_k > 0:
        chain.add_top_k(params.top_k)
    if params.typical_p < 1.0:
        chain.add_typical(params.typical_p, 1)
    if params.top_p < 1.0:
        chain.add_top_p(params.top_p, 1)
    if params.min_p > 0.0:
        chain.add_min_p(params.min_p, 1)
    chain.add_temp(params.temperature)
    chain.add_dist(seed)
    return chain


def _never_raises(params: SamplingParams, logit_bias: Optional[Mapping[int, float]]) -> bool:
    """Whether the chain's stages before greedy can only lower a logit (a repeat penalty >= 1
    divides positive logits and multiplies negative ones; frequency and presence penalties >= 0 and
    biases <= 0 subtract), so the best token cannot come from below the top logits."""
    penalties_lower = not params.penalized or (
        params.repeat_penalty >= 1.0 and params.frequency_penalty >= 0.0 and params.presence_penalty >= 0.0)
    return penalties_lower and all(bias <= 0 for bias in (logit_bias or {}).values())


def prime_penalties(sampler: "_core.Sampler", params: SamplingParams, history: list[int]) -> None:
    """Let the penalty stage see the last `repeat_last_n` tokens already in the context."""
    if params.penalized:
        for t in history[-params.repeat_last_n:]:
            sampler.accept(t)
