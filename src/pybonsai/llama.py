"""`Llama`: the object users hold. Thin orchestration over pybonsai._core and the modules that
own each concern (sampling, completions, chat, text assembly)."""
from __future__ import annotations

import dataclasses
import os
import functools
import threading
import warnings
from typing import Any, Dict, Generator, Iterator, Optional, Sequence, Union

import numpy as np

from . import _core, backends, chat_handlers, compat, speculative, completions, embeddings, gpu, kv_cache, load_checks, state
from .llama_cache import BaseLlamaCache
from .gguf_file import check_gguf_path, mmap_compatible
from .grammar import grammar_text
from .logits import check_logit_bias, run_logits_processor
from .llama_compat_methods import CompatMethods
from .sampling import DEFAULT_SEED, SamplingParams, build_sampler, prime_penalties, resolve_seed


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _serialized(fn: Any) -> Any:
    """`fn(llm, ...)` as a method run under the Llama's lock (signature kept for inspect)."""
    @functools.wraps(fn)
    def method(self: "Llama", *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return fn(self, *args, **kwargs)
    return method


class Llama(CompatMethods):
    """A GGUF model with one inference context, in llama-cpp-python's terms.

    Threads: one Llama per thread runs in parallel. Threads sharing one Llama are serialized: a
    completion (non-streaming), eval() or reset() runs whole under the Llama's lock, and a
    generate() or streaming completion takes the lock for each token and re-syncs the context if
    another call used it in between, so every call gets the output it would get alone (slower).

    `cancel()` (from another thread, a signal handler or a callback) stops the evaluation or
    generation running now with `CancelledError`; Ctrl-C during a long prefill on the main thread
    stops it too (KeyboardInterrupt). Either way the Llama stays usable.
    """

    def __init__(
        self,
        model_path: Union[str, "os.PathLike[str]"],
        *,
        # llama-cpp-python's parameters, in its order and with its defaults (see README,
        # "Coming from llama-cpp-python", for the few that cannot apply and warn instead).
        # Model
        n_gpu_layers: int = 0,
        split_mode: int = 1,  # LLAMA_SPLIT_MODE_LAYER
        main_gpu: int = 0,
        tensor_split: Optional[Sequence[float]] = None,
        vocab_only: bool = False,
        use_mmap: bool = True,
        use_mlock: bool = False,
        kv_overrides: Optional[Dict[str, Union[bool, int, float, str]]] = None,
        # Context
        seed: int = DEFAULT_SEED,
        n_ctx: int = 512,
        n_batch: int = 512,
        n_ubatch: int = 512,
        n_threads: Optional[int] = None,
        n_threads_batch: Optional[int] = None,
        rope_scaling_type: Optional[int] = -1,  # LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED
        pooling_type: int = -1,                 # LLAMA_POOLING_TYPE_UNSPECIFIED
        attention_type: int = -1,               # LLAMA_ATTENTION_TYPE_UNSPECIFIED
        rope_freq_base: float = 0.0,
        rope_freq_scale: float = 0.0,
        yarn_ext_factor: float = -1.0,
        yarn_attn_factor: float = 1.0,
        yarn_beta_fast: float = 32.0,
        yarn_beta_slow: float = 1.0,
        yarn_orig_ctx: int = 0,
        logits_all: bool = False,
        embedding: bool = False,
        offload_kqv: bool = True,
        flash_attn: Union[bool, str, None] = None,  # None: llama.cpp's 'auto'
        op_offload: Optional[bool] = None,
        swa_full: Optional[bool] = None,
        # Sampling
        no_perf: bool = False,
        last_n_tokens_size: int = 64,
        # LoRA
        lora_base: Optional[str] = None,
        lora_scale: float = 1.0,
        lora_path: Optional[str] = None,
        # Backend
        numa: Union[bool, int] = False,
        # Chat format
        chat_format: Optional[str] = None,
        chat_handler: Any = None,
        # Speculative decoding
        draft_model: Any = None,
        # Tokenizer override
        tokenizer: Any = None,
        # KV cache quantization
        type_k: kv_cache.KVType = None,
        type_v: kv_cache.KVType = None,
        # Misc
        spm_infill: bool = False,
        verbose: bool = False,
        # pybonsai's own
        chat_template: Optional[str] = None,
        progress_callback=None,
        **kwargs: Any,
    ) -> None:
        self._model: Optional[_core.Model] = None
        self._ctx: Optional[_core.Context] = None
        self.cache: Optional[BaseLlamaCache] = None
        self._model_fingerprint: Optional[str] = None
        self._recurrent: Optional[bool] = None
        self._lock = threading.RLock()  # serializes calls from threads sharing this Llama
        self._owner: Optional[object] = None  # the generate() that made the context's last eval
        self._inside = threading.local()  # .generating: eval() called by generate() keeps a cancel
        for name, value in (("n_ctx", n_ctx), ("n_batch", n_batch), ("n_ubatch", n_ubatch),
                            ("n_gpu_layers", n_gpu_layers), ("last_n_tokens_size", last_n_tokens_size)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if n_ctx < 0 or n_batch < 1 or n_ubatch < 1:
            raise ValueError(f"n_ctx must be >= 0 (0 = the model's), n_batch and n_ubatch >= 1; "
                             f"got {n_ctx}, {n_batch}, {n_ubatch}")
        if last_n_tokens_size < 0:
            raise ValueError(f"last_n_tokens_size must be >= 0, got {last_n_tokens_size}")
        if not isinstance(seed, int) or not 0 <= seed <= 0xFFFFFFFF:
            raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
        self.kv_cache = kv_cache.resolve(type_k, type_v, flash_attn)  # before loading: fail fast
        self.model_path = str(check_gguf_path(model_path))
        load_checks.check_before_load(self.model_path, stacklevel=2)  # vision-language files: warn
        lora_file = str(check_gguf_path(lora_path)) if lora_path is not None else None
        self.verbose = verbose
        self._seed = seed or DEFAULT_SEED  # as llama-cpp-python: 0 means the default (see CompatMethods)
        self.logits_all = logits_all
        self.embedding = embedding
        self.last_n_tokens_size = last_n_tokens_size
        self.lora_base, self.lora_path, self.lora_scale = lora_base, lora_path, lora_scale
        self.chat_format, self.chat_handler, self.draft_model = chat_format, chat_handler, draft_model
        compat.ignored_llama_args(lora_base=lora_base, lora_path=lora_path, lora_scale=lora_scale,
                                  tokenizer=tokenizer, spm_infill=spm_infill, extra=kwargs,
                                  stacklevel=3)
        model_options: dict[str, Any] = {"split_mode": split_mode, "main_gpu": main_gpu,
                                         "kv_overrides": compat.check_kv_overrides(kv_overrides)}
        if tensor_split is not None:
            model_options["tensor_split"] = [float(x) for x in tensor_split]
        _core.set_verbose(verbose)
        backends.ensure_loaded()
        compat.init_numa(numa)
        n_gpu_layers = gpu.resolve_n_gpu_layers(n_gpu_layers)  # the rule: README, GPU offload
        if use_mmap and not vocab_only and not mmap_compatible(self.model_path):
            warnings.warn(f"{self.model_path}: tensor data is not 32-byte aligned in the file; loading "
                          "it without mmap (use_mmap=False)", RuntimeWarning, stacklevel=2)
            use_mmap = False
        self._model = _core.Model(self.model_path, n_gpu_layers=n_gpu_layers, vocab_only=vocab_only,
                                  use_mmap=use_mmap, use_mlock=use_mlock, progress=progress_callback,
                                  options=model_options)
        self._chat_template_override = chat_template
        self._metadata: Optional[dict[str, str]] = None
        self._chat_handlers = chat_handlers.resolve(self, chat_format, chat_handler)  # unknown names raise
        self._speculation = None
        self.n_tokens = 0
        if vocab_only:  # a context without weights (as llama-cpp-python): it tokenizes, never evaluates
            self.input_ids = np.zeros(0, dtype=np.int32)
            self._ctx = _core.Context(self._model, n_ctx=n_ctx or self._model.n_ctx_train, n_batch=n_batch,
                                      n_ubatch=n_ubatch)
            return
        kv_cache.check_head_dims(self.kv_cache, *kv_cache.head_dims(self.metadata, self._model.n_embd,
                                                                     self._model.n_head))
        n_ctx = n_ctx or self._model.n_ctx_train
        n_batch = min(n_batch, n_ctx)
        # A pooled embedding must come from one micro-batch (llama.cpp pools per ubatch).
        n_ubatch = n_batch if embedding else min(n_ubatch, n_batch)
        threads = n_threads or _default_threads()
        context_options = dict(
            rope_scaling_type=-1 if rope_scaling_type is None else rope_scaling_type,
            pooling_type=pooling_type, attention_type=attention_type, rope_freq_base=rope_freq_base,
            rope_freq_scale=rope_freq_scale, yarn_ext_factor=yarn_ext_factor, yarn_attn_factor=yarn_attn_factor,
            yarn_beta_fast=yarn_beta_fast, yarn_beta_slow=yarn_beta_slow, yarn_orig_ctx=yarn_orig_ctx,
            embeddings=embedding, offload_kqv=offload_kqv, no_perf=no_perf)
        if op_offload is not None:
            context_options["op_offload"] = op_offload
        if swa_full is not None:
            context_options["swa_full"] = swa_full
        self._ctx = _core.Context(self._model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch,
                                  n_threads=threads, n_threads_batch=n_threads_batch or threads,
                                  flash_attn=self.kv_cache.flash_attn, type_k=self.kv_cache.type_k,
                                  type_v=self.kv_cache.type_v, options=context_options)
        if lora_file is not None:
            self._ctx.set_lora(lora_file, float(lora_scale))
        self.input_ids = np.zeros(self._ctx.n_ctx, dtype=np.int32)
        # Every evaluated position's logits when logits_all (as llama-cpp-python), else the last only,
        # copied out of llama.cpp only when `scores` is read (sampling happens inside the context).
        self._scores = np.zeros((self._ctx.n_ctx if logits_all else 1, self._model.n_vocab), dtype=np.float32)
        self._scores_live = False  # the last decode's logits row is not yet in _scores[0]
        self._speculation = speculative.attach(self, draft_model)  # Llama(draft_model=): see pybonsai.speculative

    @property
    def scores(self) -> np.ndarray:
        """Logits as llama-cpp-python keeps them: (n_ctx, n_vocab) rows by position with
        logits_all, else one row, the logits after the last evaluated token."""
        if self._scores_live:
            self._scores_live = False
            self.ctx.logits(out=self._scores[:1])
        return self._scores

    @scores.setter
    def scores(self, value: np.ndarray) -> None:
        self._scores = value
        self._scores_live = False

    def _drop_live_scores(self) -> None:
        """The context's logits are about to change outside eval(): keep `scores` as it is."""
        self._scores_live = False

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
            if getattr(self, "_scores_live", False):
                self.scores  # copy the last logits out once, so `scores` stays readable after close
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
            raise RuntimeError("this Llama is closed")
        return self._ctx

    # -- model facts ----------------------------------------------------------------------
    def n_ctx(self) -> int:
        return self.ctx.n_ctx

    def n_vocab(self) -> int:
        return self.model.n_vocab

    def n_embd(self) -> int:
        return self.model.n_embd

    def pooling_type(self) -> int:
        """The context's pooling type (llama.h's enum: -1 unspecified, 0 none, 1 mean, 2 cls, 3 last, 4 rank)."""
        return self.ctx.pooling_type

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

    def detokenize(self, tokens: Sequence[int], prev_tokens: Optional[Sequence[int]] = None,
                   special: bool = False) -> bytes:
        """Token ids to the bytes they stand for (special tokens rendered only if `special`), as
        llama-cpp-python: the tokens' pieces joined, less one leading space when the first token is
        BOS (a SentencePiece vocabulary's word-start space). With `prev_tokens`, the bytes `tokens`
        add after them."""
        return compat.detokenize_after(lambda t, sp: compat.join_pieces(self.model, t, sp), tokens, prev_tokens,
                                       special)

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        return self.model.token_to_piece(int(token), special)

    # -- cancellation ---------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the evaluation or generation running on this Llama, from any thread or callback:
        it raises `CancelledError` within one compute step (also in the middle of a prefill), and
        the Llama stays usable. The request holds until the next eval(), generate() or
        completion call starts; calling it while nothing runs has no lasting effect."""
        ctx = self._ctx
        if ctx is not None:
            ctx.cancel()

    # -- evaluation -----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every evaluated token (clear the KV cache)."""
        with self._lock:
            self._drop_live_scores()
            self.ctx.memory_clear()
            self.n_tokens = 0
            self._owner = None

    def eval(self, tokens: Sequence[int]) -> None:
        """Append `tokens` to the context and compute their logits (`scores`)."""
        with self._lock:
            if not getattr(self._inside, "generating", False):
                self.ctx.clear_cancel()  # a new call: an earlier cancel() does not stop it
            self._owner = None
            for _ in self._eval_chunks(tokens, self.logits_all):
                pass

    def _eval_chunks(self, tokens: Sequence[int], all_logits: bool) -> Iterator[tuple[int, Optional[np.ndarray]]]:
        """eval() batch by batch, yielding (first position, logits rows) of each batch: every
        token's rows when `all_logits`, else None (`scores` holds the last token's)."""
        tokens = [int(t) for t in tokens]
        n_ctx = self.ctx.n_ctx
        if self.n_tokens + len(tokens) > n_ctx:
            raise ValueError(
                f"Requested tokens ({self.n_tokens + len(tokens)}) exceed context window of {n_ctx}"
            )
        n_batch = self.ctx.n_batch
        interruptible = threading.current_thread() is threading.main_thread()  # Ctrl-C mid-decode
        try:
            for start in range(0, len(tokens), n_batch):
                chunk = tokens[start:start + n_batch]
                pos = self.n_tokens
                self.ctx.decode(chunk, pos, self.logits_all or all_logits, interruptible)
                if self.logits_all:
                    rows = self._scores[pos:pos + len(chunk)]
                    self.ctx.logits(out=rows)
                elif all_logits:
                    rows = self.ctx.logits()
                    self._scores[0] = rows[-1]
                    self._scores_live = False
                else:
                    rows = None  # copied by `scores` if someone reads it (no per-token copy)
                    self._scores_live = True
                self.input_ids[pos:pos + len(chunk)] = chunk
                self.n_tokens = pos + len(chunk)
                yield pos, rows if all_logits else None
        except BaseException:
            # A failed or interrupted decode may leave part of a batch in the KV cache: drop
            # everything past what we recorded, so the next call starts from a consistent state.
            self._forget_after(self.n_tokens)
            raise

    def _forget_after(self, n: int) -> None:
        """Keep the first `n` evaluated tokens; clear the cache if it cannot be cut there. A cut
        ends any generate()'s claim on the context: its next step re-syncs (see generate). Always,
        not only below n_tokens: a speculative step shows fewer tokens than its cache holds."""
        self._owner = None
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

    @property
    def is_recurrent(self) -> bool:
        """Whether the model keeps a recurrent state (Mamba, RWKV, and hybrids such as the qwen35
        Gated DeltaNet layers of Bonsai 27B): its memory holds a summary of every token evaluated,
        which cannot be cut back to a shorter prefix; only clearing it, or continuing, is possible."""
        if self._recurrent is None:
            meta = self.metadata
            arch = meta.get("general.architecture", "")
            self._recurrent = any(k.startswith((f"{arch}.ssm.", f"{arch}.wkv.", f"{arch}.shortconv."))
                                  for k in meta)
        return self._recurrent

    def _reuse_prefix(self, tokens: list[int]) -> list[int]:
        """Keep the evaluated prefix shared with `tokens`; return what still needs evaluating
        (always at least one token, so that fresh logits exist). Where the memory cannot be cut
        back there (a recurrent state, see is_recurrent), everything is evaluated again."""
        common = 0
        limit = min(self.n_tokens, len(tokens) - 1)
        while common < limit and self.input_ids[common] == tokens[common]:
            common += 1
        self._forget_after(common)
        return tokens[self.n_tokens:]

    def _sampler_for(self, *, top_k, top_p, min_p, typical_p, temp, repeat_penalty, frequency_penalty,
                     presence_penalty, tfs_z, mirostat_mode, mirostat_tau, mirostat_eta, penalize_nl,
                     seed=None, repeat_last_n=None, grammar=None, logit_bias=None):
        """A sampler chain for llama-cpp-python's sampling arguments (those llama.cpp dropped warn)."""
        compat.ignored_sampling_args(tfs_z=tfs_z, penalize_nl=penalize_nl, stacklevel=4)
        last_n = self.last_n_tokens_size if repeat_last_n is None else repeat_last_n
        params = SamplingParams(temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
                                repeat_penalty=repeat_penalty, repeat_last_n=last_n,
                                frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                                mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau,
                                mirostat_eta=mirostat_eta, seed=seed)
        if params.repeat_last_n > self.n_ctx():
            params = dataclasses.replace(params, repeat_last_n=self.n_ctx())
        return params, build_sampler(self.model, params, resolve_seed(seed, self.seed), grammar=grammar_text(grammar),
                                     logit_bias=check_logit_bias(logit_bias, self.n_vocab()))

    def sample(
        self,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        temp: float = 0.80,
        repeat_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        tfs_z: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_eta: float = 0.1,
        mirostat_tau: float = 5.0,
        penalize_nl: bool = True,
        logits_processor: Any = None,
        grammar: Any = None,
        idx: Optional[int] = None,
    ) -> int:
        """One token from the logits after the last evaluated token, or (with logits_all) after
        position `idx` of the last eval() batch. Penalties see the last `last_n_tokens_size`
        evaluated tokens."""
        if self.n_tokens == 0:
            raise RuntimeError("sample() needs evaluated tokens: call eval() first")
        params, sampler = self._sampler_for(
            top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p, temp=temp, repeat_penalty=repeat_penalty,
            frequency_penalty=frequency_penalty, presence_penalty=presence_penalty, tfs_z=tfs_z,
            mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta,
            penalize_nl=penalize_nl, grammar=grammar)
        if idx is None and self.ctx.n_outputs == 0:
            # No live logits (a restored state): evaluate the last token again to get them (all the
            # tokens again where a recurrent state cannot be cut back by one).
            self.eval(self._reuse_prefix(self.input_ids[:self.n_tokens].tolist()))
        upto = self.n_tokens if idx is None else idx + 1
        prime_penalties(sampler, params, [int(t) for t in self.input_ids[:upto]])
        if logits_processor is not None:
            logits = self.scores[idx] if idx is not None and self.logits_all else self.last_logits
            scores = run_logits_processor(logits_processor, self.input_ids[:upto], logits)
            return sampler.sample_logits(self.model, scores)
        return sampler.sample(self.ctx, -1 if idx is None else idx - self.n_tokens)

    def generate(
        self,
        tokens: Sequence[int],
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        temp: float = 0.80,
        repeat_penalty: float = 1.0,
        reset: bool = True,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        tfs_z: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        penalize_nl: bool = True,
        logits_processor: Any = None,
        stopping_criteria: Any = None,
        grammar: Any = None,
        # pybonsai's own
        seed: Optional[int] = None,
        repeat_last_n: Optional[int] = None,
        logit_bias: Optional[dict] = None,
    ) -> Generator[int, Optional[Sequence[int]], None]:
        """Evaluate `tokens`, then yield sampled token ids forever (the caller stops). Tokens
        passed to the generator's send() are evaluated after the sampled one, as in llama-cpp-python.

        With reset=True the context keeps only the prefix it shares with `tokens`. Penalties see
        the last `repeat_last_n` (default: Llama(last_n_tokens_size=)) tokens. `grammar` (GBNF text
        or a LlamaGrammar) constrains every token; `logit_bias` maps token ids to added logits;
        `logits_processor(input_ids, scores) -> scores` may rewrite the logits;
        `stopping_criteria(input_ids, logits) -> bool` (input_ids with the new token) ends it."""
        params, sampler = self._sampler_for(
            top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p, temp=temp, repeat_penalty=repeat_penalty,
            frequency_penalty=frequency_penalty, presence_penalty=presence_penalty, tfs_z=tfs_z,
            mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta,
            penalize_nl=penalize_nl, seed=seed, repeat_last_n=repeat_last_n, grammar=grammar, logit_bias=logit_bias)
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("generate() needs at least one token")
        history = list(self.input_ids[:self.n_tokens]) if not reset else []
        prime_penalties(sampler, params, history + tokens)
        me = object()
        with self._lock:
            self.ctx.clear_cancel()  # a cancel() from here on stops this generation
            pending = self._reuse_prefix(tokens) if reset else tokens
            target = [*self.input_ids[:self.n_tokens].tolist(), *pending]  # the context after the next eval
        if self._speculation is not None:
            yield from speculative.generate(self, self._speculation, sampler, params, pending, target, me,
                                            logits_processor, stopping_criteria)
            return
        while True:
            with self._lock:  # per token, so that threads sharing this Llama take turns
                if self._owner is not me:  # first step, or another call used the context since
                    pending = self._reuse_prefix(target)
                self._inside.generating = True
                try:
                    self.eval(pending)  # through eval(), as llama-cpp-python does (callers hook it)
                finally:
                    self._inside.generating = False
                self._owner = me
                if logits_processor is None:
                    token = sampler.sample(self.ctx, -1)
                else:
                    scores = run_logits_processor(logits_processor, self.input_ids[:self.n_tokens],
                                                  self.last_logits)
                    token = sampler.sample_logits(self.model, scores)
                if stopping_criteria is not None and stopping_criteria(
                        np.append(self.input_ids[:self.n_tokens], np.intc(token)), self.last_logits):
                    return
            sent = yield token
            pending = [token]
            if sent is not None:
                pending += [int(t) for t in sent]
                prime_penalties(sampler, params, pending[1:])
            target += pending

    # -- saved state and the prompt cache ---------------------------------------------------
    def save_state(self) -> state.LlamaState:
        """The evaluated tokens, their logits and llama.cpp's context state (KV cache)."""
        with self._lock:
            return state.save_state(self)

    def load_state(self, saved: state.LlamaState) -> None:
        """Restore a save_state() result. A state from another model, context size or KV type,
        or with damaged bytes, raises ValueError and leaves the context as it was."""
        with self._lock:
            state.load_state(self, saved)
            self._owner = None  # a generate() in progress re-syncs the context

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
    # llama-cpp-python's signatures (positional order and defaults); see pybonsai.completions.
    # Serialized under the Llama's lock (threads sharing it take turns; a stream returns at once
    # and its generate() takes the lock per token).
    create_completion = _serialized(completions.create_completion)
    __call__ = create_completion
    create_chat_completion = _serialized(chat_handlers.create_chat_completion)  # Llama(chat_format/chat_handler=)
    create_chat_completion_openai_v1 = compat.create_chat_completion_openai_v1

    # -- embeddings (Llama(..., embedding=True)) ------------------------------------------
    embed = embeddings.embed
    create_embedding = embeddings.create_embedding
