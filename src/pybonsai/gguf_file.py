"""GGUF files before llama.cpp sees them: cheap path checks for every load, and a bounds-checked
header scanner (metadata scalars and the tensor table) for `pybonsai info`.

A GGUF from the Hub is untrusted input. Everything here reads through one cursor that checks each
read against the end of the file and raises `GGUFError` (a ValueError) naming the file, the byte
offset and the cause; the rules are those of the pinned llama.cpp's own parser (gguf.cpp), so a
file this scanner accepts is one llama.cpp accepts too, and the reverse.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .ggml_types import quant_size, type_name

__all__ = ["GGUFError", "GGUFSummary", "TensorInfo", "check_gguf_path", "mmap_compatible", "scan_gguf"]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
HEADER_SIZE = 24  # magic, version, tensor count, key/value count
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
MAX_NAME = 64  # GGML_MAX_NAME: tensor names are shorter than this, NUL included
MAX_STRING = MAX_ARRAY = 1 << 30  # gguf.cpp's GGUF_MAX_STRING_LENGTH / GGUF_MAX_ARRAY_ELEMENTS
INT64_MAX = 2**63 - 1
TENSOR_ALIGNMENT = 32  # ggml's: a backend buffer made from a mapped file must start at a multiple
# smallest possible records, to bound the header's counts by the file size
_MIN_KV_BYTES = 8 + 1 + 4 + 1      # key length, 1-byte key, type, 1-byte value
_MIN_TENSOR_BYTES = 8 + 1 + 4 + 4 + 8  # name length, 1-byte name, n_dims, type, offset

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_ALIGNMENT_KEY = "general.alignment"
SMALL_ARRAY = 512


class GGUFError(ValueError):
    """A GGUF file is malformed; the message names the file, where and what."""


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
        raise GGUFError(f"{path} is not a GGUF file (it starts with {header[:4]!r}, expected {GGUF_MAGIC!r})")
    if len(header) < HEADER_SIZE:
        raise GGUFError(f"{path} is truncated: {len(header)} bytes, shorter than a GGUF header")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", header, 4)
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(f"{path} has GGUF version {version}; supported: {SUPPORTED_VERSIONS}")
    _check_counts(path, n_tensors, n_kv, path.stat().st_size)
    return path


def mmap_compatible(path: str | os.PathLike) -> bool:
    """Whether llama.cpp can memory-map the tensor data of `path`.

    A GGUF whose general.alignment is a power of two below 32 (legal in the format) can put the
    data section at an offset that is not a multiple of ggml's TENSOR_ALIGNMENT; the loader then
    aborts the process (GGML_ASSERT "buffer pointer must be aligned") when it wraps the mapping
    in a backend buffer. Found by the GGUF fuzzer (tests/fuzz). Such files load fine without
    mmap. Parsed by llama.cpp's own gguf reader (no tensor data is read); a file it cannot parse
    counts as compatible, so that the real load reports the cause."""
    from . import _core

    try:
        layout = _core.gguf_layout(str(path))
    except RuntimeError:
        return True
    return layout["n_tensors"] == 0 or layout["data_offset"] % TENSOR_ALIGNMENT == 0


def _check_counts(path: Path, n_tensors: int, n_kv: int, size: int) -> None:
    room = size - HEADER_SIZE
    for what, n, each in (("tensors", n_tensors, _MIN_TENSOR_BYTES), ("key/value pairs", n_kv, _MIN_KV_BYTES)):
        if n * each > room:
            raise GGUFError(f"{path}: the header claims {n} {what}, but the file ({size} bytes) "
                            f"has room for at most {room // each}")


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]   # ggml order (ne0 first)
    type: int
    offset: int              # relative to the data section
    n_elements: int
    n_bytes: Optional[int]   # None for a type the gguf package does not know

    @property
    def type_name(self) -> str:
        return type_name(self.type)


@dataclass
class GGUFSummary:
    path: Path
    version: int
    metadata: dict[str, Any]           # scalars and strings; arrays as ("array", length)
    kv_range: tuple[int, int]          # byte range of the key/value section
    n_kv: int
    tensors: list[TensorInfo] = field(default_factory=list)
    alignment: int = DEFAULT_ALIGNMENT
    data_offset: int = 0
    # the values of numeric arrays of at most SMALL_ARRAY elements (rope sections, per-layer lists)
    small_arrays: dict[str, tuple] = field(default_factory=dict)


class _Cursor:
    """Bounds-checked little-endian reads from a buffer; errors name the file and the offset."""

    def __init__(self, buf: Any, path: Path):
        self.buf, self.path, self.pos, self.end = buf, path, 0, len(buf)

    def fail(self, what: str, at: Optional[int] = None) -> GGUFError:
        return GGUFError(f"{self.path}: {what} (at byte {self.pos if at is None else at} of {self.end})")

    def need(self, n: int, what: str) -> None:
        if n > self.end - self.pos:
            raise self.fail(f"{what} needs {n} bytes but the file ends after {self.end - self.pos}")

    def scalar(self, fmt: str, what: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(size, what)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def skip_string(self, what: str) -> int:
        n = self.scalar("<Q", f"the length of {what}")
        if n > MAX_STRING:
            raise self.fail(f"{what} claims a length of {n} bytes (the limit is {MAX_STRING})", self.pos - 8)
        self.need(n, what)
        self.pos += n
        return n

    def string(self, what: str) -> str:
        n = self.skip_string(what)
        return bytes(self.buf[self.pos - n:self.pos]).decode("utf-8", "replace")


_U64 = struct.Struct("<Q")


def _skip_strings(cur: _Cursor, n: int, key: str) -> None:
    """Skip an array of `n` strings (a vocabulary has ~150k: this loop is kept tight)."""
    unpack, buf, pos, last = _U64.unpack_from, cur.buf, cur.pos, cur.end - 8
    for i in range(n):
        if pos > last:
            cur.pos = pos
            raise cur.fail(f"element {i} of array {key!r} runs past the end of the file")
        length = unpack(buf, pos)[0]
        if length > MAX_STRING:
            cur.pos = pos
            raise cur.fail(f"element {i} of array {key!r} claims a length of {length} bytes")
        pos += 8 + length
    if pos > cur.end:
        raise cur.fail(f"the last element of array {key!r} runs past the end of the file")
    cur.pos = pos


def _value_type(cur: _Cursor, key: str, *, array: bool = False) -> int:
    vtype = cur.scalar("<I", f"the type of {key!r}")
    if vtype == _ARRAY and array:
        raise cur.fail(f"{key!r} is an array of arrays, which GGUF readers do not support", cur.pos - 4)
    if vtype not in _SCALARS and vtype not in (_STRING, _ARRAY):
        raise cur.fail(f"{key!r} has invalid value type {vtype}", cur.pos - 4)
    return vtype


def _read_kv(cur: _Cursor, meta: dict[str, Any], index: int, small: dict[str, tuple]) -> None:
    key = cur.string(f"key {index}")
    if not key:
        raise cur.fail(f"key {index} is empty")
    if key in meta:
        raise cur.fail(f"duplicate key {key!r}")
    vtype = _value_type(cur, key)
    if vtype in _SCALARS:
        meta[key] = cur.scalar(_SCALARS[vtype], f"the value of {key!r}")
    elif vtype == _STRING:
        meta[key] = cur.string(f"the value of {key!r}")
    else:
        sub = _value_type(cur, key, array=True)
        n = cur.scalar("<Q", f"the length of array {key!r}")
        if n > MAX_ARRAY:
            raise cur.fail(f"array {key!r} claims {n} elements (the limit is {MAX_ARRAY})", cur.pos - 8)
        if sub == _STRING:
            cur.need(8 * n, f"array {key!r} of {n} strings")
            _skip_strings(cur, n, key)
        else:
            size = struct.calcsize(_SCALARS[sub]) * n
            cur.need(size, f"array {key!r} of {n} elements")
            if n <= SMALL_ARRAY:
                small[key] = struct.unpack_from(f"<{n}{_SCALARS[sub][1]}", cur.buf, cur.pos)
            cur.pos += size
        meta[key] = ("array", n)
    if key == _ALIGNMENT_KEY:
        if vtype != 4:
            raise cur.fail(f"{key!r} must be a uint32 (type 4), not type {vtype}")
        if meta[key] == 0 or meta[key] & (meta[key] - 1):
            raise cur.fail(f"{key!r} = {meta[key]} is not a power of 2")


def _read_tensor(cur: _Cursor, names: set[str], index: int) -> TensorInfo:
    name = cur.string(f"the name of tensor {index}")
    if len(name.encode("utf-8", "surrogateescape")) >= MAX_NAME:
        raise cur.fail(f"tensor {index}'s name is {len(name)} bytes long (the limit is {MAX_NAME - 1})")
    if name in names:
        raise cur.fail(f"duplicate tensor name {name!r}")
    names.add(name)
    n_dims = cur.scalar("<I", f"the number of dimensions of {name!r}")
    if n_dims > MAX_DIMS:
        raise cur.fail(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})", cur.pos - 4)
    shape = tuple(cur.scalar("<q", f"dimension {j} of {name!r}") for j in range(n_dims))
    if any(d < 0 for d in shape):
        raise cur.fail(f"tensor {name!r} has a negative dimension: {shape}")
    n_el = 1
    for d in shape:
        n_el *= d
    if n_el > INT64_MAX:
        raise cur.fail(f"tensor {name!r} has too many elements: shape {shape}")
    ttype = cur.scalar("<I", f"the type of {name!r}")
    try:
        block, type_size = quant_size(ttype)
    except KeyError:
        raise cur.fail(f"tensor {name!r} has unknown ggml type {ttype}", cur.pos - 4) from None
    ne0 = shape[0] if shape else 1
    if ne0 % block:
        raise cur.fail(f"tensor {name!r} of type {type_name(ttype)} has {ne0} elements "
                       f"per row, not a multiple of its block size {block}")
    offset = cur.scalar("<Q", f"the data offset of {name!r}")
    return TensorInfo(name, shape, ttype, offset, n_el, n_el // block * type_size)


def scan_gguf(path: str | os.PathLike) -> GGUFSummary:
    """The metadata scalars and tensor table of a GGUF file (v2/v3), checked but without reading
    arrays: gguf.GGUFReader builds numpy views of every key/value, which takes seconds for the
    ~150k tokenizer strings of a Qwen vocabulary. Raises GGUFError naming any defect."""
    path = check_gguf_path(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        cur = _Cursor(buf, path)
        cur.pos = 4
        version, n_tensors, n_kv = cur.scalar("<I", "the version"), cur.scalar("<Q", "the tensor count"), \
            cur.scalar("<Q", "the key/value count")
        meta: dict[str, Any] = {}
        small: dict[str, tuple] = {}
        kv_start = cur.pos
        for i in range(n_kv):
            _read_kv(cur, meta, i, small)
        kv_end = cur.pos
        names: set[str] = set()
        tensors = [_read_tensor(cur, names, i) for i in range(n_tensors)]
        align = int(meta.get(_ALIGNMENT_KEY, DEFAULT_ALIGNMENT))
        data = (cur.pos + align - 1) // align * align
        expected = 0
        for t in tensors:  # laid out back to back, each padded to the alignment
            if t.offset != expected:
                raise cur.fail(f"tensor {t.name!r} has data offset {t.offset}, expected {expected} "
                               "(tensors must be stored in order, aligned and without overlap)")
            expected += (t.n_bytes + align - 1) // align * align
        if tensors and data + sum(t.n_bytes for t in tensors) > cur.end:
            raise cur.fail(f"the tensor data needs {data + sum(t.n_bytes for t in tensors)} bytes; "
                           "the file is truncated", cur.end)
    return GGUFSummary(path, version, meta, (kv_start, kv_end), n_kv, tensors, align, data, small)
