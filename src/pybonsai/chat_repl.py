"""The interactive loop behind `pybonsai chat`.

Lines are user messages, except the commands: /think and /no_think (Qwen3's thinking switch,
passed to the chat template as enable_thinking), /reset (forget the conversation), /help, and
/exit or /quit (as is end of input). Ctrl-C while the model answers stops that answer (the turn
is dropped from the history); Ctrl-C at the prompt quits. Answers go to stdout, everything
else (banner, acknowledgements) to stderr.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable, Optional, TextIO

if TYPE_CHECKING:
    from .llama import Llama

HELP = "/think, /no_think: Qwen3 thinking on/off   /reset: forget the conversation   /exit: quit"


def _read_line(interactive: bool) -> str:
    if interactive:
        return input("> ")
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def chat_loop(llm: "Llama", *, enable_thinking: Optional[bool] = None, max_tokens: Optional[int] = None,
              system: Optional[str] = None, sampling: Optional[dict[str, Any]] = None,
              model_name: str = "", read_line: Optional[Callable[[], str]] = None,
              out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """Run the chat until /exit, end of input or Ctrl-C at the prompt; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    if read_line is None:
        interactive = sys.stdin.isatty()
        if interactive:
            try:
                import readline  # noqa: F401 - line editing and history for input()
            except ImportError:
                pass
        read_line = lambda: _read_line(interactive)  # noqa: E731
    base = [{"role": "system", "content": system}] if system else []
    history: list[dict[str, str]] = list(base)
    print(f"pybonsai chat ({model_name}): {HELP}; Ctrl-C stops an answer", file=err)
    while True:
        try:
            line = read_line()
        except (EOFError, KeyboardInterrupt):
            print(file=err)
            return 0
        text = line.strip()
        if not text:
            continue
        command = text.lower()
        if command in ("/exit", "/quit"):
            return 0
        if command in ("/think", "/no_think"):
            enable_thinking = command == "/think"
            print(f"[thinking {'on' if enable_thinking else 'off'}]", file=err)
            continue
        if command == "/reset":
            history = list(base)
            print("[conversation cleared]", file=err)
            continue
        if command in ("/help", "/?"):
            print(HELP, file=err)
            continue
        history.append({"role": "user", "content": line})
        answer = _answer(llm, history, base, enable_thinking, max_tokens, sampling or {}, out, err)
        if answer is None:
            history.pop()  # interrupted or impossible: forget the turn
        else:
            history.append({"role": "assistant", "content": answer})


def _answer(llm: "Llama", history: list[dict[str, str]], base: list[dict[str, str]],
            enable_thinking: Optional[bool], max_tokens: Optional[int], sampling: dict[str, Any],
            out: TextIO, err: TextIO) -> Optional[str]:
    """Stream one answer to `out`; the answer's text, or None if interrupted or too long."""
    while True:
        try:
            stream = llm.create_chat_completion(history, stream=True, enable_thinking=enable_thinking,
                                                max_tokens=max_tokens, **sampling)
            break
        except ValueError as exc:
            if "context window" not in str(exc):
                raise
            if len(history) - len(base) <= 1:
                print(f"[message too long for the context ({llm.n_ctx()} tokens): {exc}]", file=err)
                return None
            del history[len(base):len(base) + 2]  # drop the oldest exchange and try again
            print("[dropped the oldest exchange to fit the context]", file=err)
    parts: list[str] = []
    try:
        for chunk in stream:
            text = chunk["choices"][0]["delta"].get("content")
            if text:
                out.write(text)
                out.flush()
                parts.append(text)
    except KeyboardInterrupt:
        stream.close()
        llm.reset()  # the interrupted evaluation may have left the context half-updated
        out.write("\n")
        out.flush()
        print("[answer stopped]", file=err)
        return None
    out.write("\n")
    out.flush()
    return "".join(parts)
