"""Incremental text assembly for streaming generation: token pieces (raw bytes) in, text that is
final out. Multi-byte UTF-8 characters are never split, and a tail that may still become a stop
string is held back until it is resolved.

Guarantee: "".join(every push()) + finish() == the whole byte stream decoded as UTF-8 (invalid
bytes -> U+FFFD), cut before the earliest occurrence of any stop string."""
from __future__ import annotations

import codecs
from typing import Iterable, List, Optional, Union

__all__ = ["TextAssembler"]


class TextAssembler:
    """Assemble one generation's text from token pieces, honouring stop strings.

    push(piece) returns the text that became final (possibly ""); `stopped` turns True once a
    stop string is confirmed, after which push() returns "". finish() flushes the held tail."""

    def __init__(self, stop: Union[str, Iterable[str], None] = ()):
        stops = [stop] if isinstance(stop, str) else list(stop or ())
        for s in stops:
            if not isinstance(s, str):
                raise TypeError(f"stop strings must be str, got {type(s).__name__}")
        self.stop: tuple[str, ...] = tuple(dict.fromkeys(s for s in stops if s))  # no "" / dups
        self._max_stop = max((len(s) for s in self.stop), default=0)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # decoded text not yet emitted (it may begin a stop string)
        self._emitted: List[str] = []
        self._finished = False
        self.stopped = False
        self.matched_stop: Optional[str] = None

    @property
    def stop_reason(self) -> Optional[str]:
        """"stop" once a stop string ended the text, else None."""
        return "stop" if self.stopped else None

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        if len(self._emitted) > 1:
            self._emitted = ["".join(self._emitted)]
        return self._emitted[0] if self._emitted else ""

    @property
    def held(self) -> str:
        """Decoded text held back because it may start a stop string."""
        return self._pending

    def push(self, piece: Union[bytes, bytearray, memoryview]) -> str:
        """Add one token's bytes; return the text that is now final."""
        if self._finished:
            raise RuntimeError("TextAssembler.push() after finish()")
        if self.stopped:
            return ""
        if isinstance(piece, str):
            raise TypeError("push() takes the token piece as bytes, not str")
        new = self._decoder.decode(bytes(piece))
        if not new:
            return ""
        if not self.stop:
            return self._emit(new)
        self._pending += new
        return self._advance(final=False)

    def finish(self) -> str:
        """No more pieces: flush the held text (an incomplete UTF-8 tail becomes U+FFFD)."""
        if self._finished:
            return ""
        self._finished = True
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(b"", final=True)
        return self._advance(final=True)

    # -- internals -----------------------------------------------------------------------------

    def _emit(self, text: str) -> str:
        if text:
            self._emitted.append(text)
        return text

    def _earliest_match(self) -> tuple[int, Optional[str]]:
        """(index, stop) of the earliest complete stop string in the pending text (shortest on ties)."""
        best, best_stop = len(self._pending), None
        for s in self.stop:
            i = self._pending.find(s, 0, best + len(s))  # no need to look past the best so far
            if i != -1 and (i < best or (i == best and best_stop is not None
                                         and len(s) < len(best_stop))):
                best, best_stop = i, s
        return best, best_stop

    def _earliest_partial(self) -> int:
        """Start of the earliest pending suffix that is a proper prefix of some stop string."""
        pending = self._pending
        for j in range(max(0, len(pending) - self._max_stop + 1), len(pending)):
            tail = pending[j:]
            if any(len(s) > len(tail) and s.startswith(tail) for s in self.stop):
                return j
        return len(pending)

    def _advance(self, final: bool) -> str:
        """Emit what can no longer be part of (or follow) the earliest stop string."""
        index, stop = self._earliest_match()
        # A longer stop string could still complete at an earlier position, unless no more data.
        safe = len(self._pending) if final else self._earliest_partial()
        if stop is not None and index <= safe:
            out = self._pending[:index]
            self._pending = ""
            self.stopped, self.matched_stop = True, stop
            return self._emit(out)
        cut = min(index, safe)
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return self._emit(out)
