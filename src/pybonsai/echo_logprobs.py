"""echo=True with logprobs: every prompt token with the logprob the model gave it (the first has
none, as in OpenAI's and llama-cpp-python's responses; a leading BOS is left out), fed the logits
rows of the prompt chunk by chunk — by `Llama` (its own context) or by the `Engine` (its
prefill steps)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional

import numpy as np

from .completions import _Offsets, _Step, _top_logprobs

if TYPE_CHECKING:
    from .llama import Llama

__all__ = ["PromptLogprobs"]


class PromptLogprobs:
    def __init__(self, llm: "Llama", tokens: list[int], n: int):
        self.llm, self.tokens, self.n = llm, tokens, n
        self.step = _Step()
        self._offsets = _Offsets()
        self._previous: Optional[np.ndarray] = None
        self._bos = llm.token_bos()
        self.fed = 0

    def feed(self, rows: Iterable[np.ndarray]) -> None:
        """The logits rows of the next prompt tokens, in order."""
        for row in rows:
            i, token = self.fed, self.tokens[self.fed]
            if not (i == 0 and token == self._bos):
                piece = self.llm.token_to_piece(token, special=True)
                offset = self._offsets.push(piece)
                text = piece.decode("utf-8", errors="replace")
                if self._previous is None:
                    self.step.add_token(text, offset, None, None)
                else:
                    self.step.add_token(text, offset, *_top_logprobs(self.llm, self._previous, token, self.n))
            self._previous = row
            self.fed += 1
