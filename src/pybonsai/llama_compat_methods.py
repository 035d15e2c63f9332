"""llama-cpp-python's `Llama` methods beyond generation itself: the seed chain, the newline
token, the tokenizer object, the evaluated-token views and the logprob helper. Mixed into
`pybonsai.Llama`."""
from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING, Deque, List, Optional, Union

import numpy as np

if TYPE_CHECKING:
    from .llama_tokenizer import LlamaTokenizer


def check_seed(seed: object) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 0xFFFFFFFF:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    return seed


class CompatMethods:
    """Needs `self._seed`, `self._model`/`self.model`, `self.input_ids`, `self.n_tokens`, `self.scores`."""

    # -- seeds ----------------------------------------------------------------------------
    # As llama-cpp-python: Llama(seed=S) starts a chain. A completion called without `seed=`
    # moves the chain one step (the next seed is drawn from Python's random.Random(current
    # seed)) and samples with the new seed, so successive completions differ and the sequence is
    # reproducible; `seed=` sets the chain to that value; save_state()/load_state() carry it.
    # The default seed (0xFFFFFFFF, and 0, which llama-cpp-python treats the same) is a chain
    # like any other; only a generate()/sample() call made directly with it draws a random seed.
    @property
    def seed(self) -> int:
        """The current seed of the chain (see set_seed)."""
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        self._seed = check_seed(value)

    def set_seed(self, seed: int) -> None:
        """Set the seed the next samples use (and the chain that completions continue)."""
        self._seed = check_seed(seed)

    def _completion_seed(self, seed: Optional[int]) -> int:
        """The seed one completion samples with: `seed` if given, else the chain's next step."""
        if seed is None:
            seed = random.Random(self._seed).randint(0, 2**32) & 0xFFFFFFFF  # 2**32 wraps to 0, as a uint32
        self.set_seed(seed)
        return seed

    # -- vocabulary -----------------------------------------------------------------------
    def token_nl(self) -> int:
        """The newline token (-1 if the vocabulary has none)."""
        return self.model.token_nl

    def tokenizer(self) -> "LlamaTokenizer":
        """This model's tokenizer as an object (llama-cpp-python's LlamaTokenizer)."""
        from .llama_tokenizer import LlamaTokenizer
        return LlamaTokenizer(self)

    # -- model kind (llama-cpp-python's private flags, which its own tests read) -----------
    @property
    def _is_recurrent(self) -> bool:
        """llama.cpp's llama_model_is_recurrent: a purely recurrent model (Mamba, RWKV)."""
        return self.model.is_recurrent

    @property
    def _is_hybrid(self) -> bool:
        """llama.cpp's llama_model_is_hybrid: attention and recurrent layers (qwen35, Jamba, ...)."""
        return self.model.is_hybrid

    # -- what was evaluated ---------------------------------------------------------------
    @property
    def eval_tokens(self) -> Deque[int]:
        """The evaluated tokens (a copy)."""
        return deque(self.input_ids[:self.n_tokens].tolist(), maxlen=max(len(self.input_ids), 1))

    @property
    def eval_logits(self) -> Deque[List[float]]:
        """The logits rows kept: every evaluated position's with logits_all, else the last one's."""
        if self.n_tokens == 0:
            return deque(maxlen=1)
        if self.logits_all:
            return deque(self.scores[:self.n_tokens].tolist(), maxlen=len(self.input_ids))
        return deque([self.last_logits.tolist()], maxlen=1)

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def logits_to_logprobs(logits: Union[np.ndarray, List], axis: int = -1) -> np.ndarray:
        """log-softmax along `axis` in float32; rows whose maximum is not finite are shifted by 0."""
        x = np.asarray(logits, dtype=np.float32)
        top = np.max(x, axis=axis, keepdims=True)
        top = np.where(np.isfinite(top), top, np.float32(0))
        shifted = (x - top).astype(np.float32)
        with np.errstate(divide="ignore"):
            total = np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
        return shifted - total

