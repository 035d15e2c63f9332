"""The assistant's text split as it streams: an optional leading <think> block (as
`reasoning_content`, when asked for), plain `content`, and trailing tool-call blocks (held back
and parsed at the end into OpenAI `tool_calls`; when the reply ran out of max_tokens, the complete
calls are kept and a last one cut short is dropped)."""
from __future__ import annotations

from typing import Optional

from .tool_calls import OPEN, partial_marker_len, parse_tool_calls

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class ChatOutput:
    """feed(text) -> deltas ({"content": ...} / {"reasoning_content": ...}); finish() -> the last
    deltas and the tool calls (or None). `think_open`: the prompt itself opened the <think> block
    (Qwen3.5's template ends the generation prompt with "<think>\n"), so the reply starts inside it."""

    def __init__(self, reasoning: bool, tool_names: Optional[frozenset], think_open: bool = False) -> None:
        self.state = ("open_start" if think_open else "start") if reasoning else "content"
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
            elif self.state == "open_start":  # a reply that opens with a tool call skipped the block
                head = self.buf.lstrip()
                if self.tool_names and head.startswith(OPEN):
                    self.buf, self.state = head, "content"
                elif self.tool_names and OPEN.startswith(head):
                    return out
                else:
                    self.state = "think_start"
            elif self.state in ("think_start", "content_start"):  # newlines after a tag are layout
                self.buf = self.buf.lstrip("\n")
                if not self.buf:
                    return out
                self.state = "think" if self.state == "think_start" else "content"
            elif self.state == "think":
                end = self.buf.find(THINK_CLOSE)
                if end < 0:  # hold back a partial </think> and trailing newlines (layout too)
                    cut = len(self.buf[:len(self.buf) - partial_marker_len(self.buf, THINK_CLOSE)].rstrip("\n"))
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
                keep = partial_marker_len(self.buf, OPEN)
                self._emit(out, "content", self.buf[:len(self.buf) - keep])
                self.buf = self.buf[len(self.buf) - keep:]
                return out
            else:  # "tools": everything from the first <tool_call> waits for finish()
                return out

    def finish(self, finish_reason: Optional[str] = None) -> tuple[list[dict], Optional[list[dict]]]:
        out: list[dict] = []
        if self.state == "tools":
            parsed = parse_tool_calls(self.buf, self.tool_names, truncated=finish_reason == "length")
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
        deltas, calls = self.finish(finish)
        deltas += [{"tool_calls": [{"index": i, **call}]} for i, call in enumerate(calls or ())]
        return deltas, ("tool_calls" if calls and finish == "stop" else finish)

    def message(self, texts: list[str], finish: Optional[str]) -> tuple[dict, Optional[str]]:
        """The whole assistant message for the generated `texts`, and the finish reason."""
        deltas = [d for text in texts for d in self.feed(text)]
        last, calls = self.finish(finish)
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
