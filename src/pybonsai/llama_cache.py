"""Prompt caches for `Llama.set_cache`, under llama-cpp-python's names: `LlamaRAMCache` (alias
`LlamaCache`) and `LlamaDiskCache`, both least-recently-used and bounded in bytes.

A cache maps the tokens a context had evaluated to the `LlamaState` saved after them. Before a
completion, the entry sharing the longest prefix with the new prompt is restored when it shares
more than what the context already holds; after a completion, the context's state is stored. So
a chat's next turn evaluates only the new messages even when other prompts ran in between, and a
disk cache lets a new process skip a long system prompt. A model with a recurrent state (hybrids
such as Bonsai 27B) cannot cut a state back to a shared prefix: there an entry is used only when
all of its tokens start the prompt, and states partway through the prompt are stored too (before
its last control token and before its last token), so that the next chat turn, the same prompt or
one that continues it is served (restore_longest_prefix).

The disk cache uses only the standard library (no `diskcache` dependency): one file per entry in
`LlamaState.save`'s format, named by a hash of its key; least-recently-used by file mtime; writes
are atomic renames, so several processes may share a directory.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np

from .state import LlamaState, read_state_file

if TYPE_CHECKING:
    from .llama import Llama

Key = tuple[int, ...]


def longest_token_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n], dtype=np.int64) != np.asarray(b[:n], dtype=np.int64))
    return int(diff[0]) if diff.size else n


class BaseLlamaCache(ABC):
    """token sequence → LlamaState, bounded by `capacity_bytes`; lookups match by longest prefix."""

    def __init__(self, capacity_bytes: int = (2 << 30)):
        if not isinstance(capacity_bytes, int) or capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be an int >= 0, got {capacity_bytes!r}")
        self.capacity_bytes = capacity_bytes

    @property
    @abstractmethod
    def cache_size(self) -> int:
        """Bytes held now."""

    @abstractmethod
    def _keys(self) -> list[Key]:
        ...

    def _find_longest_prefix_key(self, key: Key) -> Optional[Key]:
        best, best_len = None, 0
        for k in self._keys():
            n = longest_token_prefix(k, key)
            if n > best_len:
                best, best_len = k, n
        return best

    def longest_whole_prefix(self, tokens: Sequence[int]) -> Optional[Key]:
        """The longest key that `tokens` start with entirely (what a recurrent state can continue
        from), or None."""
        tokens = tuple(int(t) for t in tokens)
        whole = [k for k in self._keys() if 0 < len(k) <= len(tokens) and tokens[:len(k)] == k]
        return max(whole, key=len, default=None)

    @abstractmethod
    def _get(self, key: Key) -> LlamaState:
        """The state stored under exactly `key`, marked most recently used (KeyError if gone)."""

    def __getitem__(self, key: Sequence[int]) -> LlamaState:
        """The state whose key shares the longest prefix with `key`; KeyError if none shares any."""
        found = self._find_longest_prefix_key(tuple(key))
        if found is None:
            raise KeyError("no cached state shares a prefix with these tokens")
        return self._get(found)

    def __contains__(self, key: Sequence[int]) -> bool:
        return self._find_longest_prefix_key(tuple(key)) is not None

    @abstractmethod
    def __setitem__(self, key: Sequence[int], value: LlamaState) -> None:
        ...

    def __len__(self) -> int:
        return len(self._keys())


class LlamaRAMCache(BaseLlamaCache):
    """States kept in this process's memory."""

    def __init__(self, capacity_bytes: int = (2 << 30)):
        super().__init__(capacity_bytes)
        self.cache_state: OrderedDict[Key, LlamaState] = OrderedDict()

    @property
    def cache_size(self) -> int:
        return sum(s.nbytes for s in self.cache_state.values())

    def _keys(self) -> list[Key]:
        return list(self.cache_state)

    def _get(self, key: Key) -> LlamaState:
        self.cache_state.move_to_end(key)
        return self.cache_state[key]

    def __setitem__(self, key: Sequence[int], value: LlamaState) -> None:
        key = tuple(int(t) for t in key)
        self.cache_state.pop(key, None)
        self.cache_state[key] = value
        while self.cache_state and self.cache_size > self.capacity_bytes:
            self.cache_state.popitem(last=False)


LlamaCache = LlamaRAMCache  # llama-cpp-python's alias


