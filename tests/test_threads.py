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
