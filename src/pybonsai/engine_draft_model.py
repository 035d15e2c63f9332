"""A draft model for the Engine's speculative decoding (`Engine(draft_model=GGUFDraftModel(path))`,
`pybonsai serve --model-draft PATH`): one llama.cpp context of the draft model, with one sequence
per Engine slot, drafts for all drafting slots together.

Per slot the drafter keeps the tokens whose KV cells its draft sequence holds (`held`). Once per
engine step, before the batch is built, `draft` takes each drafting slot's history (prompt and
generated tokens, the last one not yet decoded by the target) and the number of tokens wanted:
- the draft sequence is cut back to the longest prefix it shares with the history (seq_rm):
  rejected drafts go, and a new request in the slot keeps the prefix it shares with the previous
  one there (its prompt is otherwise decoded again);
- one batched decode of every slot's not-yet-seen history (the catch-up; chunked by n_batch), with
  logits at each slot's last token;
- then up to k-1 batched decodes of one token per slot: each slot's greedy draft token (the argmax
  of the draft logits), fed back to draft the next. A slot stops early when the draft model's top
  probability falls under `p_min` (llama.cpp's --draft-p-min; 0: never).
The last draft token is not decoded (no logits are needed after it), so after a step whose drafts
were all accepted the catch-up is that token and the target's next one.

The draft model must share the target's vocabulary (llama_speculative.check_same_vocabulary;
ValueError otherwise) and keep no recurrent state (a recurrent state cannot be cut back to the
accepted tokens). A failed draft decode drops the draft cells and proposes nothing for that step:
drafts only ever change speed, never output (the target verifies every one)."""
from __future__ import annotations

import os
import time
from typing import Any, Optional, Sequence

import numpy as np

from . import _core, kv_cache
from .engine_prefix import common_prefix
from .llama_speculative import check_same_vocabulary

__all__ = ["BatchedDraftModel"]


class BatchedDraftModel:
    """The draft model's context, one sequence per Engine slot (see the module doc)."""

    def __init__(self, model_path: str, target: Any, *, n_parallel: int, n_ctx: int, n_batch: int,
                 n_threads: int, n_threads_batch: int, n_gpu_layers: int = 0, p_min: float = 0.0,
                 verbose: bool = False) -> None:
        from .llama import Llama
        self.model_path = os.fspath(model_path)
        vocab = Llama(self.model_path, vocab_only=True, verbose=verbose)
        try:
            check_same_vocabulary(vocab, target)
        finally:
            vocab.close()
        self.model = _core.Model(self.model_path, n_gpu_layers=n_gpu_layers, vocab_only=False, use_mmap=True,
                                 progress=None)
        if self.model.is_recurrent:
            self.model.close()
            raise ValueError("the draft model keeps a recurrent state, which cannot drop rejected draft tokens: "
                             "use a transformer draft model")
        kv = kv_cache.resolve(None, None, True if n_gpu_layers == 0 else "auto")
        self.ctx = _core.Context(self.model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=n_threads,
                                 n_threads_batch=n_threads_batch, flash_attn=kv.flash_attn, type_k=kv.type_k,
                                 type_v=kv.type_v, n_seq_max=n_parallel, kv_unified=True)
        self.n_batch = self.ctx.n_batch
        self.p_min = float(p_min)
        self.held: list[list[int]] = [[] for _ in range(n_parallel)]
        self.decodes = 0       # batched decodes run
        self.failures = 0      # draft decodes that failed (the draft cells were dropped)
        self.seconds = 0.0     # spent drafting

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.close()
            self.model.close()
            self.ctx = None

    # -- drafting ----------------------------------------------------------------------------
    def draft(self, wants: Sequence[tuple[int, Sequence[int], int]]) -> dict[int, list[int]]:
        """Drafts for several slots at once: `wants` holds (seq, history, k) with k >= 1 and a
        non-empty history; returns {seq: up to k greedy draft tokens}."""
        t0 = time.monotonic()
        try:
            return self._draft(wants)
        except Exception:  # a draft is only ever a guess: none this step, and start the cells afresh
            self.failures += 1
            self.ctx.memory_clear()
            self.held = [[] for _ in self.held]
            return {}
        finally:
            self.seconds += time.monotonic() - t0

    def _draft(self, wants: Sequence[tuple[int, Sequence[int], int]]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        catch_up: list[tuple[int, list[int]]] = []
        for seq, history, k in wants:
            history = list(history)
            held = self.held[seq]
            n = min(common_prefix(held, history), len(history) - 1)  # the last token's logits are needed
            if n < len(held):
                self.ctx.seq_rm(seq, n, -1)
                del held[n:]
            catch_up.append((seq, history[n:]))
            out[seq] = []
        limits = {seq: k for seq, _, k in wants}
        logits = self._catch_up(catch_up)
        active = self._pick(logits, out, limits)
        while active:  # one more draft token per slot and decode
            seqs = list(active)
            tokens = [out[s][-1] for s in seqs]
            pos = [len(self.held[s]) for s in seqs]
            self._decode(tokens, pos, seqs, [True] * len(seqs))
            for s, t in zip(seqs, tokens):
                self.held[s].append(t)
            active = self._pick({s: self.ctx.logits_ith(i) for i, s in enumerate(seqs)}, out, limits)
        return out

    def _catch_up(self, catch_up: list[tuple[int, list[int]]]) -> dict[int, np.ndarray]:
        """Decode each slot's unseen history (batched, chunks of n_batch); the logits of each
        slot's last token."""
        logits: dict[int, np.ndarray] = {}
        tokens: list[int] = []
        pos: list[int] = []
        seqs: list[int] = []
        want: list[bool] = []
        lasts: list[tuple[int, int]] = []

        def flush() -> None:
            if tokens:
                self._decode(tokens, pos, seqs, want)
                for seq, row in lasts:
                    logits[seq] = self.ctx.logits_ith(row)
                tokens.clear(), pos.clear(), seqs.clear(), want.clear(), lasts.clear()

        for seq, rest in catch_up:
            held = self.held[seq]
            i = 0
            while i < len(rest):
                if len(tokens) == self.n_batch:
                    flush()
                j = min(len(rest), i + self.n_batch - len(tokens))
                for t in rest[i:j]:
                    tokens.append(t)
                    pos.append(len(held))
                    seqs.append(seq)
                    want.append(False)
                    held.append(t)
                i = j
            want[-1] = True
            lasts.append((seq, len(tokens) - 1))
        flush()
        return logits

    def _pick(self, logits: dict[int, np.ndarray], out: dict[int, list[int]], limits: dict[int, int]) -> list[int]:
        """Append each slot's greedy token; the slots that want another one."""
        active = []
        for seq, row in logits.items():
            token = int(np.argmax(row))
            if self.p_min > 0.0:
                top = float(row[token])
                if 1.0 / float(np.exp(row.astype(np.float64) - top).sum()) < self.p_min:
                    continue  # the draft model is unsure: stop this slot's draft here
            out[seq].append(token)
            if len(out[seq]) < limits[seq]:
                active.append(seq)
        return active

    def _decode(self, tokens: list[int], pos: list[int], seqs: list[int], want: list[bool]) -> None:
        self.ctx.decode_batch(tokens, pos, seqs, want)
        self.decodes += 1

    def holds(self, seq: int) -> Optional[list[int]]:
        """The tokens the draft sequence `seq` holds (tests)."""
        return list(self.held[seq])
