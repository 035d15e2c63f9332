"""Synthetic Qwen3-architecture GGUF models with seeded random Q1_0 weights.

Used by the tests and benchmarks: the files have the shapes, metadata and
tokenizer of real Bonsai (1-bit Qwen3) models, but random weights.

    python -m pybonsai.synth OUT.gguf --shape tiny --seed 0 [--force]
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .q1_0 import BLOCK, BLOCK_BYTES, dequantize_q1_0

__all__ = ["ModelShape", "SHAPES", "find_llama_cpp_dir", "write_model", "read_weights", "main"]

ARCH = "qwen3"
VOCAB_GGUF = "models/ggml-vocab-qwen2.gguf"
CHAT_TEMPLATE = "models/templates/Qwen-Qwen3-0.6B.jinja"
_LLAMA_CPP_ENV = "PYBONSAI_LLAMA_CPP_DIR"


@dataclass(frozen=True)
class ModelShape:
    """Hyperparameters of a Qwen3 model (vocab size comes from the tokenizer)."""
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx_train: int
    rope_theta: float = 1e6
    rms_eps: float = 1e-6

    def validate(self) -> None:
        for name in ("n_embd", "n_ff"):
            if getattr(self, name) % BLOCK:
                raise ValueError(f"{name} must be a multiple of {BLOCK} for Q1_0")
        if (self.n_head * self.head_dim) % BLOCK:
            raise ValueError(f"n_head * head_dim must be a multiple of {BLOCK} for Q1_0")
        if self.n_head % self.n_head_kv or self.head_dim % 2:
            raise ValueError("n_head must be a multiple of n_head_kv and head_dim even")


SHAPES: dict[str, ModelShape] = {
    "tiny": ModelShape(n_embd=256, n_layer=2, n_head=4, n_head_kv=2, head_dim=64,
                       n_ff=512, n_ctx_train=4096),
    "bonsai-1.7b": ModelShape(n_embd=2048, n_layer=28, n_head=16, n_head_kv=8, head_dim=128,
                              n_ff=6144, n_ctx_train=40960),
    "bonsai-4b": ModelShape(n_embd=2560, n_layer=36, n_head=32, n_head_kv=8, head_dim=128,
                            n_ff=9728, n_ctx_train=40960),
    "bonsai-8b": ModelShape(n_embd=4096, n_layer=36, n_head=32, n_head_kv=8, head_dim=128,
                            n_ff=12288, n_ctx_train=40960),
}


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


def _tensor_plan(shape: ModelShape, n_vocab: int) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, numpy shape, is_q1_0) for every tensor, in file order."""
    e, q, kv = shape.n_embd, shape.n_head * shape.head_dim, shape.n_head_kv * shape.head_dim
    plan: list[tuple[str, tuple[int, ...], bool]] = [("token_embd.weight", (n_vocab, e), True)]
    for i in range(shape.n_layer):
        b = f"blk.{i}."
        plan += [
            (b + "attn_norm.weight", (e,), False),
            (b + "attn_q.weight", (q, e), True),
            (b + "attn_k.weight", (kv, e), True),
            (b + "attn_v.weight", (kv, e), True),
            (b + "attn_q_norm.weight", (shape.head_dim,), False),
            (b + "attn_k_norm.weight", (shape.head_dim,), False),
            (b + "attn_output.weight", (e, q), True),
            (b + "ffn_norm.weight", (e,), False),
            (b + "ffn_gate.weight", (shape.n_ff, e), True),
            (b + "ffn_up.weight", (shape.n_ff, e), True),
            (b + "ffn_down.weight", (e, shape.n_ff), True),
        ]
    plan += [("output_norm.weight", (e,), False), ("output.weight", (n_vocab, e), True)]
    return plan


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _make_tensor(seed: int, name: str, shape: tuple[int, ...], is_q1: bool) -> np.ndarray:
    rng = _rng(seed, name)
    if not is_q1:
        return rng.uniform(*_NORM_RANGE, size=shape).astype(np.float32)
    rows, k = shape
    nb = k // BLOCK
    base = 1.0 if name.startswith("token_embd") else 1.0 / np.sqrt(k)
    out = np.empty((rows, nb, BLOCK_BYTES), dtype=np.uint8)
    step = max(1, (1 << 22) // k)  # generate ~4M weights at a time
    for r0 in range(0, rows, step):
        r = min(step, rows - r0)
        scales = (base * rng.uniform(*_JITTER, size=(r, nb))).astype("<f2")
        out[r0:r0 + r, :, :2] = scales.view(np.uint8).reshape(r, nb, 2)
        out[r0:r0 + r, :, 2:] = np.frombuffer(rng.bytes(r * nb * 16), np.uint8).reshape(r, nb, 16)
    return out.reshape(rows, nb * BLOCK_BYTES)


# --- tokenizer metadata ------------------------------------------------------------------

def _field_value(field: Any) -> tuple[Any, Any, Any]:
    """(value, type, sub_type) of a GGUFReader field, with raw bytes kept for strings."""
    from gguf import GGUFValueType as T

    types = list(field.types)
    if types[0] == T.ARRAY:
        sub = types[-1]
        if len(types) != 2:
            raise ValueError(f"nested arrays are not supported ({field.name})")
        if sub == T.STRING:
            return [bytes(field.parts[i]) for i in field.data], T.ARRAY, sub
        return [field.parts[i][0].item() for i in field.data], T.ARRAY, sub
    if types[0] == T.STRING:
        return bytes(field.parts[field.data[0]]), T.STRING, None
    return field.parts[field.data[0]][0].item(), types[0], None


def _tokenizer_fields(vocab_gguf: Path) -> list[tuple[str, Any, Any, Any]]:
    """(key, value, type, sub_type) of every tokenizer.* key except the chat template."""
    st = vocab_gguf.stat()  # parsing takes seconds: cache per file version
    return list(_read_tokenizer_fields(str(vocab_gguf.resolve()), st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=2)
def _read_tokenizer_fields(path: str, _mtime_ns: int, _size: int) -> tuple[tuple[Any, ...], ...]:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return tuple((key, *_field_value(field)) for key, field in reader.fields.items()
                 if key.startswith("tokenizer.") and key != "tokenizer.chat_template")


# --- writing -----------------------------------------------------------------------------

def _resolve_shape(shape: str | ModelShape) -> ModelShape:
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; choose from {sorted(SHAPES)}")
        shape = SHAPES[shape]
    shape.validate()
    return shape


def write_model(path: str | os.PathLike[str], shape: str | ModelShape = "tiny", seed: int = 0,
                vocab_gguf: str | os.PathLike[str] | None = None,
                chat_template: str | None = None, overwrite: bool = False) -> Path:
    """Write a synthetic Qwen3 Q1_0 GGUF to ``path`` and return it.

    ``vocab_gguf`` defaults to llama.cpp's ggml-vocab-qwen2.gguf and ``chat_template`` (the
    template text) to the Qwen3 template; both are located with find_llama_cpp_dir().
    Tensors are generated and written one at a time, so memory stays small.
    """
    import gguf

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--force) to replace it")
    shape = _resolve_shape(shape)
    if vocab_gguf is None or chat_template is None:
        root = find_llama_cpp_dir()
        vocab_gguf = root / VOCAB_GGUF if vocab_gguf is None else vocab_gguf
        if chat_template is None:
            chat_template = (root / CHAT_TEMPLATE).read_text(encoding="utf-8")

    tok = _tokenizer_fields(Path(vocab_gguf))
    tokens = next((v for k, v, _, _ in tok if k == "tokenizer.ggml.tokens"), None)
    if not tokens:
        raise ValueError(f"{vocab_gguf} has no tokenizer.ggml.tokens")
    plan = _tensor_plan(shape, len(tokens))

    tmp = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(str(tmp), ARCH)
    try:
        writer.add_name(f"pybonsai synthetic qwen3 (seed {seed})")
        writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q1_0))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_context_length(shape.n_ctx_train)
        writer.add_embedding_length(shape.n_embd)
        writer.add_block_count(shape.n_layer)
        writer.add_feed_forward_length(shape.n_ff)
        writer.add_head_count(shape.n_head)
        writer.add_head_count_kv(shape.n_head_kv)
        writer.add_key_length(shape.head_dim)
        writer.add_value_length(shape.head_dim)
        writer.add_rope_freq_base(shape.rope_theta)
        writer.add_layer_norm_rms_eps(shape.rms_eps)
        for key, value, vtype, sub_type in tok:
            writer.add_key_value(key, value, vtype, sub_type)
        if not any(k == "tokenizer.ggml.add_bos_token" for k, *_ in tok):
            writer.add_add_bos_token(False)  # what Qwen3 GGUFs declare
        writer.add_chat_template(chat_template)

        q1 = gguf.GGMLQuantizationType.Q1_0
        for name, shp, is_q1 in plan:
            if is_q1:
                nbytes = shp[0] * shp[1] // BLOCK * BLOCK_BYTES
                writer.add_tensor_info(name, (shp[0], nbytes // shp[0]), np.dtype(np.uint8),
                                       nbytes, raw_dtype=q1)
            else:
                writer.add_tensor_info(name, shp, np.dtype(np.float32), 4 * int(np.prod(shp)))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for name, shp, is_q1 in plan:
            writer.write_tensor_data(_make_tensor(seed, name, shp, is_q1))
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return path


# --- reading -----------------------------------------------------------------------------

def read_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Dequantized float32 weights of a (small) qwen3 GGUF, keyed by tensor name.

    Matrices have numpy shape (rows, K), i.e. y = W @ x. The extra key "hparams" holds a dict
    with the ModelShape fields plus n_vocab. Everything is loaded in memory: small models only.
    """
    from gguf import GGMLQuantizationType, GGUFReader

    reader = GGUFReader(str(path))

    def get(key: str) -> Any:
        field = reader.fields.get(key)
        if field is None:
            raise KeyError(f"{path}: missing {key}")
        return _field_value(field)[0]

    arch = get("general.architecture").decode()
    if arch != ARCH:
        raise ValueError(f"{path}: architecture {arch!r}, expected {ARCH!r}")
    a = f"{ARCH}."
    shape = ModelShape(
        n_embd=get(a + "embedding_length"), n_layer=get(a + "block_count"),
        n_head=get(a + "attention.head_count"), n_head_kv=get(a + "attention.head_count_kv"),
        head_dim=get(a + "attention.key_length"), n_ff=get(a + "feed_forward_length"),
        n_ctx_train=get(a + "context_length"), rope_theta=get(a + "rope.freq_base"),
        rms_eps=get(a + "attention.layer_norm_rms_epsilon"))
    weights: dict[str, Any] = {}
    for t in reader.tensors:
        k = int(t.shape[0])          # GGUF dims are ggml order: ne0 (row length) first
        if t.tensor_type == GGMLQuantizationType.Q1_0:
            raw = np.asarray(t.data).reshape(-1, k // BLOCK * BLOCK_BYTES)
            weights[t.name] = dequantize_q1_0(raw, k)
        elif t.tensor_type == GGMLQuantizationType.F32:
            weights[t.name] = np.array(t.data, dtype=np.float32)
        else:
            raise ValueError(f"{path}: tensor {t.name} has unsupported type {t.tensor_type.name}")
    weights["hparams"] = {**asdict(shape), "n_vocab": weights["token_embd.weight"].shape[0]}
    return weights


# --- command line ------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pybonsai.synth",
        description="Write a synthetic Qwen3 GGUF with seeded random Q1_0 weights.")
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
