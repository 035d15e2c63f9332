"""Saved context state: llama-cpp-python's `LlamaState` (tokens, the logits needed to continue,
llama.cpp's state bytes), plus a header of our own that says which model and context the bytes
belong to, so that a state from another model, another context size or KV type, or a corrupted
file is refused with a ValueError before llama.cpp's state setter reads a byte of it.

File format (`LlamaState.save` / `LlamaState.load`, and the on-disk prompt cache):
    b"PYBONSAI-STATE\\n" | u32 little-endian header length | header (JSON) | payload
where the payload is input_ids (int32) | scores (float32) | llama.cpp's state bytes, and the header
records the shapes, the context facts (`StateHeader`) and a CRC-32 of every part.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

if TYPE_CHECKING:
    from .llama import Llama

MAGIC = b"PYBONSAI-STATE\n"
FORMAT_VERSION = 1
_SAMPLE = 1 << 20  # bytes hashed from each end of the model file


def model_fingerprint(path: Union[str, "os.PathLike[str]"]) -> str:
    """Identifies a GGUF by content (not by path): its size and a SHA-256 over its first and last
    MiB — the metadata and tensor table, and the tail of the tensor data, so two files of one
    shape with different weights differ."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(struct.pack("<Q", size))
        h.update(f.read(_SAMPLE))
        if size > _SAMPLE:
            f.seek(max(size - _SAMPLE, _SAMPLE))
            h.update(f.read(_SAMPLE))
    return h.hexdigest()