class LlamaDiskCache(BaseLlamaCache):
    """States in files under `cache_dir` (created if needed), kept across processes."""

    SUFFIX = ".pbstate"

    def __init__(self, cache_dir: Union[str, "os.PathLike[str]"] = ".cache/pybonsai_cache",
                 capacity_bytes: int = (2 << 30)):
        super().__init__(capacity_bytes)
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._index: dict[Key, Path] = {}
        for path in self.cache_dir.glob("*" + self.SUFFIX):
            try:
                _, head = read_state_file(path)
                self._index[tuple(head["key"])] = path
            except (OSError, ValueError, KeyError, TypeError):
                print(f"pybonsai: ignoring unreadable cache file {path}", file=sys.stderr)

    def _path(self, key: Key) -> Path:
        digest = hashlib.sha256(np.asarray(key, dtype=np.int32).tobytes()).hexdigest()[:32]
        return self.cache_dir / (digest + self.SUFFIX)

    def _live(self) -> dict[Key, Path]:
        self._index = {k: p for k, p in self._index.items() if p.exists()}  # another process may evict
        return self._index

    @property
    def cache_size(self) -> int:
        total = 0
        for p in self._live().values():
            try:
                total += p.stat().st_size
            except OSError:
                pass
        return total

    def _keys(self) -> list[Key]:
        return list(self._live())

    def _get(self, key: Key) -> LlamaState:
        path = self._index[key]
        try:
            state, _ = read_state_file(path)
        except FileNotFoundError:
            raise KeyError("the cached state was evicted meanwhile") from None
        self._touch(path)
        return state

    def _touch(self, path: Path) -> None:
        """Mark `path` most recently used. File clocks are coarse (milliseconds), so stamps from
        this process are made strictly increasing."""
        self._clock = max(time.time_ns(), getattr(self, "_clock", 0) + 1)
        os.utime(path, ns=(self._clock, self._clock))

    def __setitem__(self, key: Sequence[int], value: LlamaState) -> None:
        from .state import write_parts

        key = tuple(int(t) for t in key)
        path = self._path(key)
        write_parts(path, value.to_bytes_parts(extra={"key": list(key)}))
        self._touch(path)
        self._index[key] = path
        self._evict()

    def _evict(self) -> None:
        entries = []
        for k, p in self._live().items():
            try:
                st = p.stat()
            except OSError:
                continue
            entries.append((st.st_mtime_ns, st.st_size, k, p))
        entries.sort()
        total = sum(e[1] for e in entries)
        for _, size, k, p in entries:
            if total <= self.capacity_bytes:
                break
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            self._index.pop(k, None)
            total -= size


# -- what Llama's completions call --------------------------------------------------------------

def restore_longest_prefix(llm: "Llama", tokens: Sequence[int]) -> bool:
    """Before evaluating `tokens`: load the cached state sharing the longest prefix with them if it
    shares more than the context holds now. True if a state was loaded.

    A recurrent model (Llama.is_recurrent) cannot cut a state back to a shared prefix, so there only
    a state whose every token starts `tokens[:-1]` counts (the last token is always evaluated, for
    fresh logits), and the prompt is then checkpointed (checkpoint_ends): evaluated up to a point and
    stored, so that a later prompt starting with the same tokens up to that point starts there."""
    cache = llm.cache
    if cache is None or len(tokens) < 2:
        return False
    if llm.is_recurrent:
        return _restore_whole_prefix(llm, cache, [int(t) for t in tokens])
    try:
        state = cache[tokens]
    except KeyError:
        return False
    cached = longest_token_prefix(state.input_ids[:state.n_tokens], tokens)
    current = longest_token_prefix(llm.input_ids[:llm.n_tokens], tokens)
    if cached <= current:
        return False
    return _load(llm, state)


def _load(llm: "Llama", state: LlamaState) -> bool:
    try:
        llm.load_state(state)
    except ValueError as exc:  # e.g. a disk cache shared with another model
        if llm.verbose:
            print(f"pybonsai: prompt cache entry not used: {exc}", file=sys.stderr)
        return False
    return True


def _restore_whole_prefix(llm: "Llama", cache: BaseLlamaCache, tokens: list[int]) -> bool:
    """restore_longest_prefix for a recurrent model (see there)."""
    prefix = tokens[:-1]
    evaluated = llm.input_ids[:llm.n_tokens]
    held = llm.n_tokens if longest_token_prefix(evaluated, prefix) == llm.n_tokens else 0
    key = cache.longest_whole_prefix(prefix)
    loaded = False
    if key is not None and len(key) > held:
        try:
            loaded = _load(llm, cache._get(key))
        except KeyError:  # evicted meanwhile (a disk cache shared with another process)
            pass
    for end in checkpoint_ends(llm, tokens):
        if key is not None and len(key) >= end:
            continue                                      # a cached state covers it already
        pending = llm._reuse_prefix(tokens[:end + 1])[:-1]  # up to `end`, after what is kept
        if pending:
            llm.eval(pending)
        cache[tokens[:end]] = llm.save_state()
    return loaded


def checkpoint_ends(llm: "Llama", tokens: Sequence[int]) -> list[int]:
    """Where a recurrent model's prompt is checkpointed: before its last control token (in a chat
    prompt the start of the reply's turn, up to which the next turn re-renders the conversation
    token for token), and before its last token (for the same prompt again, or one continuing it)."""
    ends = [len(tokens) - 1]
    last_control = next((i for i in range(len(tokens) - 2, 0, -1) if llm.model.is_control(int(tokens[i]))), 0)
    if last_control:
        ends.insert(0, last_control)
    return ends


def remember(llm: "Llama") -> None:
    """After a completion: store the context's state under the tokens it evaluated."""
    cache = llm.cache
    if cache is None or llm.n_tokens == 0:
        return
    cache[llm.input_ids[:llm.n_tokens].tolist()] = llm.save_state()
