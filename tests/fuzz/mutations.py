"""Structure-aware mutations of a valid GGUF (tests/fuzz/gguf_doc.py), one function per class.

Every case is a pure function of (seed, index): `make_case(seed, index)` returns the mutation
class, a one-line description and the file's bytes, so any failure can be replayed exactly
(`run_fuzz.py --replay INDEX`). Classes are taken round-robin so every class gets its share.
"""
from __future__ import annotations

import copy
import functools
import re
import struct
from typing import Callable

import numpy as np

from family_doc import family_document
from gguf_doc import (ARRAY, BOOL, F32, F64, GGML_F16, GGML_F32, GGML_Q8_0, I32, I64, KV, SCALAR_FMT,
                      STRING, U8, U32, U64, Document, Layout, base_document, serialize)

U64_MAX = 2**64 - 1
HUGE = [2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, U64_MAX - 1, U64_MAX]


_MODEL = "qwen3"  # the seed document of the case being made (make_case sets it)


def _base() -> tuple[Document, bytes, Layout]:
    return _seed(_MODEL)


@functools.lru_cache(maxsize=None)
def _seed(model: str) -> tuple[Document, bytes, Layout]:
    doc = base_document() if model == "qwen3" else family_document(model)
    data, layout = serialize(doc)
    return doc, data, layout


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _overwrite(data: bytes, layout: Layout, name: str, value: int) -> bytes:
    """Write `value` (wrapped to the field's width) over the field `name`."""
    off, size = layout.fields[name]
    fmt = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}[size]
    out = bytearray(data)
    struct.pack_into(fmt, out, off, value % (1 << (8 * size)))
    return bytes(out)


