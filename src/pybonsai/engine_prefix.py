"""Prompt-prefix reuse for the Engine (llama-server's `cache_prompt`): which sequence a new request
runs in, and how much of its prompt is already there.

A sequence keeps its KV cells after its request ends (the Engine tracks, per slot, the tokens
whose cells it holds). A new request starts from the longest prefix it shares with
- a free slot's tokens (the request then runs there, the rest of that slot's cells dropped),
- a running or free slot's tokens, shared into another free slot: in the unified KV cache
  `seq_cp` just adds a sequence id to those cells, nothing is copied,
- or a state saved to host RAM (`cache_ram`, llama-server's --cache-ram) when a slot's cells
  were dropped, restored with llama_state_seq_set_data,
and prefills only the rest; at least the prompt's last token is always decoded (its logits pick
the first token). Retention never refuses work: every sequence, retained or running, stays within
its n_ctx // n_parallel share of the pool, and a free slot is always taken — the one whose loss
costs least (empty, else least recently used) when no prefix matches.

Models with recurrent layers (the qwen35 hybrid) cannot cut a sequence back: their state is that
of the whole sequence. There a retained sequence (or a saved state) is reused only when every
token it holds starts the new prompt, i.e. the state at the end of the previous request; a chat
turn whose template re-renders the previous reply differently starts from zero."""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Optional, Sequence

__all__ = ["common_prefix", "HostPromptCache", "PrefixPlan", "plan_prefix"]

MIN_SAVE_TOKENS = 64  # a dropped prefix shorter than this is not worth a saved state


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The number of leading tokens `a` and `b` share."""
    a, b = (x if isinstance(x, list) else list(x) for x in (a, b))  # (a tuple slice never equals a list's)
    n = min(len(a), len(b))
    i = 0
    step = 64
    while i < n:  # compare slices first (fast in C), then token by token in the differing slice
        j = min(i + step, n)
        if a[i:j] != b[i:j]:
            while a[i] == b[i]:
                i += 1
            return i
        i = j
    return n


@dataclass
class SavedPrefix:
    tokens: tuple
    data: bytes


class HostPromptCache:
    """Sequence states saved to host RAM, least recently used dropped first, at most
    `capacity` bytes in all."""

    def __init__(self, capacity: int) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
            raise ValueError(f"the host prompt cache size must be an int >= 0 bytes, got {capacity!r}")
        self.capacity = capacity
        self._entries: collections.OrderedDict[tuple, SavedPrefix] = collections.OrderedDict()
        self.bytes = 0
        self.saved = 0      # states stored
        self.restored = 0   # states loaded back into a sequence
        self.dropped = 0    # states dropped for room

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[SavedPrefix]:
        return list(self._entries.values())

    def put(self, tokens: Sequence[int], data: bytes) -> bool:
        """Store a sequence's state; False when it cannot fit at all. A stored state that the new
        one extends is replaced; one that extends the new one makes storing it pointless."""
        key = tuple(tokens)
        if len(data) > self.capacity:
            return False
        for old in list(self._entries):
            if len(old) >= len(key) and old[:len(key)] == key:
                self._entries.move_to_end(old)
                return True
            if old == key[:len(old)]:
                self._remove(old)
        while self.bytes + len(data) > self.capacity:
            self._remove(next(iter(self._entries)))
            self.dropped += 1
        self._entries[key] = SavedPrefix(key, data)
        self.bytes += len(data)
        self.saved += 1
        return True

    def touch(self, entry: SavedPrefix) -> None:
        if entry.tokens in self._entries:
            self._entries.move_to_end(entry.tokens)

    def _remove(self, key: tuple) -> None:
        self.bytes -= len(self._entries.pop(key).data)


@dataclass
class PrefixPlan:
    """Where a request runs and how: `dest` is the slot index; `keep` prompt tokens are reused,
    from the destination itself (source and entry None), shared from slot `source`, or restored
    from the saved `entry`; `save_dest`: store the destination's state in RAM before its cells
    are dropped."""
    dest: int
    keep: int = 0
    source: Optional[int] = None
    entry: Optional[SavedPrefix] = None
    save_dest: bool = False


def _usable(held: Sequence[int], prompt: Sequence[int], recurrent: bool) -> int:
    """How many prompt tokens a sequence holding `held` can give (the last prompt token is always
    decoded); with recurrent layers all of `held` or nothing."""
    n = min(common_prefix(held, prompt), len(prompt) - 1)
    if recurrent:
        return n if n == len(held) else 0
    return n


def plan_prefix(prompt: Sequence[int], free: Sequence[tuple[int, Sequence[int], float]],
                busy: Sequence[tuple[int, Sequence[int]]], saved: Sequence[SavedPrefix], *,
                reuse: bool, recurrent: bool, saving: bool) -> PrefixPlan:
    """Choose for `prompt` among the free slots (index, held tokens, last used), the running
    slots (index, held tokens) and the saved states. `free` must not be empty."""
    def cheapest(exclude: Optional[int] = None) -> tuple[int, Sequence[int], float]:
        pool = [f for f in free if f[0] != exclude] or list(free)
        return min(pool, key=lambda f: (len(f[1]) > 0, f[2]))  # empty first, then least recently used

    def plan(dest: tuple[int, Sequence[int], float], keep: int, **how) -> PrefixPlan:
        kept_in_place = keep if not how else 0
        worth = saving and len(dest[1]) - kept_in_place >= MIN_SAVE_TOKENS
        return PrefixPlan(dest[0], keep, save_dest=worth, **how)

    if not reuse:
        return plan(cheapest(), 0)
    best_keep, best = 0, None
    for f in free:
        k = _usable(f[1], prompt, recurrent)
        if k > best_keep:
            best_keep, best = k, ("free", f)
    if not recurrent:  # sharing cells between sequences: attention KV only
        for b in busy:
            k = _usable(b[1], prompt, recurrent)
            if k > best_keep:
                best_keep, best = k, ("busy", b)
    for e in saved:
        k = _usable(e.tokens, prompt, recurrent)
        if k > best_keep:
            best_keep, best = k, ("saved", e)
    if best is None:
        return plan(cheapest(), 0)
    kind, what = best
    if kind == "free":
        # Continue in that slot when that drops nothing. Otherwise share the prefix's cells into an
        # empty slot (nothing lost), or into the next free slot to give up when continuing would
        # drop many tokens (a long chat that shares only its system prompt with this one) and that
        # slot holds fewer.
        dropped = len(what[1]) - best_keep
        other = cheapest(exclude=what[0]) if len(free) > 1 else None
        if recurrent or other is None or dropped == 0:
            return plan(what, best_keep)
        if not other[1] or (dropped > MIN_SAVE_TOKENS and len(other[1]) < dropped):
            return plan(other, best_keep, source=what[0])
        return plan(what, best_keep)
    if kind == "busy":
        return plan(cheapest(), best_keep, source=what[0])
    return plan(cheapest(), best_keep, entry=what)
