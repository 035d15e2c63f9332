"""Shared by the structured-output tests: keeping random-weight output short.

Noise models pick whitespace-only tokens often, and llama.cpp's JSON grammars allow up to two
newlines and 20 spaces/tabs wherever JSON allows whitespace, so unbiased outputs are mostly
whitespace and slow to complete. A negative bias on whitespace-only tokens keeps them short;
the grammar alone still decides what is allowed (a biased token stays allowed, just rarer)."""
from __future__ import annotations

import pytest

from pybonsai import Llama


def whitespace_bias(llm, bias: float = -10.0) -> dict[int, float]:
    return {t: bias for t in range(llm.n_vocab())
            if (piece := llm.token_to_piece(t)) and not piece.strip() and not llm.model.is_eog(t)}


@pytest.fixture(scope="module")
def llm(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=1024, n_batch=128, n_threads=1) as model:  # tiny model: threads only wait
        yield model


@pytest.fixture(scope="module")
def short(llm):
    return whitespace_bias(llm)
