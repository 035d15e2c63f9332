"""Checks of a GGUF's header before llama.cpp loads the model (Llama calls check_before_load).

- A file of a vision-language model (metadata keys or tensors of a vision tower / projector)
  gets one TextOnlyWarning: pybonsai loads the text part only; the separate mmproj file that
  holds the vision part is never run. (At this llama.cpp pin a GGUF that bundles vision tensors
  with the text model is refused by the loader: "wrong number of tensors".)
- Hyperparameters of the qwen35 hybrid that the pinned llama.cpp accepts but that abort the
  process later, inside ggml (GGML_ASSERT on the first decode), raise GGUFError (a ValueError)
  naming the file instead. All found by the GGUF fuzzer (tests/fuzz, --model hybrid):
  ssm.inner_size other than ssm.state_size x ssm.time_step_rank (a concat of mismatched shapes),
  rope.dimension_sections without a positive section among the first three or summing past the
  head size (ggml's multi-section RoPE asserts both). For qwen3 too: 1-D parameters (norms,
  ssm_a, ssm_dt.bias) stored in another type than F32 (ggml's CPU add/mul have no f32 x f16
  kernel: found on the hybrid, where a 6-element bias keeps its padded size as F16; a 128-wide
  F16 norm aborts a qwen3 model the same way).
- Malformed files are left to llama.cpp's own parser, whose errors name the file and the cause.
"""
from __future__ import annotations

import os

from . import model_info
from .gguf_file import GGUFError, GGUFSummary, scan_gguf

_MROPE_ARCHS = ("qwen35", "qwen35moe")  # hybrids whose attention uses ggml's multi-section RoPE
_F32_VECTOR_ARCHS = ("qwen3", *_MROPE_ARCHS)  # whose 1-D parameters must be F32 (the Bonsai family)

__all__ = ["check_before_load"]


def check_before_load(path: str | os.PathLike, stacklevel: int = 1) -> None:
    """Scan `path`'s header (a few ms, ~0.1 s with a 150k-token vocabulary); warn, or raise
    GGUFError, as the module doc says. `stacklevel` as warnings.warn's: 1 names the caller."""
    try:
        summary = scan_gguf(path)
    except (GGUFError, OSError):
        return  # llama.cpp reports it, in its words
    markers = model_info.vision_markers(summary.metadata, (t.name for t in summary.tensors))
    if markers:
        model_info.warn_text_only(str(path), markers, stacklevel=stacklevel + 1)
    problem = _f32_vector_problem(summary) or _hybrid_problem(summary)
    if problem:
        raise GGUFError(f"{path}: {problem}")


def _uint(meta: dict, key: str) -> int | None:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _f32_vector_problem(summary: GGUFSummary) -> str | None:
    if summary.metadata.get("general.architecture") not in _F32_VECTOR_ARCHS:
        return None
    for t in summary.tensors:
        if len(t.shape) == 1 and t.type != 0 and t.name.startswith(("blk.", "output_norm")):
            return f"tensor {t.name!r} is {t.type_name}; this architecture's 1-D parameters must be F32"
    return None


def _hybrid_problem(summary: GGUFSummary) -> str | None:
    """What in a qwen35-style hybrid's metadata would abort the process (None: nothing)."""
    meta = summary.metadata
    arch = meta.get("general.architecture")
    if arch not in _MROPE_ARCHS:
        return None
    a = f"{arch}."
    inner, state, rank = (_uint(meta, a + k) for k in ("ssm.inner_size", "ssm.state_size", "ssm.time_step_rank"))
    if None not in (inner, state, rank) and inner != state * rank:
        return (f"{a}ssm.inner_size = {inner} must be {a}ssm.state_size x {a}ssm.time_step_rank = "
                f"{state} x {rank} = {state * rank} (the linear attention's value width)")
    sections = summary.small_arrays.get(a + "rope.dimension_sections")
    if sections is not None and all(isinstance(x, int) for x in sections):
        head = _uint(meta, a + "attention.key_length")
        if not any(x > 0 for x in sections[:3]):
            return f"{a}rope.dimension_sections = {list(sections)} has no positive section among the first three"
        if head is not None and sum(sections[:4]) > head:
            return (f"{a}rope.dimension_sections = {list(sections)} sums to {sum(sections[:4])}, "
                    f"more than the head size {head}")
    return None
