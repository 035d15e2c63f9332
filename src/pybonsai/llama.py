"""`Llama`: the object users hold. Thin orchestration over pybonsai._core and the modules that
own each concern (sampling, completions, chat, text assembly)."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from . import _core, backends, completions, gpu, kv_cache, state
from .llama_cache import BaseLlamaCache
from .gguf_file import check_gguf_path
from .sampling import DEFAULT_SEED, SamplingParams, build_sampler, prime_penalties, resolve_seed


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Llama:
    """A GGUF model with one inference context, in llama-cpp-python's terms.

    Not thread-safe: use one Llama per thread. Concurrent calls cannot crash the process (the
    context serializes them) but they interleave their tokens.
    """

    def __init__(
        self,
        model_path: Union[str, "os.PathLike[str]"],
        *,
        n_ctx: int = 512,
        n_batch: int = 512,
        n_ubatch: Optional[int] = None,
        n_threads: Optional[int] = None,
        n_threads_batch: Optional[int] = None,
        n_gpu_layers: int = 0,
        seed: int = DEFAULT_SEED,
        vocab_only: bool = False,
        use_mmap: bool = True,
        use_mlock: bool = False,
        logits_all: bool = False,
        flash_attn: bool = False,
        type_k: kv_cache.KVType = None,
        type_v: kv_cache.KVType = None,
        chat_template: Optional[str] = None,
        progress_callback=None,
        verbose: bool = False,
    ) -> None:
        self._model: Optional[_core.Model] = None
        self._ctx: Optional[_core.Context] = None
        self.cache: Optional[BaseLlamaCache] = None
        self._model_fingerprint: Optional[str] = None
        for name, value in (("n_ctx", n_ctx), ("n_batch", n_batch), ("n_gpu_layers", n_gpu_layers)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if n_ctx < 0 or n_batch < 1:
            raise ValueError(f"n_ctx must be >= 0 (0 = the model's) and n_batch >= 1; got {n_ctx}, {n_batch}")
        if not isinstance(seed, int) or not 0 <= seed <= 0xFFFFFFFF:
            raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
        self.kv_cache = kv_cache.resolve(type_k, type_v, flash_attn)  # before loading: fail fast
        self.model_path = str(check_gguf_path(model_path))
        self.verbose = verbose
        self.seed = seed
        self.logits_all = logits_all
        _core.set_verbose(verbose)
        backends.ensure_loaded()
        n_gpu_layers = gpu.resolve_n_gpu_layers(n_gpu_layers)  # the rule: README, GPU offload
        self._model = _core.Model(self.model_path, n_gpu_layers=n_gpu_layers, vocab_only=vocab_only,
                                  use_mmap=use_mmap, use_mlock=use_mlock, progress=progress_callback)
        self._chat_template_override = chat_template
        self._metadata: Optional[dict[str, str]] = None
        self.n_tokens = 0
        if vocab_only:
            self.input_ids = np.zeros(0, dtype=np.int32)
            return
        kv_cache.check_head_dims(self.kv_cache, *kv_cache.head_dims(self.metadata, self._model.n_embd,
                                                                     self._model.n_head))
        n_ctx = n_ctx or self._model.n_ctx_train
        n_batch = min(n_batch, n_ctx)
        threads = n_threads or _default_threads()
        self._ctx = _core.Context(self._model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch or n_batch,
                                  n_threads=threads, n_threads_batch=n_threads_batch or threads,
                                  flash_attn=self.kv_cache.flash_attn, type_k=self.kv_cache.type_k,
                                  type_v=self.kv_cache.type_v)
        self.input_ids = np.zeros(self._ctx.n_ctx, dtype=np.int32)
        # Every evaluated position's logits when logits_all (as llama-cpp-python), else the last only.
        self.scores = np.zeros((self._ctx.n_ctx if logits_all else 1, self._model.n_vocab), dtype=np.float32)

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: Optional[str] = None, revision: Optional[str] = None,
                        cache_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
                        local_files_only: bool = False, **kwargs: Any) -> "Llama":
        """Load a GGUF from a Hugging Face Hub repository ("owner/name") or a catalog alias
        ("bonsai-8b"), downloaded into the Hugging Face cache if needed; `filename` may be a glob.
        See pybonsai.hub.from_pretrained; `kwargs` go to Llama()."""
        from .catalog import resolve_hub_model
        path = resolve_hub_model(repo_id, filename=filename, revision=revision, cache_dir=cache_dir,
                                 local_files_only=local_files_only)
        return cls(path, **kwargs)

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Free the context and the model. Idempotent."""
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        if self._model is not None:
            self._model.close()
            self._model = None

    def __enter__(self) -> "Llama":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @property
    def model(self) -> _core.Model:
        if self._model is None:
            raise RuntimeError("this Llama is closed")
        return self._model

    @property
    def ctx(self) -> _core.Context:
        if self._ctx is None:
            raise RuntimeError("this Llama is closed or was loaded with vocab_only=True")
        return self._ctx

    # -- model facts ----------------------------------------------------------------------
    def n_ctx(self) -> int:
        return self.ctx.n_ctx

    def n_vocab(self) -> int:
        return self.model.n_vocab

    def n_embd(self) -> int:
        return self.model.n_embd

    def token_bos(self) -> int:
        return self.model.token_bos

    def token_eos(self) -> int:
        return self.model.token_eos

    @property
    def metadata(self) -> dict[str, str]:
        """The GGUF's key/value metadata (values as strings), as llama-cpp-python exposes it."""
        if self._metadata is None:
            self._metadata = dict(self.model.metadata())
        return self._metadata

    @property
    def chat_template(self) -> Optional[str]:
        return self._chat_template_override or self.model.chat_template()

    # -- tokens ---------------------------------------------------------------------------
    def tokenize(self, text: Union[bytes, str], add_bos: bool = True, special: bool = False) -> list[int]:
        """Text to token ids. `add_bos` adds BOS if the model wants one; `special` parses
        special-token text such as <|im_start|> into the special tokens."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        if not isinstance(text, (bytes, bytearray)):
            raise TypeError(f"text must be bytes or str, not {type(text).__name__}")
        return self.model.tokenize(bytes(text), add_bos, special)

    def detokenize(self, tokens: Sequence[int], special: bool = False) -> bytes:
        """Token ids to the bytes they stand for (special tokens rendered only if `special`)."""
        return self.model.detokenize([int(t) for t in tokens], False, special)

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        return self.model.token_to_piece(int(token), special)

    # -- evaluation -----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every evaluated token (clear the KV cache)."""
        self.ctx.memory_clear()
        self.n_tokens = 0

    def eval(self, tokens: Sequence[int]) -> None:
        """Append `tokens` to the context and compute their logits (`scores`)."""
        tokens = [int(t) for t in tokens]
        n_ctx = self.ctx.n_ctx
        if self.n_tokens + len(tokens) > n_ctx:
            raise ValueError(
                f"Requested tokens ({self.n_tokens + len(tokens)}) exceed context window of {n_ctx}"
            )
        n_batch = self.ctx.n_batch
        try:
            for start in range(0, len(tokens), n_batch):
                chunk = tokens[start:start + n_batch]
                pos = self.n_tokens
                self.ctx.decode(chunk, pos, self.logits_all)
                if self.logits_all:
                    self.ctx.logits(out=self.scores[pos:pos + len(chunk)])
                else:
                    self.scores[0] = self.ctx.logits()[-1]
                self.input_ids[pos:pos + len(chunk)] = chunk
                self.n_tokens = pos + len(chunk)
        except BaseException:
            # A failed or interrupted decode may leave part of a batch in the KV cache: drop
            # everything past what we recorded, so the next call starts from a consistent state.
            self._forget_after(self.n_tokens)
            raise

    def _forget_after(self, n: int) -> None:
        """Keep the first `n` evaluated tokens; clear the cache if it cannot be cut there."""
        if not self.ctx.truncate(n):
            self.ctx.memory_clear()
            n = 0
        self.n_tokens = n

    @property
    def last_logits(self) -> np.ndarray:
        """Logits after the last evaluated token, shape (n_vocab,)."""
        if self.n_tokens == 0:
            raise RuntimeError("no token has been evaluated yet")
        return self.scores[self.n_tokens - 1] if self.logits_all else self.scores[0]

    def _reuse_prefix(self, tokens: list[int]) -> list[int]:
        """Keep the evaluated prefix shared with `tokens`; return what still needs evaluating
        (always at least one token, so that fresh logits exist)."""
        common = 0
        limit = min(self.n_tokens, len(tokens) - 1)
        while common < limit and self.input_ids[common] == tokens[common]:
            common += 1
        self._forget_after(common)
        return tokens[self.n_tokens:]

    def generate(
        self,
        tokens: Sequence[int],
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        temp: float = 0.80,
        repeat_penalty: float = 1.0,
        reset: bool = True,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        seed: Optional[int] = None,
        repeat_last_n: int = 64,
    ) -> Iterator[int]:
        """Evaluate `tokens`, then yield sampled token ids forever (the caller stops).

        With reset=True the context keeps only the prefix it shares with `tokens`."""
        params = SamplingParams(temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p,
                                repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n,
                                frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                                seed=seed)
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("generate() needs at least one token")
        if repeat_last_n > self.n_ctx():
            params = dataclasses.replace(params, repeat_last_n=self.n_ctx())
        sampler = build_sampler(self.model, params, resolve_seed(seed, self.seed))
        history = list(self.input_ids[:self.n_tokens]) if not reset else []
        prime_penalties(sampler, params, history + tokens)
        pending = self._reuse_prefix(tokens) if reset else tokens
        while True:
            self.eval(pending)
            token = sampler.sample(self.ctx, -1)
            yield token
            pending = [token]

    # -- saved state and the prompt cache ---------------------------------------------------
    def save_state(self) -> state.LlamaState:
        """The evaluated tokens, their logits and llama.cpp's context state (KV cache)."""
        return state.save_state(self)

    def load_state(self, saved: state.LlamaState) -> None:
        """Restore a save_state() result. A state from another model, context size or KV type,
        or with damaged bytes, raises ValueError and leaves the context as it was."""
        state.load_state(self, saved)

    def set_cache(self, cache: Optional[BaseLlamaCache]) -> None:
        """Use `cache` (LlamaRAMCache, LlamaDiskCache) for prompt states across completions."""
        if cache is not None and not isinstance(cache, BaseLlamaCache):
            raise TypeError(f"set_cache needs a BaseLlamaCache (LlamaRAMCache, LlamaDiskCache), not {cache!r}")
        self.cache = cache

    def _fingerprint(self) -> str:
        if self._model_fingerprint is None:
            self._model_fingerprint = state.model_fingerprint(self.model_path)
        return self._model_fingerprint

    @staticmethod
    def longest_token_prefix(a: Sequence[int], b: Sequence[int]) -> int:
        from .llama_cache import longest_token_prefix
        return longest_token_prefix(a, b)

    # -- completions ----------------------------------------------------------------------
    def create_completion(self, prompt: Union[str, Sequence[int]], **kwargs: Any):
        """OpenAI-shaped text completion (a dict, or an iterator of chunks with stream=True)."""
        return completions.create_completion(self, prompt, **kwargs)

    __call__ = create_completion

    def create_chat_completion(self, messages: Sequence[dict], **kwargs: Any):
        """OpenAI-shaped chat completion through the model's chat template."""
        return completions.create_chat_completion(self, messages, **kwargs)
