"""Draft models for speculative decoding, under llama-cpp-python's module path and names
(`llama_cpp.llama_speculative`): a drafter is called with the tokens so far and proposes the
tokens it expects next.

`LlamaPromptLookupDecoding` drafts by prompt lookup: it finds the most recent n-gram earlier in
the text and proposes what followed it there (useful when the answer repeats the prompt: code
edits, extraction, summaries that quote).

Note: `Llama(draft_model=...)` accepts a drafter but does not apply it yet (it warns); the
drafters themselves work and can be called directly.
"""
from __future__ import annotations

import abc
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["LlamaDraftModel", "LlamaPromptLookupDecoding"]


class LlamaDraftModel(abc.ABC):
    """Proposes draft tokens: `drafter(input_ids) -> array of token ids` (possibly empty)."""

    @abc.abstractmethod
    def __call__(self, input_ids: npt.NDArray[np.intc], /, **kwargs: Any) -> npt.NDArray[np.intc]:
        raise NotImplementedError


class LlamaPromptLookupDecoding(LlamaDraftModel):
    """Prompt-lookup drafting: the tokens that followed the earliest earlier occurrence of the
    text's last `max_ngram_size` tokens (then shorter n-grams, down to one token), at most
    `num_pred_tokens` of them."""

    def __init__(self, max_ngram_size: int = 2, num_pred_tokens: int = 10):
        for name, value in (("max_ngram_size", max_ngram_size), ("num_pred_tokens", num_pred_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.max_ngram_size = max_ngram_size
        self.num_pred_tokens = num_pred_tokens

    @staticmethod
    def find_candidate_pred_tokens(input_ids: npt.NDArray[np.intc], max_ngram_size: int,
                                   num_pred_tokens: int) -> npt.NDArray[np.intc]:
        ids = np.asarray(input_ids).reshape(-1)
        n = ids.shape[0]
        for size in range(min(max_ngram_size, n - 1), 0, -1):
            tail = ids[n - size:]
            # Start positions p < n - size (an occurrence that is not the tail itself) where
            # ids[p:p + size] == tail; the earliest one wins.
            hits = np.ones(n - size, dtype=bool)
            for j in range(size):
                hits &= ids[j:n - size + j] == tail[j]
            found = np.flatnonzero(hits)
            if found.size:
                start = int(found[0]) + size
                return ids[start:min(start + num_pred_tokens, n)]
        return np.array([], dtype=np.intc)

    def __call__(self, input_ids: npt.NDArray[np.intc], /, **kwargs: Any) -> npt.NDArray[np.intc]:
        return self.find_candidate_pred_tokens(input_ids, self.max_ngram_size, self.num_pred_tokens)
