"""Helpers for the tests of context reuse (prompt caches, prefix reuse, saved states): what reaches
Llama.eval, and a two-turn chat with an unrelated prompt in between."""
from __future__ import annotations

from pybonsai import Llama

SYSTEM = ("You are a careful assistant. " * 12).strip()


def record_evals(llm: Llama, monkeypatch) -> list[list[int]]:
    """Record the token lists that reach llm.eval (generate and the prompt cache go through it)."""
    calls: list[list[int]] = []
    real = Llama.eval

    def recording(tokens):
        calls.append([int(t) for t in tokens])
        return real(llm, tokens)

    monkeypatch.setattr(llm, "eval", recording)
    return calls


def chat_turns(llm: Llama, cache, monkeypatch) -> tuple[int, int, str]:
    """Turn 1, an unrelated prompt that takes over the context, turn 2: tokens evaluated in
    turn 2, the length of its prompt, and turn 2's text."""
    llm.reset()
    llm.set_cache(cache)
    history = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Tell me about foxes."}]
    first = llm.create_chat_completion(history, max_tokens=8, temperature=0, enable_thinking=False)
    history += [first["choices"][0]["message"], {"role": "user", "content": "And dogs?"}]
    llm.create_completion("An unrelated prompt that replaces the context", max_tokens=4, temperature=0)
    calls = record_evals(llm, monkeypatch)
    second = llm.create_chat_completion(history, max_tokens=8, temperature=0, enable_thinking=False)
    monkeypatch.undo()
    llm.set_cache(None)
    return sum(map(len, calls)), second["usage"]["prompt_tokens"], second["choices"][0]["message"]["content"]
