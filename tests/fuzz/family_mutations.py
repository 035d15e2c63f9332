"""Mutation classes of the family seed models (family_doc): what the qwen35 hybrid and ternary
Q2_0 add to a Qwen3 Q1_0 file. Each takes the case's generator and returns (file bytes, what);
the seed document is the case's (mutations._base()).

    ssm_hparams     the recurrent state's sizes: ssm conv kernel, state size, group count,
                    time-step rank (value heads), inner size
    layer_pattern   full_attention_interval, a recurrent_layers list, block_count
    rope            rope.dimension_count and rope.dimension_sections (partial, multi-section RoPE)
    heads           head counts / sizes that do not divide, key heads that do not divide value heads
    quant_blocks    Q2_0 (and Q1_0) tensors cut short: data truncated, ne0 not a multiple of the
                    block, a block type swapped for another of a different size
"""
from __future__ import annotations

import copy
from typing import Callable

from gguf_doc import ARRAY, F32, I32, KV, STRING, U32, U64, serialize
from mutations import _base, _pick, HUGE

_SMALL = [0, 1, 2, 3, 5, 7, 31, 63, 65, 127, 129, 2**16, 2**31 - 1, 2**31, 2**32 - 1]


def _kv(doc, suffix: str):
    arch = next(k.value for k in doc.kvs if k.key == "general.architecture")
    return next((k for k in doc.kvs if k.key == f"{arch}.{suffix}"), None), arch


