"""What a Bonsai GGUF holds, read from its metadata and tensor table (pybonsai.gguf_file): the
architecture (qwen3, or the qwen35 hybrid of Bonsai 27B with its Gated DeltaNet and full-attention
layers), the weight types with their bits per weight, and whether the file belongs to a
vision-language model whose vision part (an mmproj file) pybonsai does not run.

Used by `pybonsai info`, by the Engine (recurrent layers change its attention default) and
before a load (pybonsai.load_checks).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from .ggml_types import bits_per_weight, quant_size, type_name

__all__ = ["TextOnlyWarning", "LayerSplit", "layer_split", "has_recurrent_layers", "describe_layers",
           "vision_markers", "describe_rotation", "VISION_NOTE", "warn_text_only", "TypeRow", "type_rows"]

# Tensor name prefixes of vision towers and projectors (llama.cpp's mmproj naming `v.` / `mm.`,
# Hugging Face's `visual.` / `vision_tower.`), and metadata key words of the same.
_VISION_TENSOR_PREFIXES = ("v.", "mm.", "visual.", "vision", "model.visual.", "mmproj", "clip.")
_VISION_KEY_WORDS = ("vision", "mmproj")  # in any dotted part; a part "clip" too

VISION_NOTE = ("only the text part loads: images need the model's separate vision projector "
               "(mmproj) file, which pybonsai does not run")


class TextOnlyWarning(UserWarning):
    """The GGUF belongs to a vision-language model; pybonsai loads and runs its text part only."""


@dataclass(frozen=True)
class LayerSplit:
    """How a hybrid's layers divide between recurrent (linear) and full attention."""
    n_layer: int
    linear: int                       # Gated DeltaNet (linear attention, recurrent state) layers
    full: int                         # full-attention layers
    interval: Optional[int] = None    # every interval-th layer is full attention (None: a per-layer list)


# The pinned llama.cpp's llm_arch_is_recurrent: every layer recurrent, no attention (no hybrid split).
_RECURRENT_ARCHS = ("mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7")


def _get(meta: Mapping[str, Any], key: str) -> Optional[int]:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def has_recurrent_layers(meta: Mapping[str, Any]) -> bool:
    """Whether the architecture keeps a recurrent state per sequence (state-space / linear
    attention layers: `{arch}.ssm.*` keys, as the qwen35 hybrid and Mamba-style models have)."""
    arch = meta.get("general.architecture")
    return isinstance(arch, str) and any(isinstance(k, str) and k.startswith(f"{arch}.ssm.") for k in meta)


def layer_split(meta: Mapping[str, Any]) -> Optional[LayerSplit]:
    """The linear/full split of a hybrid (the pinned loader's rule: `{arch}.attention.recurrent_layers`
    if present, else every `{arch}.full_attention_interval`-th layer, default 4, is full
    attention); None for a model without recurrent layers, a purely recurrent one (Mamba, RWKV)
    or one without a usable layer count."""
    if not has_recurrent_layers(meta) or meta.get("general.architecture") in _RECURRENT_ARCHS:
        return None
    arch = meta["general.architecture"]
    n_layer = _get(meta, f"{arch}.block_count")
    if not n_layer or n_layer < 0:
        return None
    if f"{arch}.attention.recurrent_layers" in meta:
        return LayerSplit(n_layer, -1, -1)  # a per-layer list: the scanner does not read array values
    interval = meta.get(f"{arch}.full_attention_interval", 4)
    if not isinstance(interval, int) or isinstance(interval, bool) or interval <= 0:
        return None
    full = n_layer // interval
    return LayerSplit(n_layer, n_layer - full, full, interval)


def describe_layers(meta: Mapping[str, Any]) -> str:
    """The layer count and kinds: `36 (all full attention)`, or for a hybrid
    `64 (hybrid: 48 linear-attention (Gated DeltaNet, recurrent state) + 16 full-attention, every 4th)`."""
    arch = meta.get("general.architecture", "unknown")
    n_layer = _get(meta, f"{arch}.block_count")
    count = str(n_layer) if n_layer is not None else "unknown"
    if arch in _RECURRENT_ARCHS:
        return f"{count} (all recurrent, no attention)"
    split = layer_split(meta)
    if split is not None:
        if split.linear < 0:
            return f"{count} (hybrid: linear attention where {arch}.attention.recurrent_layers says, full elsewhere)"
        every = f", every {split.interval}th" if split.interval and split.interval > 1 else ""
        return (f"{count} (hybrid: {split.linear} linear-attention (Gated DeltaNet, recurrent state) + "
                f"{split.full} full-attention{every})")
    if has_recurrent_layers(meta):
        return f"{count} (with recurrent layers; the linear/full split is unreadable)"
    if arch == "qwen3":
        return f"{count} (all full attention)"
    return count


