"""Hooks on the logits, in llama-cpp-python's shapes: `logit_bias` (OpenAI's token id -> bias
map), logits processors `f(input_ids, scores) -> scores` and stopping criteria
`f(input_ids, logits) -> bool`, with the list types that chain several of them."""
from __future__ import annotations

import math
from typing import Callable, Mapping, Optional, Union

import numpy as np

__all__ = ["LogitsProcessor", "LogitsProcessorList", "StoppingCriteria", "StoppingCriteriaList",
           "MinTokensLogitsProcessor"]

LogitsProcessor = Callable[[np.ndarray, np.ndarray], np.ndarray]
StoppingCriteria = Callable[[np.ndarray, np.ndarray], bool]


class LogitsProcessorList(list):
    """Processors applied in order, each to the previous one's scores."""

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


class StoppingCriteriaList(list):
    """Stops when any criterion says so."""

    def __call__(self, input_ids: np.ndarray, logits: np.ndarray) -> bool:
        return any(criterion(input_ids, logits) for criterion in self)


class MinTokensLogitsProcessor:
    """A logits processor that forbids `token_eos` until `min_tokens` tokens have been generated.
    It counts from the length of the first input it sees (the prompt), so use a fresh one per
    completion, as in llama-cpp-python."""

    def __init__(self, min_tokens: int, token_eos: int):
        self.min_tokens = min_tokens
        self.token_eos = token_eos
        self.prompt_tokens: Optional[int] = None

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.prompt_tokens is None:
            self.prompt_tokens = len(input_ids)
        if len(input_ids) - self.prompt_tokens < self.min_tokens:
            scores[self.token_eos] = -np.inf
        return scores


def check_logit_bias(logit_bias: Optional[Mapping[Union[int, str], float]], n_vocab: int) -> Optional[dict[int, float]]:
    """OpenAI's logit_bias (keys may be token ids as strings, as JSON sends them) checked and
    normalized to {token id: finite bias}."""
    if not logit_bias:
        return None
    if not isinstance(logit_bias, Mapping):
        raise TypeError(f"logit_bias must be a mapping of token id to bias, not {type(logit_bias).__name__}")
    out: dict[int, float] = {}
    for key, value in logit_bias.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"logit_bias keys must be token ids, got {key!r}") from None
        if not 0 <= token < n_vocab:
            raise ValueError(f"logit_bias token id {token} is out of range [0, {n_vocab})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"logit_bias[{key!r}] must be a finite number, got {value!r}")
        out[token] = out.get(token, 0.0) + float(value)
    return out


def run_logits_processor(processor: LogitsProcessor, input_ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """The processor's scores for a copy of `logits`, checked: (n_vocab,) and not all -inf/NaN."""
    if isinstance(processor, (list, tuple)) and not callable(processor):
        processor = LogitsProcessorList(processor)  # a plain list works in llama-cpp-python (it iterates)
    scores = processor(np.array(input_ids, dtype=np.intc), np.array(logits, dtype=np.float32))
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != logits.shape:
        raise ValueError(f"logits_processor returned shape {scores.shape}, expected {logits.shape}")
    if np.isnan(scores).any():
        raise ValueError("logits_processor returned NaN scores")
    if not np.isfinite(scores).any():
        raise ValueError("logits_processor masked every token (all scores are -inf)")
    return scores
