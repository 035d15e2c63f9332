"""Draft models for speculative decoding, under llama-cpp-python's module path and names
(`llama_cpp.llama_speculative`): a drafter is called with the tokens so far and proposes the
tokens it expects next.

`LlamaPromptLookupDecoding` drafts by prompt lookup: it finds the most recent n-gram earlier in
the text and proposes what followed it there (useful when the answer repeats the prompt: code
edits, extraction, summaries that quote).

`GGUFDraftModel` drafts with a smaller model that shares the vocabulary (e.g. Bonsai-1.7B for
Bonsai-8B): its greedy continuation, on its own context.

`Llama(draft_model=drafter)` applies either (pybonsai.speculative: drafts verified in one batch,
output exactly what plain decoding gives, draft length adapted to the acceptance rate). A drafter
may take the keyword `max_tokens` (the most tokens wanted this time); llama-cpp-python's do not.
"""
from __future__ import annotations

import abc
import itertools
import os
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

__all__ = ["LlamaDraftModel", "LlamaPromptLookupDecoding", "GGUFDraftModel"]


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


class GGUFDraftModel(LlamaDraftModel):
    """Drafts with a smaller GGUF model of the same vocabulary: its greedy continuation of the
    text, up to `num_pred_tokens` tokens. The draft model is loaded when the target Llama takes
    it (`Llama(draft_model=GGUFDraftModel("draft.gguf"))`), with the target's context size unless
    `llama_kwargs` say otherwise; a model with another vocabulary is refused (ValueError)."""

    def __init__(self, model_path: Union[str, "os.PathLike[str]"], num_pred_tokens: int = 8, **llama_kwargs: Any):
        if not isinstance(num_pred_tokens, int) or isinstance(num_pred_tokens, bool) or num_pred_tokens < 1:
            raise ValueError(f"num_pred_tokens must be an int >= 1, got {num_pred_tokens!r}")
        self.model_path = os.fspath(model_path)
        self.num_pred_tokens = num_pred_tokens
        self.llama_kwargs = llama_kwargs
        self.llama: Optional[Any] = None

    def bind(self, target: Any) -> None:
        """Load the draft model for `target` (a Llama) and check that the vocabularies agree."""
        from .llama import Llama
        if self.llama is None:
            kwargs = dict(n_ctx=target.n_ctx(), n_batch=target.ctx.n_batch, n_threads=target.ctx.n_threads)
            kwargs.update(self.llama_kwargs)
            self.llama = Llama(self.model_path, **kwargs)
        check_same_vocabulary(self.llama, target)

    def __call__(self, input_ids: npt.NDArray[np.intc], /, max_tokens: Optional[int] = None,
                 **kwargs: Any) -> npt.NDArray[np.intc]:
        if self.llama is None:
            raise RuntimeError("this draft model is not loaded: pass it to Llama(draft_model=...)")
        n = self.num_pred_tokens if max_tokens is None else min(max_tokens, self.num_pred_tokens)
        ids = [int(t) for t in np.asarray(input_ids).reshape(-1)]
        if n < 1 or not ids:
            return np.array([], dtype=np.intc)
        stream = self.llama.generate(ids, temp=0.0, reset=True)  # reuses the prefix it has evaluated
        try:
            return np.fromiter(itertools.islice(stream, n), dtype=np.intc)
        finally:
            stream.close()


def check_same_vocabulary(draft: Any, target: Any, probes: int = 4096) -> None:
    """ValueError unless `draft` and `target` (Llamas) have the same vocabulary: the same size,
    special tokens and pieces (checked on `probes` tokens spread over the vocabulary)."""
    n = target.n_vocab()
    if draft.n_vocab() != n:
        raise ValueError(f"the draft model's vocabulary has {draft.n_vocab()} tokens, the model's {n}: "
                         "a draft model must share the model's vocabulary")
    for name in ("token_bos", "token_eos"):
        if getattr(draft, name)() != getattr(target, name)():
            raise ValueError(f"the draft model's {name[6:].upper()} token differs from the model's")
    for t in sorted(set(np.linspace(0, n - 1, min(probes, n)).astype(int).tolist())):
        a, b = draft.token_to_piece(t, special=True), target.token_to_piece(t, special=True)
        if a != b:
            raise ValueError(f"token {t} is {a!r} in the draft model and {b!r} in the model: "
                             "a draft model must share the model's vocabulary")