@dataclass(frozen=True)
class StateHeader:
    """The facts a state depends on; load_state requires all of them to match."""

    model: str        # model_fingerprint()
    n_ctx: int
    n_vocab: int
    type_k: int
    type_v: int
    logits_all: bool
    crc32: int        # of llama_state
    version: int = FORMAT_VERSION

    def mismatch(self, other: "StateHeader") -> Optional[str]:
        """Why a state with header `self` cannot go into a context described by `other`."""
        if self.version != other.version:
            return f"it has format version {self.version}, this pybonsai reads {other.version}"
        if self.model != other.model:
            return "it was saved from a different model file"
        for name in ("n_ctx", "n_vocab", "type_k", "type_v", "logits_all"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                return f"it was saved with {name}={mine}, this context has {name}={theirs}"
        return None


class LlamaState:
    """llama-cpp-python's LlamaState, same attribute names, plus `header` (our validation data).

    input_ids: every evaluated token id (int32, the first n_tokens of a length-n_ctx array);
    scores: the logits to continue from (all evaluated rows with logits_all, else the last row);
    llama_state: llama.cpp's serialized context (KV cache and its last logits);
    seed: the Llama's seed."""

    def __init__(self, input_ids: np.ndarray, scores: np.ndarray, n_tokens: int, llama_state: bytes,
                 llama_state_size: int, seed: int, header: Optional[StateHeader] = None):
        self.input_ids = input_ids
        self.scores = scores
        self.n_tokens = n_tokens
        self.llama_state = llama_state
        self.llama_state_size = llama_state_size
        self.seed = seed
        self.header = header

    @property
    def nbytes(self) -> int:
        """What this state holds in memory: llama.cpp's bytes plus the token and logit arrays."""
        return len(self.llama_state) + self.input_ids.nbytes + self.scores.nbytes

    def __repr__(self) -> str:
        return f"LlamaState(n_tokens={self.n_tokens}, llama_state_size={self.llama_state_size})"

    # -- files ------------------------------------------------------------------------------
    def to_bytes_parts(self, extra: Optional[dict[str, Any]] = None) -> list[bytes]:
        """The file's parts in order (written one after another, never joined in memory)."""
        if self.header is None:
            raise ValueError("this LlamaState has no header (it was not made by Llama.save_state)")
        ids = np.ascontiguousarray(self.input_ids[:self.n_tokens], dtype=np.int32).tobytes()
        scores = np.ascontiguousarray(self.scores, dtype=np.float32)
        head = {"header": dataclasses.asdict(self.header), "n_tokens": self.n_tokens, "seed": self.seed,
                "n_ctx_ids": int(len(self.input_ids)), "scores_shape": list(scores.shape),
                "llama_state_size": self.llama_state_size, "crc_ids": zlib.crc32(ids),
                "crc_scores": zlib.crc32(scores.tobytes()), **(extra or {})}
        blob = json.dumps(head, sort_keys=True).encode()
        return [MAGIC, struct.pack("<I", len(blob)), blob, ids, scores.tobytes(), self.llama_state]

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write this state to `path` (atomically: a temporary file renamed into place)."""
        write_parts(Path(path), self.to_bytes_parts())

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "LlamaState":
        """Read a file written by save(); ValueError if it is not one or it is damaged."""
        state, _ = read_state_file(Path(path))
        return state


def write_parts(path: Path, parts: list[bytes]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_state_file(path: Path) -> tuple[LlamaState, dict[str, Any]]:
    """(state, the JSON header) from a state file; ValueError naming the file on any damage."""
    def bad(why: str) -> ValueError:
        return ValueError(f"'{path}' is not a usable pybonsai state file: {why}")

    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(MAGIC):
        raise bad("wrong magic bytes")
    pos = len(MAGIC)
    if len(data) < pos + 4:
        raise bad("truncated header")
    (n,) = struct.unpack_from("<I", data, pos)
    pos += 4
    try:
        head = json.loads(data[pos:pos + n])
        header = StateHeader(**head["header"])
        n_tokens, n_ctx_ids = int(head["n_tokens"]), int(head["n_ctx_ids"])
        rows, cols = (int(x) for x in head["scores_shape"])
        size = int(head["llama_state_size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise bad(f"unreadable header ({exc})") from None
    pos += n
    if not 0 <= n_tokens <= n_ctx_ids or rows < 0 or cols < 0 or size < 0:
        raise bad("inconsistent sizes in the header")
    ends = np.cumsum([pos, 4 * n_tokens, 4 * rows * cols, size])
    if ends[-1] != len(data):
        raise bad(f"it holds {len(data)} bytes, its header announces {int(ends[-1])} (truncated?)")
    ids_b, scores_b, llama_b = (data[a:b] for a, b in zip(ends[:-1], ends[1:]))
    if zlib.crc32(ids_b) != head.get("crc_ids") or zlib.crc32(scores_b) != head.get("crc_scores") \
            or zlib.crc32(llama_b) != header.crc32:
        raise bad("checksum mismatch (the file is corrupted)")
    input_ids = np.zeros(n_ctx_ids, dtype=np.int32)
    input_ids[:n_tokens] = np.frombuffer(ids_b, dtype=np.int32)
    scores = np.frombuffer(scores_b, dtype=np.float32).reshape(rows, cols).copy()
    state = LlamaState(input_ids, scores, n_tokens, llama_b, size, int(head["seed"]), header)
    return state, head


# -- Llama.save_state / load_state ------------------------------------------------------------

def context_header(llm: "Llama", crc32: int = 0) -> StateHeader:
    return StateHeader(model=llm._fingerprint(), n_ctx=llm.n_ctx(), n_vocab=llm.n_vocab(),
                       type_k=llm.kv_cache.type_k, type_v=llm.kv_cache.type_v,
                       logits_all=bool(llm.logits_all), crc32=crc32)


def save_state(llm: "Llama") -> LlamaState:
    data = llm.ctx.state_get()
    n = llm.n_tokens
    scores = llm.scores[:n].copy() if llm.logits_all else llm.scores[:1].copy()
    return LlamaState(input_ids=llm.input_ids.copy(), scores=scores, n_tokens=n, llama_state=data,
                      llama_state_size=len(data), seed=llm.seed,
                      header=context_header(llm, zlib.crc32(data)))


def check_state(llm: "Llama", state: LlamaState) -> None:
    """ValueError naming the reason if `state` cannot be restored into `llm`'s context."""
    if not isinstance(state, LlamaState):
        raise TypeError(f"load_state needs a LlamaState, not {type(state).__name__}")
    if state.header is None:
        raise ValueError("this LlamaState carries no header (it was not made by pybonsai's save_state), "
                         "so it cannot be checked against this model and context")
    why = state.header.mismatch(context_header(llm, state.header.crc32))
    if why:
        raise ValueError(f"cannot load this state: {why}")
    data = state.llama_state
    if len(data) != state.llama_state_size or zlib.crc32(data) != state.header.crc32:
        raise ValueError("cannot load this state: its llama_state bytes are corrupted (size or checksum mismatch)")
    n = state.n_tokens
    expected_rows = n if llm.logits_all else 1
    if not 0 <= n <= llm.n_ctx() or len(state.input_ids) < n \
            or state.scores.shape != (expected_rows, llm.n_vocab()):
        raise ValueError(f"cannot load this state: n_tokens={n}, input_ids of {len(state.input_ids)} and scores "
                         f"of shape {state.scores.shape} do not fit this context")


def load_state(llm: "Llama", state: LlamaState) -> None:
    check_state(llm, state)
    n = state.n_tokens
    llm.n_tokens = 0  # if llama.cpp refuses, the context is empty (state_set cleared it)
    llm._drop_live_scores()
    llm.ctx.state_set(state.llama_state)
    llm.input_ids[:n] = state.input_ids[:n]
    if llm.logits_all:
        llm.scores[:n] = state.scores
    else:
        llm.scores[0] = state.scores[0]
    llm.n_tokens = n
    llm.seed = state.seed