def describe_rotation(meta: Mapping[str, Any], small_arrays: Mapping[str, tuple] = {}) -> Optional[str]:
    """The Bonsai 2 Hadamard fold a file declares (prism.hadamard.*), or None. The loader checks it
    (patch 0010): this only reports it."""
    p = "prism.hadamard."
    if not any(k.startswith(p) for k in meta):
        return None

    def count(key: str) -> int:
        value = meta.get(p + key)
        return value[1] if isinstance(value, tuple) and value[:1] == ("array",) else 0

    parts = [f"Hadamard fold of Bonsai 2 (prism.hadamard v{meta.get(p + 'version', '?')}), "
             f"block {meta.get(p + 'block_size', '?')}", f"{count('weight_names')} weights folded"]
    if meta.get(p + "sign_mode") == "explicit":
        widths = small_arrays.get(p + "sign_widths")
        parts.append("explicit signs" + (f" for widths {', '.join(map(str, widths))}" if widths else ""))
    else:
        parts.append(f"sign mode {meta.get(p + 'sign_mode', '?')}")
    if count("inverse_weight_names"):
        parts.append("token_embd holds rotated rows")
    if meta.get(p + "gdn_v_grouped"):
        parts.append("ssm_out reads grouped value heads")
    return "; ".join(parts)


def vision_markers(meta: Mapping[str, Any], tensor_names: Iterable[str] = ()) -> list[str]:
    """What says that this GGUF belongs to a vision-language model: metadata keys naming vision,
    mmproj or clip, and vision-tower tensors. Empty for a text-only file."""
    found = []
    keys = sorted(k for k in meta if isinstance(k, str) and not k.startswith("tokenizer.")
                  and any(part == "clip" or any(w in part for w in _VISION_KEY_WORDS)
                          for part in k.lower().split(".")))
    if keys:
        found.append("metadata " + ", ".join(repr(k) for k in keys[:3]) + (" ..." if len(keys) > 3 else ""))
    vision = [n for n in tensor_names if isinstance(n, str) and n.lower().startswith(_VISION_TENSOR_PREFIXES)]
    if vision:
        found.append(f"{len(vision)} vision tensors ({vision[0]!r}{', ...' if len(vision) > 1 else ''})")
    return found


def warn_text_only(path: str, markers: list[str], stacklevel: int = 1) -> None:
    """The TextOnlyWarning for a vision-language GGUF (Python shows a warning once per file and
    call site); `stacklevel` as warnings.warn's: 1 names the line calling this function."""
    warnings.warn(f"{path} belongs to a vision-language model ({'; '.join(markers)}): {VISION_NOTE}",
                  TextOnlyWarning, stacklevel=stacklevel + 1)


@dataclass(frozen=True)
class TypeRow:
    name: str
    bits_per_weight: Optional[float]
    tensors: int
    parameters: int
    n_bytes: int


def type_rows(tensors: Iterable[Any]) -> list[TypeRow]:
    """Per ggml type (largest share first): tensors, parameters, bytes and stored bits per weight."""
    rows: dict[int, list[int]] = {}
    for t in tensors:
        row = rows.setdefault(t.type, [0, 0, 0])
        row[0] += 1
        row[1] += t.n_elements
        row[2] += t.n_bytes or 0
    out = []
    for ttype, (count, n_el, n_bytes) in rows.items():
        try:
            quant_size(ttype)
            bpw: Optional[float] = bits_per_weight(ttype)
        except KeyError:
            bpw = None
        out.append(TypeRow(type_name(ttype), bpw, count, n_el, n_bytes))
    return sorted(out, key=lambda r: (-r.n_bytes, r.name))