def _fields(layout: Layout, pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [n for n in layout.fields if rx.fullmatch(n)]


def _interesting(rng: np.random.Generator, true_value: int) -> int:
    choices = [0, 1, true_value - 1, true_value + 1, 2 * true_value + 7] + HUGE
    if rng.random() < 0.2:
        return int(rng.integers(0, 2**63, dtype=np.uint64))
    return _pick(rng, choices)


def _field_value(data: bytes, layout: Layout, name: str) -> int:
    off, size = layout.fields[name]
    return int.from_bytes(data[off:off + size], "little")


def _set_field(rng, pattern: str, label: str) -> tuple[bytes, str]:
    _, data, layout = _base()
    name = _pick(rng, _fields(layout, pattern))
    value = _interesting(rng, _field_value(data, layout, name))
    return _overwrite(data, layout, name, value), f"{label}: {name} = {value}"


# --- the classes ---------------------------------------------------------------------------

def header_count(rng):
    return _set_field(rng, r"header\.n_(tensors|kv)", "header count")


def kv_type(rng):
    _, data, layout = _base()
    name = _pick(rng, _fields(layout, r"kv\[\d+\]\.type|kv\[\d+\]\.value\.sub"))
    value = _pick(rng, [13, 14, 255, 256, 2**31, 2**32 - 1, *range(13)])
    return _overwrite(data, layout, name, value), f"value type: {name} = {value}"


def string_length(rng):
    _, data, layout = _base()
    name = _pick(rng, _fields(layout, r"(kv\[\d+\]\.(key|value)(\[\d+\])?|ti\[\d+\]\.name)\.len"))
    true = _field_value(data, layout, name)
    remaining = len(data) - (layout.fields[name][0] + 8)
    value = _pick(rng, [true + 1, max(true - 1, 0), 0, remaining, remaining + 1, *HUGE])
    return _overwrite(data, layout, name, value), f"string length: {name} = {value}"


def array_length(rng):
    return _set_field(rng, r"kv\[\d+\]\.value\.count", "array length")


def nested_array(rng):
    doc = copy.deepcopy(_base()[0])
    depth = int(_pick(rng, [1, 2, 3, 8, 64, 400]))
    leaf: tuple = (U32, [1, 2, 3])
    for _ in range(depth - 1):
        leaf = (ARRAY, [leaf])
    i = int(rng.integers(len(doc.kvs)))
    if rng.random() < 0.5:  # replace an existing value (maybe a key llama.cpp reads)
        doc.kvs[i] = KV(doc.kvs[i].key, ARRAY, [leaf, leaf], ARRAY)
        where = doc.kvs[i].key
    else:
        doc.kvs.insert(i, KV("fuzz.nested", ARRAY, [leaf], ARRAY))
        where = "fuzz.nested"
    return serialize(doc)[0], f"nested array: depth {depth + 1} at {where}"


def tensor_name(rng):
    doc = copy.deepcopy(_base()[0])
    i = int(rng.integers(len(doc.tensors)))
    kind = _pick(rng, ["empty", "63", "64", "65", "1000", "duplicate", "non-utf8", "nul"])
    name = {"empty": "", "63": "a" * 63, "64": "a" * 64, "65": "a" * 65, "1000": "b" * 1000,
            "duplicate": doc.tensors[(i + 1) % len(doc.tensors)].name,
            "non-utf8": b"blk.0.\xff\xfe".decode("latin-1"), "nul": doc.tensors[i].name + "\0x"}[kind]
    doc.tensors[i].name = name.encode("latin-1") if kind == "non-utf8" else name
    return serialize(doc)[0], f"tensor name: ti[{i}] {kind}"


def n_dims(rng):
    if rng.random() < 0.5:
        _, data, layout = _base()
        name = _pick(rng, _fields(layout, r"ti\[\d+\]\.n_dims"))
        value = _pick(rng, [0, 3, 4, 5, 8, 2**31, 2**32 - 1])
        return _overwrite(data, layout, name, value), f"n_dims field: {name} = {value}"
    doc = copy.deepcopy(_base()[0])
    i = int(rng.integers(len(doc.tensors)))
    extra = int(_pick(rng, [1, 2, 3, 4, 12]))
    doc.tensors[i].dims += [1] * extra
    return serialize(doc)[0], f"n_dims: ti[{i}] has {len(doc.tensors[i].dims)} dims"


def dims(rng):
    _, data, layout = _base()
    if rng.random() < 0.3:  # two dims whose product overflows
        i = int(rng.integers(len(_base()[0].tensors)))
        names = _fields(layout, rf"ti\[{i}\]\.dim\[\d\]")
        if len(names) >= 2:
            big = _pick(rng, [2**32, 2**33, 2**62, 2**63 - 1])
            out = _overwrite(_overwrite(data, layout, names[0], big), layout, names[1], big)
            return out, f"dims: ti[{i}] product overflow {big}^2"
    name = _pick(rng, _fields(layout, r"ti\[\d+\]\.dim\[\d\]"))
    true = _field_value(data, layout, name)
    value = _pick(rng, [0, 1, 127, 129, true * 2, true // 2, *HUGE])
    return _overwrite(data, layout, name, value), f"dims: {name} = {value}"


def ggml_type(rng):
    _, data, layout = _base()
    name = _pick(rng, _fields(layout, r"ti\[\d+\]\.type"))
    value = _pick(rng, [4, 5, 6, 39, 40, 42, 43, 50, 100, 255, 2**31, 2**32 - 1,  # unknown/removed
                        GGML_F32, GGML_F16, GGML_Q8_0, 2, 3, 10, 12, 16, 30])  # valid, mismatched
    return _overwrite(data, layout, name, value), f"ggml type: {name} = {value}"


def offset(rng):
    doc, data, layout = _base()
    names = _fields(layout, r"ti\[\d+\]\.offset")
    i = int(rng.integers(len(names)))
    true = _field_value(data, layout, names[i])
    data_size = layout.boundaries["end"] - layout.boundaries["data"]
    other = _field_value(data, layout, names[(i + 1) % len(names)])
    value = _pick(rng, [true + 1, true + 16, true + 31, other, 0, data_size, data_size + 32,
                        data_size - 32, true - 32, *HUGE])
    return _overwrite(data, layout, names[i], value), f"offset: {names[i]} = {value}"


def alignment(rng):
    doc = copy.deepcopy(_base()[0])
    key = next(k for k in doc.kvs if k.key == "general.alignment")
    kind = _pick(rng, ["value", "value", "value", "type"])
    if kind == "type":
        vtype = _pick(rng, [U8, U64, I32, F32, STRING, BOOL])
        key.vtype, key.value = vtype, {STRING: "32", BOOL: True, F32: 32.0}.get(vtype, 32)
        return serialize(doc)[0], f"alignment: key type {vtype}"
    value = _pick(rng, [0, 1, 2, 3, 7, 16, 31, 33, 64, 4096, 2**31, 2**32 - 1])
    key.value = value
    if rng.random() < 0.5 and 0 < value <= 4096 and value & (value - 1) == 0:
        doc.alignment = value  # laid out consistently: a valid file
    return serialize(doc)[0], f"alignment: general.alignment = {value} (layout {doc.alignment})"


def truncation(rng):
    _, data, layout = _base()
    cuts = sorted(set(layout.boundaries.values()) | {off for off, _ in layout.fields.values()})
    cut = int(_pick(rng, cuts)) + int(_pick(rng, [0, 0, -1, 1]))
    cut = max(0, min(cut, len(data) - 1))
    return data[:cut], f"truncation: at byte {cut} of {len(data)}"


def byte_flip(rng):
    _, data, layout = _base()
    out = bytearray(data)
    header_end = layout.boundaries["data"]
    n = int(_pick(rng, [1, 1, 2, 4, 16]))
    where = []
    for _ in range(n):
        pos = int(rng.integers(4, header_end if rng.random() < 0.85 else len(out)))
        out[pos] ^= 1 << int(rng.integers(8)) if rng.random() < 0.7 else int(rng.integers(1, 256))
        where.append(pos)
    return bytes(out), f"byte flip: {n} at {sorted(where)[:4]}"


_HPARAM_KEYS = ["qwen3.context_length", "qwen3.embedding_length", "qwen3.block_count",
                "qwen3.feed_forward_length", "qwen3.attention.head_count", "qwen3.attention.head_count_kv",
                "qwen3.attention.key_length", "qwen3.attention.value_length",
                "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id"]


def hparams(rng):
    """Metadata values llama.cpp computes with: zero, huge, negative, wrong type, NaN."""
    doc = copy.deepcopy(_base()[0])
    arch = next(k.value for k in doc.kvs if k.key == "general.architecture")
    keys = _HPARAM_KEYS + ["qwen3.rope.freq_base", "qwen3.attention.layer_norm_rms_epsilon",
                           "tokenizer.ggml.token_type", "general.architecture", "tokenizer.ggml.model"]
    key = _pick(rng, [k.replace("qwen3.", arch + ".", 1) for k in keys])
    kv = next(k for k in doc.kvs if k.key == key)
    if kv.vtype == U32:
        if rng.random() < 0.2:
            kv.vtype, kv.value = _pick(rng, [(STRING, "12"), (F32, 2.0), (I32, -1), (U64, 2**40), (BOOL, True)])
        else:
            kv.value = _pick(rng, [0, 1, 3, 7, 2**16, 2**31 - 1, 2**31, 2**32 - 1])
    elif kv.vtype == F32:
        kv.value = _pick(rng, [0.0, -1.0, float("nan"), float("inf"), 1e38])
    elif kv.vtype == STRING:
        kv.value = _pick(rng, ["", "llama", "bert", "t5", "mamba", "qwen3moe", "x" * 300, "none", "spm", "bert"])
    else:  # token types
        kv.value = [_pick(rng, [0, 1, 3, 6, 255, -1, 2**31 - 1]) for _ in kv.value]
    return serialize(doc)[0], f"hparam: {kv.key} = {str(kv.value)[:40]} (type {kv.vtype})"


def vocab(rng):
    """Tokenizer arrays that disagree with the model: sizes, merges, special ids."""
    doc = copy.deepcopy(_base()[0])
    tokens = next(k for k in doc.kvs if k.key == "tokenizer.ggml.tokens")
    kind = _pick(rng, ["short", "long", "empty", "types-short", "merges-bad", "merges-empty",
                       "dup-tokens", "bad-utf8", "scores-wrong-type"])
    if kind == "short":
        tokens.value = tokens.value[:int(rng.integers(1, len(tokens.value)))]
    elif kind == "long":
        tokens.value = tokens.value + [f"x{i}" for i in range(int(rng.integers(1, 500)))]
    elif kind == "empty":
        tokens.value = []
    elif kind == "types-short":
        next(k for k in doc.kvs if k.key == "tokenizer.ggml.token_type").value = [1, 1]
    elif kind == "merges-bad":
        next(k for k in doc.kvs if k.key == "tokenizer.ggml.merges").value = ["nospace", " ", "a b c", ""]
    elif kind == "merges-empty":
        next(k for k in doc.kvs if k.key == "tokenizer.ggml.merges").value = []
    elif kind == "dup-tokens":
        tokens.value = ["a"] * len(tokens.value)
    elif kind == "bad-utf8":
        tokens.value = [b"\xff\xfe".decode("latin-1")] + tokens.value[1:]
    else:
        doc.kvs.append(KV("tokenizer.ggml.scores", ARRAY, ["x"] * len(tokens.value), STRING))
    return serialize(doc)[0], f"vocab: {kind}"


def structure(rng):
    """Duplicate or missing keys and tensors, version field, a string key type on a scalar key."""
    doc = copy.deepcopy(_base()[0])
    kind = _pick(rng, ["dup-key", "drop-key", "drop-tensor", "dup-tensor", "version", "extra-kv",
                       "zero-tensors", "many-kv"])
    if kind == "dup-key":
        i = int(rng.integers(len(doc.kvs)))
        doc.kvs.append(copy.deepcopy(doc.kvs[i]))
        detail = doc.kvs[i].key
    elif kind == "drop-key":
        i = int(rng.integers(len(doc.kvs)))
        detail = doc.kvs.pop(i).key
    elif kind == "drop-tensor":
        i = int(rng.integers(len(doc.tensors)))
        detail = doc.tensors.pop(i).name
    elif kind == "dup-tensor":
        i = int(rng.integers(len(doc.tensors)))
        doc.tensors.append(copy.deepcopy(doc.tensors[i]))
        detail = doc.tensors[i].name
    elif kind == "version":
        doc.version = _pick(rng, [0, 1, 2, 4, 2**31, 2**32 - 1])
        detail = str(doc.version)
    elif kind == "extra-kv":
        vtype = _pick(rng, [U8, I32, U64, I64, F64, BOOL, STRING])
        doc.kvs.append(KV("fuzz.extra", vtype, "" if vtype == STRING else 0))
        detail = str(vtype)
    elif kind == "zero-tensors":
        doc.tensors = []
        detail = ""
    else:
        doc.kvs += [KV(f"fuzz.k{i}", U8, 1) for i in range(int(rng.integers(100, 5000)))]
        detail = str(len(doc.kvs))
    return serialize(doc)[0], f"structure: {kind} {detail}"


CLASSES: dict[str, Callable] = {f.__name__: f for f in (
    header_count, kv_type, string_length, array_length, nested_array, tensor_name, n_dims, dims,
    ggml_type, offset, alignment, truncation, byte_flip, hparams, vocab, structure)}


MODELS = ("qwen3", "hybrid", "ternary")  # seed documents: gguf_doc's, family_doc's


def classes_for(model: str = "qwen3", specific_only: bool = False) -> dict[str, Callable]:
    """The mutation classes of a seed model: the generic ones, then the model's own
    (family_mutations); `specific_only`: the model's own only."""
    own = SPECIFIC.get(model, {})
    return dict(own) if specific_only else {**CLASSES, **own}


def make_case(seed: int, index: int, model: str = "qwen3", specific_only: bool = False) -> tuple[str, str, bytes]:
    """(class, description, file bytes) of case `index` of the run with `seed` on `model`."""
    global _MODEL
    if model not in MODELS:
        raise ValueError(f"unknown seed model {model!r}; choose from {MODELS}")
    _MODEL = model
    try:
        return _make_case(seed, index, classes_for(model, specific_only))
    finally:
        _MODEL = "qwen3"


def _make_case(seed: int, index: int, classes: dict[str, Callable]) -> tuple[str, str, bytes]:
    rng = np.random.default_rng([seed, index])
    names = list(classes)
    name = names[index % len(names)]
    data, what = classes[name](rng)
    if rng.random() < 0.1 and name not in ("truncation",):  # sometimes a second, random mutation
        second = names[int(rng.integers(len(names)))]
        if second not in ("truncation", "nested_array", "structure", "vocab", "hparams", "tensor_name",
                          "n_dims", "alignment"):
            # byte-level mutations of the base file: apply the second one's changed bytes on top
            base = _base()[1]
            other, what2 = classes[second](rng)
            if len(other) == len(base) == len(data):
                out = bytearray(data)
                for i in np.flatnonzero(np.frombuffer(other, np.uint8) != np.frombuffer(base, np.uint8)):
                    out[i] = other[i]
                data, what = bytes(out), f"{what} + {what2}"
    return name, what, data


def valid_file() -> bytes:
    return _base()[1]


from family_mutations import SPECIFIC  # noqa: E402 - its classes use the helpers above

__all__ = ["CLASSES", "MODELS", "SPECIFIC", "classes_for", "make_case", "valid_file", "SCALAR_FMT", "I64", "U8"]
