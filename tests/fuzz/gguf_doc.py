"""A GGUF file as an editable structure, for the fuzzer.

`base_document()` is a complete, loadable, very small Qwen3 model (one layer, 128-wide, a
byte-level vocabulary of ~260 tokens), so that one load costs milliseconds. `serialize()` writes a
document and returns a map of where every field landed, so that mutations can overwrite one
field (a count, a length, a type, a dimension, an offset) in place, or change the structure
(extra dimensions, nested arrays, long names, alignment) and write the file again.

The writer is deliberately independent of the `gguf` package: it must be able to write files
that the package would refuse to produce.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
              U64: "<Q", I64: "<q", F64: "<d"}
# ggml types used here
GGML_F32, GGML_F16, GGML_Q8_0, GGML_Q1_0 = 0, 1, 8, 41
Q1_0_BLOCK, Q1_0_BYTES = 128, 18


@dataclass(frozen=True)
class Shape:
    n_embd: int = 128
    n_layer: int = 1
    n_head: int = 2
    n_head_kv: int = 1
    head_dim: int = 64
    n_ff: int = 128


FUZZ_SHAPE = Shape()
# Mid-sized (~7 MB, ~50M weights): prefills take seconds, loads milliseconds (small vocabulary).
MID_SHAPE = Shape(n_embd=1024, n_layer=4, n_head=8, n_head_kv=4, head_dim=128, n_ff=3072)


@dataclass
class KV:
    key: str
    vtype: int
    value: Any               # scalar, str, or list (ARRAY); nested arrays: list of (sub_type, list)
    sub: Optional[int] = None  # element type of an ARRAY


@dataclass
class Tensor:
    name: str
    dims: list[int]          # ggml order (ne0 first)
    ttype: int
    data: bytes
    offset: Optional[int] = None  # None: laid out in order, aligned


@dataclass
class Document:
    kvs: list[KV]
    tensors: list[Tensor]
    version: int = 3
    alignment: int = 32       # used for the layout; the general.alignment key is separate
    n_kv: Optional[int] = None        # header counts: None = the true ones
    n_tensors: Optional[int] = None


@dataclass
class Layout:
    """Byte positions of the fields of a serialized document: name -> (offset, size)."""
    fields: dict[str, tuple[int, int]] = field(default_factory=dict)
    boundaries: dict[str, int] = field(default_factory=dict)  # section name -> start offset


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode alphabet: one token per byte, as BPE vocabularies store them."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _q1_rows(rng: np.random.Generator, rows: int, k: int) -> bytes:
    nb = k // Q1_0_BLOCK
    out = np.empty((rows, nb, Q1_0_BYTES), dtype=np.uint8)
    scales = (rng.uniform(0.75, 1.25, size=(rows, nb)) / np.sqrt(k)).astype("<f2")
    out[:, :, :2] = scales.view(np.uint8).reshape(rows, nb, 2)
    out[:, :, 2:] = rng.integers(0, 256, size=(rows, nb, 16), dtype=np.uint8)
    return out.tobytes()


def base_document(seed: int = 0, shape: Shape = FUZZ_SHAPE) -> Document:
    """A valid model of `shape` (FUZZ_SHAPE: one 128-wide layer) with a ~260-token vocabulary."""
    rng = np.random.default_rng(seed)
    tokens = _byte_tokens() + ["he", "Ġt", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    n_vocab = len(tokens)
    types = [1] * (n_vocab - 3) + [3, 3, 3]
    kvs = [
        KV("general.architecture", STRING, "qwen3"),
        KV("general.name", STRING, "fuzz seed"),
        KV("general.alignment", U32, 32),
        KV("qwen3.context_length", U32, 4096),
        KV("qwen3.embedding_length", U32, shape.n_embd),
        KV("qwen3.block_count", U32, shape.n_layer),
        KV("qwen3.feed_forward_length", U32, shape.n_ff),
        KV("qwen3.attention.head_count", U32, shape.n_head),
        KV("qwen3.attention.head_count_kv", U32, shape.n_head_kv),
        KV("qwen3.attention.key_length", U32, shape.head_dim),
        KV("qwen3.attention.value_length", U32, shape.head_dim),
        KV("qwen3.rope.freq_base", F32, 1e6),
        KV("qwen3.attention.layer_norm_rms_epsilon", F32, 1e-6),
        KV("tokenizer.ggml.model", STRING, "gpt2"),
        KV("tokenizer.ggml.pre", STRING, "qwen2"),
        KV("tokenizer.ggml.tokens", ARRAY, tokens, STRING),
        KV("tokenizer.ggml.token_type", ARRAY, types, I32),
        KV("tokenizer.ggml.merges", ARRAY, ["h e", "Ġ t"], STRING),
        KV("tokenizer.ggml.eos_token_id", U32, n_vocab - 1),
        KV("tokenizer.ggml.padding_token_id", U32, n_vocab - 3),
        KV("tokenizer.ggml.add_bos_token", BOOL, False),
        KV("tokenizer.chat_template", STRING,
           "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"),
    ]
    e, q, kv = shape.n_embd, shape.n_head * shape.head_dim, shape.n_head_kv * shape.head_dim

    def q1(name: str, rows: int, k: int) -> Tensor:
        return Tensor(name, [k, rows], GGML_Q1_0, _q1_rows(rng, rows, k))

    def norm(name: str, n: int) -> Tensor:
        return Tensor(name, [n], GGML_F32, rng.uniform(0.8, 1.2, n).astype("<f4").tobytes())

    tensors = [q1("token_embd.weight", n_vocab, e)]
    for i in range(shape.n_layer):
        b = f"blk.{i}."
        tensors += [
            norm(b + "attn_norm.weight", e),
            q1(b + "attn_q.weight", q, e), q1(b + "attn_k.weight", kv, e), q1(b + "attn_v.weight", kv, e),
            norm(b + "attn_q_norm.weight", shape.head_dim), norm(b + "attn_k_norm.weight", shape.head_dim),
            q1(b + "attn_output.weight", e, q),
            norm(b + "ffn_norm.weight", e),
            q1(b + "ffn_gate.weight", shape.n_ff, e), q1(b + "ffn_up.weight", shape.n_ff, e),
            q1(b + "ffn_down.weight", e, shape.n_ff),
        ]
    tensors += [norm("output_norm.weight", e), q1("output.weight", n_vocab, e)]
    return Document(kvs, tensors)


class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.layout = Layout()

    def put(self, fmt: str, value: Any, name: Optional[str] = None) -> None:
        if name is not None:
            self.layout.fields[name] = (len(self.buf), struct.calcsize(fmt))
        self.buf += struct.pack(fmt, value)

    def string(self, s: str | bytes, name: str) -> None:
        raw = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s
        self.put("<Q", len(raw), name + ".len")
        self.layout.fields[name + ".bytes"] = (len(self.buf), len(raw))
        self.buf += raw

    def value(self, vtype: int, value: Any, sub: Optional[int], name: str) -> None:
        if vtype in SCALAR_FMT:
            self.put(SCALAR_FMT[vtype], value, name)
        elif vtype == STRING:
            self.string(value, name)
        elif vtype == ARRAY:
            self.put("<I", sub, name + ".sub")
            self.put("<Q", len(value), name + ".count")
            for i, item in enumerate(value):
                if sub == ARRAY:  # nested: (sub_type, items)
                    self.value(ARRAY, item[1], item[0], f"{name}[{i}]")
                else:
                    self.value(sub, item, None, f"{name}[{i}]")
        else:
            raise ValueError(f"cannot serialize value type {vtype}")

    def pad(self, alignment: int) -> None:
        if alignment > 0:
            self.buf += b"\0" * (-len(self.buf) % alignment)


def serialize(doc: Document) -> tuple[bytes, Layout]:
    w = _Writer()
    w.buf += b"GGUF"
    w.put("<I", doc.version, "header.version")
    w.put("<Q", len(doc.tensors) if doc.n_tensors is None else doc.n_tensors, "header.n_tensors")
    w.put("<Q", len(doc.kvs) if doc.n_kv is None else doc.n_kv, "header.n_kv")
    w.layout.boundaries["kv"] = len(w.buf)
    for i, kv in enumerate(doc.kvs):
        w.layout.boundaries[f"kv[{i}]"] = len(w.buf)
        w.string(kv.key, f"kv[{i}].key")
        w.put("<I", kv.vtype, f"kv[{i}].type")
        w.value(kv.vtype, kv.value, kv.sub, f"kv[{i}].value")
    w.layout.boundaries["tensor_info"] = len(w.buf)
    offsets, pos = [], 0
    for t in doc.tensors:
        offsets.append(pos if t.offset is None else t.offset)
        pos += len(t.data) + (-len(t.data) % max(doc.alignment, 1))
    for i, (t, off) in enumerate(zip(doc.tensors, offsets)):
        w.layout.boundaries[f"ti[{i}]"] = len(w.buf)
        w.string(t.name, f"ti[{i}].name")
        w.put("<I", len(t.dims), f"ti[{i}].n_dims")
        for j, d in enumerate(t.dims):
            w.put("<Q", d, f"ti[{i}].dim[{j}]")
        w.put("<I", t.ttype, f"ti[{i}].type")
        w.put("<Q", off, f"ti[{i}].offset")
    w.layout.boundaries["padding"] = len(w.buf)
    w.pad(doc.alignment)
    w.layout.boundaries["data"] = len(w.buf)
    for i, t in enumerate(doc.tensors):
        w.layout.boundaries[f"data[{i}]"] = len(w.buf)
        w.buf += t.data
        w.pad(doc.alignment)
    w.layout.boundaries["end"] = len(w.buf)
    return bytes(w.buf), w.layout
