"""Synthetic Bonsai GGUF models with seeded random Q1_0 or Q2_0 weights.

Used by the tests and benchmarks: the files have the shapes, metadata and tokenizer of real
Bonsai models (1-bit and ternary Qwen3; the Qwen3.5 hybrid of Bonsai 27B), but random weights;
and stand-ins for llama-cpp-python's test models (a Mamba-1 model, a Qwen3 embedding model).
Shapes and tensor plans: pybonsai.synth_shapes.

    python -m pybonsai.synth OUT.gguf --shape tiny --seed 0 [--force]
"""
from __future__ import annotations

import argparse
import functools
import os
import struct
import sys
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import prism_types, q1_0, q2_0, synth_prism
from .synth_shapes import SHAPES, WEIGHT_TYPES, ModelShape, arch_metadata, tensor_plan, tensor_wtype

__all__ = ["ModelShape", "SHAPES", "find_llama_cpp_dir", "write_model", "read_weights", "main"]

ARCH = "qwen3"
VOCAB_GGUF = "models/ggml-vocab-qwen2.gguf"
CHAT_TEMPLATE = "models/templates/Qwen-Qwen3-0.6B.jinja"
# architecture -> (tokenizer GGUF, chat template) in the pinned llama.cpp tree
ARCH_FILES = {
    "qwen3": (VOCAB_GGUF, CHAT_TEMPLATE),
    "qwen35": ("models/ggml-vocab-qwen35.gguf", "models/templates/Qwen3.5-4B.jinja"),
    "mamba": ("models/ggml-vocab-gpt-neox.gguf", None),  # mamba-130m's tokenizer; no chat template
}
_DEQUANT = {41: (q1_0.BLOCK, q1_0.BLOCK_BYTES, q1_0.dequantize_q1_0),
            42: (q2_0.BLOCK, q2_0.BLOCK_BYTES, q2_0.dequantize_q2_0),
            142: (128, 34, lambda raw, k: prism_types.dequantize_pq2_0(raw, raw.size // 34 * 128).reshape(-1, k)),
            143: (128, 28, lambda raw, k: prism_types.dequantize_ptq1_0(raw, raw.size // 28 * 128).reshape(-1, k))}
_LLAMA_CPP_ENV = "PYBONSAI_LLAMA_CPP_DIR"


def find_llama_cpp_dir() -> Path:
    """Locate the pinned llama.cpp tree (for its tokenizer GGUF and chat templates)."""
    def ok(p: Path) -> bool:
        return (p / VOCAB_GGUF).is_file()

    env = os.environ.get(_LLAMA_CPP_ENV)
    if env:
        p = Path(env).expanduser().resolve()
        if ok(p):
            return p
        raise FileNotFoundError(f"{_LLAMA_CPP_ENV}={env!r} is not a llama.cpp tree "
                                f"(no {VOCAB_GGUF} in it)")
    cwd = Path.cwd().resolve()
    here = Path(__file__).resolve().parent
    for base in (cwd, *cwd.parents, *here.parents):
        if ok(base / "vendor" / "llama.cpp"):
            return base / "vendor" / "llama.cpp"
    raise FileNotFoundError(
        f"cannot find the llama.cpp tree (vendor/llama.cpp with {VOCAB_GGUF}) from {cwd}; "
        f"run from the pybonsai checkout or set {_LLAMA_CPP_ENV} to the llama.cpp directory")


# --- weights -----------------------------------------------------------------------------
#
# Scale choice. A Q1_0 matrix row is d * (+-1 signs), so y_i = d * sum_j s_ij x_j with random
# signs has standard deviation d * sqrt(K) * rms(x). Every projection therefore uses
# d = 1/sqrt(K) (K = input length) times a per-block jitter uniform in [0.75, 1.25]: inputs of
# RMS 1 (they follow an RMSNorm) give outputs of RMS ~1, so q/k/v, gate/up, down, the
# attention output and the logits (std ~1 over the vocab, not degenerate) all stay O(1), and the
# residual stream grows only like sqrt(number of layers). The token embedding uses d ~ 1 so the
# embedding enters the residual at the same scale as the layer outputs. Norm weights (F32) are
# uniform in [0.8, 1.2]. Every tensor has its own generator seeded by (seed, crc32(name)), so a
# tensor does not depend on the order in which tensors are generated.

_JITTER = (0.75, 1.25)
_NORM_RANGE = (0.8, 1.2)


# Ternary (Q2_0) weights are -1/0/+1 with probabilities 1/4, 1/2, 1/4: variance 1/2 of a sign's,
# so their scale is sqrt(2) larger for the same output RMS. Gated DeltaNet and Mamba parameters
# (F32): conv taps uniform in [-0.5, 0.5] (conv biases in [-0.1, 0.1]), decay rates ssm_a = A
# (= -exp(A_log)) in [-1, -0.1] and dt biases in [-1, 0.5], so the per-token decay
# exp(A * softplus(.)) stays inside (0, 1) without vanishing. An F32 matrix (Mamba's dt
# projection where its rank is not a multiple of the block) has uniform weights of RMS 1/sqrt(K).
_F32_RANGES = {"ssm_conv1d.weight": (-0.5, 0.5), "ssm_conv1d.bias": (-0.1, 0.1), "ssm_a": (-1.0, -0.1),
               "ssm_dt.bias": (-1.0, 0.5)}


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _make_tensor(seed: int, name: str, shape: tuple[int, ...], quantized: bool, wtype: str) -> np.ndarray:
    rng = _rng(seed, name)
    if not quantized:
        lo_hi = next((r for suffix, r in _F32_RANGES.items() if name.endswith(suffix)), None)
        if lo_hi is None:
            lo_hi = _NORM_RANGE if len(shape) == 1 else (-np.sqrt(3 / shape[1]), np.sqrt(3 / shape[1]))
        return rng.uniform(*lo_hi, size=shape).astype(np.float32)
    rows, k = shape
    _, block, block_bytes = WEIGHT_TYPES[wtype]
    nb = k // block
    base = 1.0 if name.startswith("token_embd") else 1.0 / np.sqrt(k)
    if wtype in ("pq2_0", "ptq1_0"):
        return synth_prism.make_ternary128(rng, wtype, rows, k, base)
    if wtype == "q2_0":
        base *= np.sqrt(2.0)
    out = np.empty((rows, nb, block_bytes), dtype=np.uint8)
    step = max(1, (1 << 22) // k)  # generate ~4M weights at a time
    for r0 in range(0, rows, step):
        r = min(step, rows - r0)
        scales = (base * rng.uniform(*_JITTER, size=(r, nb))).astype("<f2")
        if wtype == "q1_0":  # random sign bytes (the files of earlier versions, byte for byte)
            out[r0:r0 + r, :, :2] = scales.view(np.uint8).reshape(r, nb, 2)
            out[r0:r0 + r, :, 2:] = np.frombuffer(rng.bytes(r * nb * 16), np.uint8).reshape(r, nb, 16)
        else:  # random code bytes with every code 3 (+2d) turned into 1 (0): P(-d, 0, +d) = 1/4, 1/2, 1/4
            codes = np.frombuffer(rng.bytes(r * nb * 16), np.uint8).reshape(r, nb, 16)
            out[r0:r0 + r, :, :2] = scales.view(np.uint8).reshape(r, nb, 2)
            out[r0:r0 + r, :, 2:] = codes & ~(((codes >> 1) & codes & 0x55) << 1)
    return out.reshape(rows, nb * block_bytes)


# --- tokenizer metadata ------------------------------------------------------------------
#
# A dedicated reader of the GGUF key-values: gguf.GGUFReader builds numpy views for each of a
# vocabulary's ~150k tokens and merges (~13 s for Qwen's); this loop takes a fraction of a second.

# GGUF value type -> struct format of the numeric and bool types
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                   10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _tokenizer_fields(vocab_gguf: Path) -> list[tuple[str, Any, Any, Any]]:
    """(key, value, type, sub_type) of every tokenizer.* key except the chat template; strings
    are raw bytes, arrays lists, types gguf.GGUFValueType."""
    st = vocab_gguf.stat()  # cache per file version
    return list(_read_fields(str(vocab_gguf.resolve()), st.st_mtime_ns, st.st_size, "tokenizer."))


@functools.lru_cache(maxsize=2)
def _read_fields(path: str, _mtime_ns: int, _size: int, prefix: str) -> tuple[tuple[Any, ...], ...]:
    """The header's keys that start with `prefix` (tokenizer.*: except the chat template)."""
    from gguf import GGUFValueType as T

    buf = Path(path).read_bytes()
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        value = struct.unpack_from(fmt, buf, pos)[0]
        pos += struct.calcsize(fmt)
        return value

    def string() -> bytes:
        nonlocal pos
        n = take("<Q")
        pos += n
        return buf[pos - n:pos]

    def strings(n: int) -> list[bytes]:
        nonlocal pos
        out, unpack = [], struct.Struct("<Q").unpack_from
        for _ in range(n):
            (k,) = unpack(buf, pos)
            out.append(buf[pos + 8:pos + 8 + k])
            pos += 8 + k
        return out

    magic, version = struct.unpack_from("<4sI", buf)
    if magic != b"GGUF" or version < 2:
        raise ValueError(f"{path}: not a GGUF file of version 2 or later")
    pos = 8 + 8  # magic, version, tensor count
    fields = []
    for _ in range(take("<Q")):
        key = string().decode("utf-8")
        vtype = take("<I")
        if vtype == _ARRAY:
            sub, n = take("<I"), take("<Q")
            if sub == _STRING:
                value: Any = strings(n)
            elif sub in _SCALAR_FORMATS:
                dtype = np.dtype(_SCALAR_FORMATS[sub].replace("?", "b1"))
                value = np.frombuffer(buf, dtype, n, pos).tolist()
                pos += n * dtype.itemsize
            else:
                raise ValueError(f"{path}: {key}: nested arrays are not supported")
            entry = (key, value, T.ARRAY, T(sub))
        elif vtype == _STRING:
            entry = (key, string(), T.STRING, None)
        else:
            entry = (key, take(_SCALAR_FORMATS[vtype]), T(vtype), None)
        if key.startswith(prefix) and key != "tokenizer.chat_template":
            fields.append(entry)
    return tuple(fields)


# --- writing -----------------------------------------------------------------------------

def _resolve_shape(shape: str | ModelShape) -> ModelShape:
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; choose from {sorted(SHAPES)}")
        shape = SHAPES[shape]
    shape.validate()
    return shape


def _padded_tokenizer(tok: list[tuple[str, Any, Any, Any]], n_vocab: int) -> list[tuple[str, Any, Any, Any]]:
    """The tokenizer fields with `[PAD<i>]` tokens of type UNUSED appended up to n_vocab (what the
    converter writes when a model's embedding has more rows than its tokenizer has tokens)."""
    n = len(next(v for k, v, _, _ in tok if k == "tokenizer.ggml.tokens"))
    if n_vocab <= n:
        return tok
    extra = range(n, n_vocab)
    pads = {"tokenizer.ggml.tokens": [f"[PAD{i}]".encode() for i in extra],
            "tokenizer.ggml.token_type": [5] * len(extra),
            "tokenizer.ggml.scores": [0.0] * len(extra)}
    return [(k, list(v) + pads[k], t, st) if k in pads else (k, v, t, st) for k, v, t, st in tok]


def write_model(path: str | os.PathLike[str], shape: str | ModelShape = "tiny", seed: int = 0,
                vocab_gguf: str | os.PathLike[str] | None = None,
                chat_template: str | None = None, overwrite: bool = False) -> Path:
    """Write a synthetic Bonsai GGUF (the shape's architecture and weight type) to ``path``.

    ``vocab_gguf`` and ``chat_template`` (the template text) default to the architecture's
    tokenizer and template in the pinned llama.cpp tree (ARCH_FILES), located with
    find_llama_cpp_dir(); an architecture without a template there (mamba) gets none unless
    ``chat_template`` is given. Tensors are generated and written one at a time, so memory stays small.
    """
    import gguf

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--force) to replace it")
    shape = _resolve_shape(shape)
    vocab_file, template_file = ARCH_FILES[shape.arch]
    if vocab_gguf is None or (chat_template is None and template_file is not None):
        root = find_llama_cpp_dir()
        vocab_gguf = root / vocab_file if vocab_gguf is None else vocab_gguf
        if chat_template is None and template_file is not None:
            chat_template = (root / template_file).read_text(encoding="utf-8")

    tok = _tokenizer_fields(Path(vocab_gguf))
    tokens = next((v for k, v, _, _ in tok if k == "tokenizer.ggml.tokens"), None)
    if not tokens:
        raise ValueError(f"{vocab_gguf} has no tokenizer.ggml.tokens")
    tok = _padded_tokenizer(tok, shape.n_vocab)
    plan = tensor_plan(shape, max(len(tokens), shape.n_vocab))

    tmp = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(str(tmp), shape.arch)
    try:
        writer.add_name(f"pybonsai synthetic {shape.arch} {shape.wtype} (seed {seed})")
        if shape.wtype in ("q1_0", "q2_0"):  # LLAMA_FTYPE_MOSTLY_Q1_0 / _Q2_0 (Bonsai 2's are not settled)
            writer.add_file_type({"q1_0": 40, "q2_0": 41}[shape.wtype])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for method, value in arch_metadata(shape):
            getattr(writer, method)(value)
        for key, value, vtype, sub_type in tok:
            writer.add_key_value(key, value, vtype, sub_type)
        if not any(k == "tokenizer.ggml.add_bos_token" for k, *_ in tok):
            writer.add_add_bos_token(False)  # what Qwen3 GGUFs declare
        if chat_template is not None:
            writer.add_chat_template(chat_template)
        for key, value, vtype, sub_type in synth_prism.prism_fields(shape, plan, seed):
            writer.add_key_value(key, value, vtype, sub_type)

        for name, shp, quantized in plan:
            if quantized:  # the element shape with the raw type id (the gguf package may not know it)
                type_id, block, block_bytes = WEIGHT_TYPES[tensor_wtype(shape, name)]
                nbytes = shp[0] * (shp[1] // block) * block_bytes
                writer.add_tensor_info(name, shp, np.dtype(np.int8), nbytes, raw_dtype=type_id)
            else:
                writer.add_tensor_info(name, shp, np.dtype(np.float32), 4 * int(np.prod(shp)))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for name, shp, quantized in plan:
            writer.write_tensor_data(_make_tensor(seed, name, shp, quantized, tensor_wtype(shape, name)))
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return path


# --- reading -----------------------------------------------------------------------------

def read_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Dequantized float32 weights of a (small) qwen3 or qwen35 GGUF, keyed by tensor name.

    Matrices have numpy shape (rows, K), i.e. y = W @ x. The extra key "hparams" holds a dict
    with the ModelShape fields plus n_vocab. Everything is loaded in memory: small models only.
    """
    from .gguf_file import scan_gguf

    summary = scan_gguf(path)
    meta = summary.metadata

    def get(key: str, default: Any = None) -> Any:
        if key not in meta:
            if default is not None:
                return default
            raise KeyError(f"{path}: missing {key}")
        return meta[key]

    arch = get("general.architecture")
    if arch not in ("qwen3", "qwen35"):  # mamba (a stand-in for llama-cpp-python's tests) has no reference
        raise ValueError(f"{path}: architecture {arch!r}: read_weights reads qwen3 and qwen35 models only")
    types = {t.type for t in summary.tensors if t.type in _DEQUANT}
    a = f"{arch}."
    hybrid = {} if arch == "qwen3" else dict(
        full_attn_interval=get(a + "full_attention_interval", 4), rope_dim=get(a + "rope.dimension_count"),
        ssm_conv=get(a + "ssm.conv_kernel"), ssm_state=get(a + "ssm.state_size"),
        ssm_groups=get(a + "ssm.group_count"), ssm_v_heads=get(a + "ssm.time_step_rank"))
    shape = ModelShape(
        n_embd=get(a + "embedding_length"), n_layer=get(a + "block_count"),
        n_head=get(a + "attention.head_count"), n_head_kv=get(a + "attention.head_count_kv"),
        head_dim=get(a + "attention.key_length"), n_ff=get(a + "feed_forward_length"),
        n_ctx_train=get(a + "context_length"), rope_theta=get(a + "rope.freq_base"),
        rms_eps=get(a + "attention.layer_norm_rms_epsilon"), arch=arch,
        wtype={42: "q2_0", 142: "pq2_0", 143: "ptq1_0"}.get(max(types, default=41), "q1_0"), **hybrid)
    data = np.memmap(summary.path, dtype=np.uint8, mode="r")
    weights: dict[str, Any] = {}
    for t in summary.tensors:
        raw = data[summary.data_offset + t.offset:summary.data_offset + t.offset + t.n_bytes]
        k = int(t.shape[0])          # GGUF dims are ggml order: ne0 (row length) first
        shp = tuple(int(d) for d in reversed(t.shape))
        if t.type in _DEQUANT:
            block, block_bytes, dequantize = _DEQUANT[t.type]
            weights[t.name] = dequantize(np.asarray(raw).reshape(-1, k // block * block_bytes), k)
        elif t.type == 0:  # F32
            weights[t.name] = np.array(raw).view("<f4").reshape(shp)
        else:
            raise ValueError(f"{path}: tensor {t.name} has unsupported type {t.type_name}")
    weights["hparams"] = {**asdict(shape), "n_vocab": weights["token_embd.weight"].shape[0]}
    if any(k.startswith("prism.hadamard.") for k in meta):  # Bonsai 2: the primal weights
        st = Path(path).stat()
        fields = {k: v for k, v, *_ in _read_fields(str(Path(path).resolve()), st.st_mtime_ns, st.st_size,
                                                      "prism.hadamard.")}
        synth_prism.unfold(weights, fields, weights["hparams"])
    return weights


# --- command line ------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pybonsai.synth",
        description="Write a synthetic Bonsai GGUF with seeded random Q1_0 or Q2_0 weights.")
    parser.add_argument("out", help="output .gguf path")
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args(argv)
    try:
        path = write_model(args.out, args.shape, seed=args.seed, overwrite=args.force)
    except (FileExistsError, FileNotFoundError) as exc:
        parser.exit(1, f"error: {exc}\n")
    size_gb = path.stat().st_size / 1e9
    print(f"wrote {path} ({size_gb:.3f} GB, shape {args.shape}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
