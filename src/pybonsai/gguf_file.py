"""Cheap checks of a model path before llama.cpp sees it, so bad input gets a clear exception."""
from __future__ import annotations

import os
import struct
from pathlib import Path

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
HEADER_SIZE = 24  # magic, version, tensor count, key/value count


def check_gguf_path(model_path: str | os.PathLike) -> Path:
    """Return `model_path` as a Path if it looks like a GGUF file; raise naming the problem if not."""
    if not isinstance(model_path, (str, os.PathLike)):
        raise TypeError(f"model_path must be a str or os.PathLike, not {type(model_path).__name__}")
    path = Path(model_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"model path is a directory, not a GGUF file: {path}")
    with open(path, "rb") as f:
        header = f.read(HEADER_SIZE)
    if header[:4] != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file (it starts with {header[:4]!r}, expected {GGUF_MAGIC!r})")
    if len(header) < HEADER_SIZE:
        raise ValueError(f"{path} is truncated: {len(header)} bytes, shorter than a GGUF header")
    (version,) = struct.unpack_from("<I", header, 4)
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"{path} has GGUF version {version}; supported: {SUPPORTED_VERSIONS}")
    return path