def _set_u32(rng, doc, suffix: str) -> str:
    kv, arch = _kv(doc, suffix)
    if kv is None:  # a key the seed lacks: add it
        kv = KV(f"{arch}.{suffix}", U32, 0)
        doc.kvs.append(kv)
    true = kv.value if isinstance(kv.value, int) else 1
    if rng.random() < 0.15:
        kv.vtype, kv.value = _pick(rng, [(STRING, "4"), (F32, 4.0), (I32, -1), (U64, 2**40)])
    else:
        kv.vtype, kv.value = U32, int(_pick(rng, _SMALL + [true - 1, true + 1, 2 * true, true // 2]) % 2**32)
    return f"{kv.key} = {kv.value!r}"


def ssm_hparams(rng):
    doc = copy.deepcopy(_base()[0])
    suffixes = ["ssm.conv_kernel", "ssm.state_size", "ssm.group_count", "ssm.time_step_rank", "ssm.inner_size"]
    n = int(_pick(rng, [1, 1, 1, 2]))
    what = [_set_u32(rng, doc, _pick(rng, suffixes)) for _ in range(n)]
    return serialize(doc)[0], "ssm: " + ", ".join(what)


def layer_pattern(rng):
    doc = copy.deepcopy(_base()[0])
    kind = _pick(rng, ["interval", "interval", "recurrent_layers", "block_count"])
    if kind == "interval":
        return serialize(doc)[0], "layers: " + _set_u32(rng, doc, "full_attention_interval")
    if kind == "block_count":
        kv, _ = _kv(doc, "block_count")
        kv.value = int(_pick(rng, [0, 1, 2, 3, 5, 8, 64, 2**16, 2**31]))
        return serialize(doc)[0], f"layers: {kv.key} = {kv.value}"
    _, arch = _kv(doc, "block_count")
    n_layer = next(k.value for k in doc.kvs if k.key == f"{arch}.block_count")
    length = int(_pick(rng, [0, 1, n_layer - 1, n_layer, n_layer + 1, 100]))
    values = [bool(rng.integers(2)) for _ in range(length)]
    sub = _pick(rng, ["bool", "bool", "u32", "string"])
    if sub == "bool":
        kv = KV(f"{arch}.attention.recurrent_layers", ARRAY, values, 7)
    elif sub == "u32":
        kv = KV(f"{arch}.attention.recurrent_layers", ARRAY, [int(v) * 7 for v in values], U32)
    else:
        kv = KV(f"{arch}.attention.recurrent_layers", ARRAY, ["yes"] * length, STRING)
    doc.kvs.append(kv)
    return serialize(doc)[0], f"layers: recurrent_layers {sub}[{length}]"


def rope(rng):
    doc = copy.deepcopy(_base()[0])
    if rng.random() < 0.5:
        return serialize(doc)[0], "rope: " + _set_u32(rng, doc, "rope.dimension_count")
    kv, arch = _kv(doc, "rope.dimension_sections")
    if kv is None:
        kv = KV(f"{arch}.rope.dimension_sections", ARRAY, [], I32)
        doc.kvs.append(kv)
    value = _pick(rng, [[], [8], [3, 3, 2], [3, 3, 2, 0, 0], [100, 0, 0, 0], [-1, 3, 3, 3], [2**31 - 1] * 4,
                        [0, 0, 0, 0], [8, 8, 8, 8], [1] * 64])
    kv.vtype, kv.value, kv.sub = ARRAY, list(value), _pick(rng, [I32, I32, I32, U32, F32])
    if kv.sub == F32:
        kv.value = [float(v) for v in value]
    elif kv.sub == U32:
        kv.value = [v % 2**32 for v in value]
    return serialize(doc)[0], f"rope: {kv.key} = {kv.value[:6]} (type {kv.sub})"


def heads(rng):
    """Head counts / sizes that do not divide each other or the widths (attention and, for the
    hybrid, key heads vs value heads of the linear attention)."""
    doc = copy.deepcopy(_base()[0])
    options = [("attention.head_count", "attention.head_count_kv", [(4, 3), (3, 2), (5, 2), (4, 0), (0, 2),
                                                                     (4, 8), (2**31, 2), (7, 7)]),
               ("attention.key_length", "attention.value_length", [(48, 64), (64, 48), (63, 63), (0, 64),
                                                                   (128, 128), (2**20, 64)])]
    if _kv(doc, "ssm.group_count")[0] is not None:
        options.append(("ssm.group_count", "ssm.time_step_rank", [(4, 6), (5, 6), (2, 5), (0, 6), (6, 4),
                                                                  (2, 0), (3, 3)]))
    a, b, pairs = options[int(rng.integers(len(options)))]
    va, vb = pairs[int(rng.integers(len(pairs)))]
    for suffix, v in ((a, va), (b, vb)):
        kv, _ = _kv(doc, suffix)
        kv.vtype, kv.value = U32, v % 2**32
    return serialize(doc)[0], f"heads: {a} = {va}, {b} = {vb}"


def quant_blocks(rng):
    doc, data, layout = _base()
    quantized = [i for i, t in enumerate(doc.tensors) if t.ttype in (41, 42)]
    i = quantized[int(rng.integers(len(quantized)))]
    t = doc.tensors[i]
    kind = _pick(rng, ["truncate", "truncate", "ne0", "ne0", "type", "short-data"])
    if kind == "truncate":  # the file ends inside this tensor's blocks
        start = layout.boundaries[f"data[{i}]"]
        cut = start + int(_pick(rng, [1, 2, 17, 18, 19, 34, len(t.data) // 2, len(t.data) - 1]))
        return data[:cut], f"blocks: truncated at byte {cut - start} of {t.name} ({len(t.data)} bytes)"
    doc = copy.deepcopy(doc)
    t = doc.tensors[i]
    if kind == "ne0":  # a row length that is not a multiple of the block (or keeps the element count)
        k, rows = t.dims[0], t.dims[1]
        ne0 = int(_pick(rng, [k - 1, k + 1, k // 2 + 32, 32, 63, 65, 96, 100]))
        t.dims = [ne0, rows if rng.random() < 0.5 else max(1, k * rows // max(ne0, 1))]
        return serialize(doc)[0], f"blocks: {t.name} dims {t.dims} (was {[k, rows]})"
    if kind == "type":
        old = t.ttype
        t.ttype = int(_pick(rng, [41, 42, 40, 43, 142, 143, 34, 35, 36] + HUGE[:2]))
        return serialize(doc)[0], f"blocks: {t.name} type {old} -> {t.ttype}"
    cut = int(_pick(rng, [1, 16, 18, len(t.data) // 2]))
    t.data = t.data[:-cut]  # the next tensor's offset moves: the table no longer fits the data
    return serialize(doc)[0], f"blocks: {t.name} data {cut} bytes short"


_HYBRID = (ssm_hparams, layer_pattern, rope, heads, quant_blocks)
_TERNARY = (heads, quant_blocks)
SPECIFIC: dict[str, dict[str, Callable]] = {
    "hybrid": {f.__name__: f for f in _HYBRID},
    "ternary": {f.__name__: f for f in _TERNARY},
}
