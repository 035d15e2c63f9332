"""Threads: eight threads with a Llama each, and eight threads sharing one (serialized), produce
exactly the single-threaded greedy outputs, without crash or deadlock."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pybonsai import Llama

N_THREADS = 8
PROMPTS = [[(7 * i + j) % 250 for j in range(12 + i)] for i in range(N_THREADS)]
JOIN_TIMEOUT_S = 300  # a deadlock shows as a timeout, not a hung suite


def _complete(llm: Llama, prompt: list[int]) -> str:
    return llm.create_completion(prompt, max_tokens=8, temperature=0)["choices"][0]["text"]


@pytest.fixture(scope="module")
def expected(mid_model_path) -> list[str]:
    with Llama(mid_model_path, n_ctx=256, n_threads=1) as llm:
        return [_complete(llm, p) for p in PROMPTS]


def test_eight_threads_each_with_its_own_llama(mid_model_path, expected):
    def work(i: int) -> str:
        with Llama(mid_model_path, n_ctx=256, n_threads=1) as llm:
            return _complete(llm, PROMPTS[i])

    with ThreadPoolExecutor(N_THREADS) as pool:
        results = list(pool.map(work, range(N_THREADS), timeout=JOIN_TIMEOUT_S))
    assert results == expected


def test_eight_threads_sharing_one_llama_are_serialized(mid_model_path, expected):
    with Llama(mid_model_path, n_ctx=256, n_threads=1) as llm:
        start = threading.Barrier(N_THREADS)

        def work(i: int) -> list[str]:
            start.wait()
            return [_complete(llm, PROMPTS[i]) for _ in range(2)]

        with ThreadPoolExecutor(N_THREADS) as pool:
            results = list(pool.map(work, range(N_THREADS), timeout=JOIN_TIMEOUT_S))
    assert results == [[e, e] for e in expected]


def test_streams_from_threads_sharing_one_llama_take_turns(mid_model_path, expected):
    """Streams interleave token by token; each re-syncs the shared context and stays exact."""
    with Llama(mid_model_path, n_ctx=256, n_threads=1) as llm:
        start = threading.Barrier(4)

        def work(i: int) -> str:
            start.wait()
            return "".join(c["choices"][0]["text"] for c in
                           llm.create_completion(PROMPTS[i], max_tokens=8, temperature=0, stream=True))

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(work, range(4), timeout=JOIN_TIMEOUT_S))
    assert results == expected[:4]


class _PausingLock:
    """The Llama's RLock, except that one thread's second outermost acquisition first waits for
    `resume`: it lets a test run another caller between generate()'s set-up and its first step."""

    def __init__(self, lock, thread_name: str):
        self._lock, self._name = lock, thread_name
        self._depth, self._taken = 0, 0
        self.released_once, self.resume = threading.Event(), threading.Event()

    def acquire(self, *args, **kwargs):
        mine = threading.current_thread().name == self._name
        if mine and self._depth == 0:
            self._taken += 1
            if self._taken == 2:
                assert self.resume.wait(JOIN_TIMEOUT_S)
        got = self._lock.acquire(*args, **kwargs)
        if mine:
            self._depth += 1
        return got

    def release(self):
        if threading.current_thread().name == self._name:
            self._depth -= 1
            if self._depth == 0:
                self.released_once.set()
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()


def test_a_generation_set_up_between_steps_does_not_corrupt_a_running_one(mid_model_path, expected):
    """generate()'s set-up cuts the context back to the prefix its prompt shares with it; a stream
    that evaluated the context before must notice at its next step (this once went unnoticed:
    the stream's next token was evaluated on an emptied context)."""
    with Llama(mid_model_path, n_ctx=256, n_threads=1) as llm:
        pausing = _PausingLock(llm._lock, "second-caller")
        llm._lock = pausing
        first = llm.create_completion(PROMPTS[0], max_tokens=8, temperature=0, stream=True)
        text = [next(first)["choices"][0]["text"]]

        second: list[int] = []
        caller = threading.Thread(name="second-caller", target=lambda: second.append(
            next(llm.generate(PROMPTS[1], temp=0))))
        caller.start()
        assert pausing.released_once.wait(JOIN_TIMEOUT_S)  # its set-up has run, its first step waits
        text += [c["choices"][0]["text"] for c in first]
        pausing.resume.set()
        caller.join(JOIN_TIMEOUT_S)
    assert "".join(text) == expected[0]
    with Llama(mid_model_path, n_ctx=256, n_threads=1) as alone:
        assert second == [next(alone.generate(PROMPTS[1], temp=0))]
