"""The assistant's text split as it streams: an optional leading <think> block (as
`reasoning_content`, when asked for), plain `content`, and trailing tool-call blocks (held back
and parsed at the end into OpenAI `tool_calls`)."""
from __future__ import annotations

from typing import Optional

from .tool_calls import OPEN, parse_tool_calls

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def _held(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


class ChatOutput:
    """feed(text) -> deltas ({"content": ...} / {"reasoning_content": ...}); finish() -> the last
    deltas and the tool calls (or None)."""

    def __init__(self, reasoning: bool, tool_names: Optional[frozenset]) -> None:
        self.state = "start" if reasoning else "content"
        self.tool_names = tool_names or None
        self.buf = ""

    def feed(self, text: str) -> list[dict]:
        self.buf += text
        out: list[dict] = []
        while True:
            if self.state == "start":
                head = self.buf.lstrip()
                if head.startswith(THINK_OPEN):
                    self.buf = head[len(THINK_OPEN):]
                    self.state = "think_start"
                elif head and not THINK_OPEN.startswith(head):
                    self.state = "content"
                else:
                    return out
            elif self.state in ("think_start", "content_start"):  # newlines after a tag are layout
                self.buf = self.buf.lstrip("\n")
                if not self.buf:
                    return out
                self.state = "think" if self.state == "think_start" else "content"
            elif self.state == "think":
                end = self.buf.find(THINK_CLOSE)
                if end < 0:  # hold back a partial </think> and trailing newlines (layout too)
                    cut = len(self.buf[:len(self.buf) - _held(self.buf, THINK_CLOSE)].rstrip("\n"))
                    self._emit(out, "reasoning_content", self.buf[:cut])
                    self.buf = self.buf[cut:]
                    return out
                self._emit(out, "reasoning_content", self.buf[:end].rstrip("\n"))
                self.buf = self.buf[end + len(THINK_CLOSE):]
                self.state = "content_start"
            elif self.state == "content":
                if not self.tool_names:
                    self._emit(out, "content", self.buf)
                    self.buf = ""
                    return out
                start = self.buf.find(OPEN)
                if start >= 0:
                    self._emit(out, "content", self.buf[:start])
                    self.buf = self.buf[start:]
                    self.state = "tools"
                    return out
                keep = _held(self.buf, OPEN)
                self._emit(out, "content", self.buf[:len(self.buf) - keep])
                self.buf = self.buf[len(self.buf) - keep:]
                return out
            else:  # "tools": everything from the first <tool_call> waits for finish()
                return out

    def finish(self) -> tuple[list[dict], Optional[list[dict]]]:
        out: list[dict] = []
        if self.state == "tools":
            parsed = parse_tool_calls(self.buf, self.tool_names)
            if parsed is not None:
                rest, calls = parsed
                self._emit(out, "content", rest)
                return out, calls
        self._emit(out, "reasoning_content" if self.state.startswith("think") else "content", self.buf)
        self.buf = ""
        return out, None

    @staticmethod
    def _emit(out: list[dict], key: str, text: str) -> None:
        if text:
            out.append({key: text})

    def final_deltas(self, finish: Optional[str]) -> tuple[list[dict], Optional[str]]:
        """The deltas still held back, tool calls as `tool_calls` deltas, and the finish reason
        ("tool_calls" when the generation ended on its own with calls)."""
        deltas, calls = self.finish()
        deltas += [{"tool_calls": [{"index": i, **call}]} for i, call in enumerate(calls or ())]
        return deltas, ("tool_calls" if calls and finish == "stop" else finish)

    def message(self, texts: list[str], finish: Optional[str]) -> tuple[dict, Optional[str]]:
        """The whole assistant message for the generated `texts`, and the finish reason."""
        deltas = [d for text in texts for d in self.feed(text)]
        last, calls = self.finish()
        deltas += last
        message: dict = {"role": "assistant", "content": "".join(d.get("content", "") for d in deltas)}
        reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
        if reasoning:
            message["reasoning_content"] = reasoning
        if calls:
            message["content"] = message["content"].strip() or None
            message["tool_calls"] = calls
            finish = "tool_calls" if finish == "stop" else finish
        return message, finish
