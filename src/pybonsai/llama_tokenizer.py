"""Tokenizer objects under llama-cpp-python's module path and names (`llama_cpp.llama_tokenizer`):
`LlamaTokenizer` (the GGUF's own vocabulary, through a Llama) and `LlamaHFTokenizer` (a Hugging
Face tokenizer, for the rare model whose GGUF vocabulary is not the one to use)."""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, List, Optional

if TYPE_CHECKING:
    from .llama import Llama

__all__ = ["BaseLlamaTokenizer", "LlamaTokenizer", "LlamaHFTokenizer"]


class BaseLlamaTokenizer(abc.ABC):
    @abc.abstractmethod
    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> List[int]:
        """UTF-8 bytes to token ids."""

    @abc.abstractmethod
    def detokenize(self, tokens: List[int], prev_tokens: Optional[List[int]] = None,
                   special: bool = False) -> bytes:
        """Token ids to bytes (with `prev_tokens`: what `tokens` add after them)."""


class LlamaTokenizer(BaseLlamaTokenizer):
    """The vocabulary of a loaded Llama. Note llama-cpp-python's default here: special=True
    (special-token text is parsed), unlike Llama.tokenize's special=False."""

    def __init__(self, llama: "Llama"):
        self.llama = llama

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> List[int]:
        return self.llama.tokenize(text, add_bos=add_bos, special=special)

    def detokenize(self, tokens: List[int], prev_tokens: Optional[List[int]] = None,
                   special: bool = False) -> bytes:
        return self.llama.detokenize(tokens, prev_tokens=prev_tokens, special=special)

    def encode(self, text: str, add_bos: bool = True, special: bool = True) -> List[int]:
        return self.tokenize(text.encode("utf-8", errors="ignore"), add_bos=add_bos, special=special)

    def decode(self, tokens: List[int]) -> str:
        return self.detokenize(tokens).decode("utf-8", errors="ignore")

    @classmethod
    def from_ggml_file(cls, path: str) -> "LlamaTokenizer":
        """The tokenizer of a GGUF file, loaded without its weights."""
        from .llama import Llama
        return cls(Llama(model_path=path, vocab_only=True))


class LlamaHFTokenizer(BaseLlamaTokenizer):
    """A Hugging Face tokenizer (transformers) behind the same interface."""

    def __init__(self, hf_tokenizer: Any):
        self.hf_tokenizer = hf_tokenizer

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> List[int]:
        return self.hf_tokenizer.encode(text.decode("utf-8", errors="ignore"), add_special_tokens=special)

    def _decode(self, tokens: List[int], special: bool) -> bytes:
        return self.hf_tokenizer.decode(tokens, skip_special_tokens=not special).encode("utf-8", errors="ignore")

    def detokenize(self, tokens: List[int], prev_tokens: Optional[List[int]] = None,
                   special: bool = False) -> bytes:
        if prev_tokens is None:
            return self._decode(list(tokens), special)
        before = self._decode(list(prev_tokens), special)
        return self._decode(list(prev_tokens) + list(tokens), special)[len(before):]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str) -> "LlamaHFTokenizer":
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise ImportError("LlamaHFTokenizer needs the `transformers` package: pip install transformers") from None
        return cls(AutoTokenizer.from_pretrained(pretrained_model_name_or_path))
