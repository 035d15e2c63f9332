"""Embeddings in llama-cpp-python's terms: Llama(..., embedding=True), then embed() (lists of
floats) or create_embedding() (OpenAI's shape). Pooling is llama.cpp's, chosen by
Llama(pooling_type=...) or the GGUF: NONE (one vector per token), MEAN, CLS, LAST.

Each input is decoded on its own (sequence 0, cache cleared before and after), so inputs never
attend to each other and an embedding does not depend on what else was in the call."""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Union

import numpy as np

from .types import CreateEmbeddingResponse

if TYPE_CHECKING:
    from .llama import Llama

__all__ = ["embed", "create_embedding", "POOLING_NONE", "POOLING_MEAN", "POOLING_CLS", "POOLING_LAST",
           "POOLING_RANK"]

# llama.h's enum llama_pooling_type (llama-cpp-python exposes them as LLAMA_POOLING_TYPE_*).
POOLING_UNSPECIFIED, POOLING_NONE, POOLING_MEAN, POOLING_CLS, POOLING_LAST, POOLING_RANK = -1, 0, 1, 2, 3, 4


def _normalized(rows: np.ndarray) -> np.ndarray:
    """Each row scaled to unit L2 norm (an all-zero row stays zero)."""
    norms = np.linalg.norm(rows.astype(np.float64), axis=-1, keepdims=True)
    return np.where(norms > 0, rows / np.where(norms > 0, norms, 1.0), rows)


def _embed_tokens(llm: "Llama", tokens: List[int], pooled: bool) -> np.ndarray:
    ctx = llm.ctx
    llm.reset()
    try:
        ctx.decode(tokens, 0, True)
        return ctx.embeddings(pooled)
    finally:
        llm.reset()


def embed(llm: "Llama", input: Union[str, List[str]], normalize: bool = False, truncate: bool = True,
          return_count: bool = False):
    """Embed a string or a list of strings (llama-cpp-python's Llama.embed).

    Returns one list of floats per input (pooled), or with pooling NONE one list per token; a
    str input gives a single result, a list a list of results. `truncate` cuts inputs longer
    than n_batch (else ValueError); `normalize` scales every vector to unit L2 norm.
    With return_count=True returns (result, number of tokens embedded)."""
    if not llm.embedding:
        raise RuntimeError("Llama model must be created with embedding=True to call this method")
    inputs = [input] if isinstance(input, str) else input
    if not isinstance(inputs, (list, tuple)) or not all(isinstance(t, str) for t in inputs):
        raise TypeError("input must be a str or a list of str")
    pooling = llm.pooling_type()
    if pooling == POOLING_RANK:
        raise ValueError("pooling_type RANK scores query/document pairs with a classification head; "
                         "this model has none to embed with")
    pooled = pooling != POOLING_NONE
    n_batch = llm.ctx.n_batch
    results, total = [], 0
    for text in inputs:
        tokens = llm.tokenize(text.encode("utf-8"))
        if truncate:
            tokens = tokens[:n_batch]
        elif len(tokens) > n_batch:
            raise ValueError(f"Requested tokens ({len(tokens)}) exceed batch size of {n_batch}")
        if not tokens:
            raise ValueError("cannot embed an empty input: it has no tokens")
        total += len(tokens)
        vectors = _embed_tokens(llm, tokens, pooled)
        if normalize:
            vectors = _normalized(vectors)
        results.append(vectors[0].tolist() if pooled else vectors.tolist())
    output = results[0] if isinstance(input, str) else results
    return (output, total) if return_count else output


def create_embedding(llm: "Llama", input: Union[str, List[str]], model: Optional[str] = None
                     ) -> CreateEmbeddingResponse:
    """OpenAI-shaped embeddings of a string or a list of strings (llama-cpp-python's
    Llama.create_embedding): {"object": "list", "data": [...], "model", "usage"}."""
    inputs = input if isinstance(input, list) else [input]
    vectors, total = embed(llm, inputs, return_count=True)
    return {
        "object": "list",
        "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)],
        "model": model if model is not None else llm.model_path,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }
