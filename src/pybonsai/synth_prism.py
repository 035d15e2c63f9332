"""Bonsai 2 pieces of the synthetic models (pybonsai.synth): PrismML's ternary types PQ2_0 / PTQ1_0
and the `prism.hadamard` fold (vendor/patches/BONSAI2_FORMAT.md; NumPy reference: prism_types).

A shape with ``hadamard_block > 0`` folds every weight of a foldable kind except those named in
``fold_skip``, stores ``token_embd`` as the inverse table, and declares explicit random sign vectors
for every input width it needs. The stored weights are random ternary codes: the file stores the
rotated weights W_s, and the model's primal weights are ``s * H(W_s)`` row by row, which is what
:func:`unfold` gives the NumPy reference.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from . import prism_types as pt
from .synth_shapes import ModelShape, Plan

__all__ = ["FOLDABLE", "folded_names", "prism_fields", "make_ternary128", "unfold"]

FOLDABLE = re.compile(r"^(output|blk\.\d+\.(attn_q|attn_k|attn_v|attn_qkv|attn_gate|attn_output|"
                      r"ffn_gate|ffn_up|ffn_down|ssm_out))\.weight$")
_ENCODE5 = ((np.arange(243, dtype=np.uint32) * 256 + 242) // 243).astype(np.uint8)  # 5 digits -> byte
_ENCODE4 = ((np.arange(81, dtype=np.uint32) * 3 * 256 + 242) // 243).astype(np.uint8)  # 4 digits, then a 0


def folded_names(shape: ModelShape, plan: Plan) -> list[str]:
    """The weights a shape folds, in file order."""
    if shape.hadamard_block <= 0:
        return []
    return [name for name, _, quantized in plan
            if quantized and FOLDABLE.match(name) and name not in shape.fold_skip]


def _widths(shape: ModelShape, plan: Plan) -> list[int]:
    dims = {name: shp for name, shp, _ in plan}
    widths = {dims[name][1] for name in folded_names(shape, plan)} | {shape.n_embd}
    return sorted(widths)


def prism_fields(shape: ModelShape, plan: Plan, seed: int) -> list[tuple[str, Any, Any, Any]]:
    """(key, value, GGUFValueType, sub_type) of the prism.hadamard.* keys of a folding shape."""
    from gguf import GGUFValueType as T

    if shape.hadamard_block <= 0:
        return []
    widths = _widths(shape, plan)
    rng = np.random.default_rng([seed, 0x5167])
    signs = [int(v) for v in rng.choice(np.array([-1, 1]), size=sum(widths))]
    names = [n.encode() for n in folded_names(shape, plan)]
    p = "prism.hadamard."
    return [
        (p + "version", 1, T.UINT32, None),
        (p + "block_size", shape.hadamard_block, T.UINT32, None),
        (p + "transform", pt.HADAMARD_TRANSFORM.encode(), T.STRING, None),
        (p + "axis", pt.HADAMARD_AXIS.encode(), T.STRING, None),
        (p + "sign_mode", b"explicit", T.STRING, None),
        (p + "sign_widths", widths, T.ARRAY, T.INT32),
        (p + "sign_values", signs, T.ARRAY, T.INT32),
        (p + "weight_names", names, T.ARRAY, T.STRING),
        (p + "inverse_weight_names", [b"token_embd.weight"], T.ARRAY, T.STRING),
        (p + "gdn_v_grouped", True, T.BOOL, None),
    ]


def make_ternary128(rng: np.random.Generator, wtype: str, rows: int, k: int, base: float) -> np.ndarray:
    """rows x k random ternary weights as PQ2_0 or PTQ1_0 blocks, (rows, k/128 * block bytes) uint8.

    PQ2_0: codes with P(-d, 0, +d) = 1/4, 1/2, 1/4 (as the Q2_0 synthetic weights); PTQ1_0: uniform
    digits, every byte one the fork's encoder writes. Scales around base * sqrt(1 / P(nonzero))."""
    nb = k // 128
    out_bytes = pt.PQ2_0_BLOCK_BYTES if wtype == "pq2_0" else pt.PTQ1_0_BLOCK_BYTES
    out = np.empty((rows, nb, out_bytes), dtype=np.uint8)
    step = max(1, (1 << 22) // k)
    for r0 in range(0, rows, step):
        r = min(step, rows - r0)
        if wtype == "pq2_0":
            scales = (base * np.sqrt(2.0) * rng.uniform(0.8, 1.2, size=(r, nb))).astype("<f2")
            codes = np.frombuffer(rng.bytes(r * nb * 32), np.uint8).reshape(r, nb, 32)
            out[r0:r0 + r, :, :2] = scales.view(np.uint8).reshape(r, nb, 2)
            out[r0:r0 + r, :, 2:] = codes & ~(((codes >> 1) & codes & 0x55) << 1)  # code 3 -> 1
        else:
            scales = (base * np.sqrt(1.5) * rng.uniform(0.8, 1.2, size=(r, nb))).astype("<f2")
            out[r0:r0 + r, :, :24] = _ENCODE5[rng.integers(0, 243, size=(r, nb, 24))]
            out[r0:r0 + r, :, 24:26] = _ENCODE4[rng.integers(0, 81, size=(r, nb, 2))]
            out[r0:r0 + r, :, 26:] = scales.view(np.uint8).reshape(r, nb, 2)
    return out.reshape(rows, nb * out_bytes)


def _unrotate_rows(w: np.ndarray, block: int, signs: np.ndarray) -> np.ndarray:
    """s * H(w) for every row: a product with the explicit Hadamard matrix (faster in NumPy than
    prism_types' butterflies on a vocabulary-sized table, and built independently of them)."""
    rows, n = w.shape
    h = pt.hadamard_matrix(block)
    return (np.asarray(w, dtype=np.float64).reshape(rows, n // block, block) @ h).reshape(rows, n) * signs


def unfold(weights: dict[str, Any], fields: Mapping[str, Any], hp: Mapping[str, Any]) -> None:
    """Turn the stored (rotated) weights of a folded file into primal ones, in place, float64.

    ``fields``: the prism.hadamard.* keys (key -> value). A folded ``ssm_out`` with gdn_v_grouped
    reads its input in grouped value-head order; its primal columns are put back in the tiled order
    the rest of the model (and the reference) uses."""
    p = "prism.hadamard."
    block = int(fields[p + "block_size"])
    signs = pt.sign_vectors(fields[p + "sign_widths"], fields[p + "sign_values"], block)
    grouped = bool(fields.get(p + "gdn_v_grouped", False))
    names = [n.decode() if isinstance(n, bytes) else n for n in fields[p + "weight_names"]]
    for name in names:
        w = _unrotate_rows(weights[name], block, signs[weights[name].shape[1]])
        if grouped and name.endswith(".ssm_out.weight"):
            k_heads, v_heads = hp["ssm_groups"], hp["ssm_v_heads"]
            hd = w.shape[1] // v_heads
            w = w.reshape(w.shape[0], k_heads, v_heads // k_heads, hd).swapaxes(1, 2).reshape(w.shape)
        weights[name] = w
    for name in fields.get(p + "inverse_weight_names", []):
        name = name.decode() if isinstance(name, bytes) else name
        weights[name] = _unrotate_rows(weights[name], block, signs[weights[name].shape[1]])
