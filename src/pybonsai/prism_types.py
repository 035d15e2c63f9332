"""NumPy reference of PrismML's Bonsai 2 tensor formats: PQ2_0, PTQ1_0 and the `prism.hadamard` fold.

Everything here follows `vendor/patches/BONSAI2_FORMAT.md`, which gives the source of each decision;
the short version, with the section of that document in brackets:

* Both types hold ternary weights ``t in {-1, 0, +1}`` (code ``c = t + 1``) times one fp16 scale
  ``d`` per group of 128 consecutive weights of a row, ``w = (c - 1) * d`` [layouts].
* ``PQ2_0`` (ggml type 142), 34 bytes: ``d`` (little-endian fp16) first, then ``qs[32]``; weight
  ``j`` is bits ``2*(j % 4) .. 2*(j % 4)+1`` of ``qs[j // 4]`` (lowest pair first). Code 3 (+2*d)
  is legal in the container and never written by a ternary checkpoint [PQ2_0].
* ``PTQ1_0`` (ggml type 143), 28 bytes: ``qs[24]``, ``qh[2]``, then ``d`` *last* (upstream TQ1_0's
  layout at group 128). A byte holds up to five base-3 digits, most significant first, stored as
  ``ceil(v * 256 / 243)``; digit ``n`` is read back as ``((b * 3**n) mod 256) * 3 >> 8``.
  Elements 0..79 are digit ``e // 16`` of ``qs[e % 16]``, 80..119 digit ``(e-80) // 8`` of
  ``qs[16 + (e-80) % 8]``, 120..127 digit ``(e-120) // 2`` of ``qh[(e-120) % 2]``; a ``qh`` byte
  carries four digits followed by a zero digit [PTQ1_0].
* The fold: a listed weight is stored as ``w_stored = H(s * w)`` row by row, where ``s`` is the
  +-1 sign vector of the row's width (identity when ``sign_mode`` is ``identity``) and ``H`` the
  *normalized* Sylvester-Walsh-Hadamard matrix (``H[r, c] = (-1)**popcount(r & c) / sqrt(B)``,
  symmetric, ``H @ H = I``) applied to each ``block_size`` chunk. The runtime applies the same
  ``x -> H(s * x)`` to the activation right before the product, so ``w_stored . H(s*x) = w . x``;
  an inverse table (``token_embd``) is un-rotated after the lookup with ``h = s * H(z)`` [fold].
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "GGML_TYPE_PQ2_0", "GGML_TYPE_PTQ1_0", "QK_PQ2_0", "QK_PTQ1_0", "PQ2_0_BLOCK_BYTES",
    "PTQ1_0_BLOCK_BYTES", "HADAMARD_TRANSFORM", "HADAMARD_AXIS", "HADAMARD_BLOCK_BONSAI2_27B",
    "pq2_0_codes", "ptq1_0_codes", "dequantize_pq2_0", "dequantize_ptq1_0", "quantize_pq2_0",
    "quantize_ptq1_0", "ptq1_0_encode_digits", "ptq1_0_decode_byte", "hadamard_matrix",
    "hadamard_blocks", "hadamard_blocks_inverse", "sign_vectors", "gdn_tiled_to_grouped",
]

GGML_TYPE_PQ2_0 = 142
GGML_TYPE_PTQ1_0 = 143
QK_PQ2_0 = 128               # weights per block (one fp16 scale each)
QK_PTQ1_0 = 128
PQ2_0_BLOCK_BYTES = 34       # fp16 d + 32 bytes of 2-bit codes: 2.125 bits per weight
PTQ1_0_BLOCK_BYTES = 28      # 24 qs + 2 qh + fp16 d: 1.75 bits per weight

HADAMARD_TRANSFORM = "normalized-sylvester-walsh-hadamard"   # prism.hadamard.transform
HADAMARD_AXIS = "input-last-dimension"                       # prism.hadamard.axis
HADAMARD_BLOCK_BONSAI2_27B = 1024                            # prism.hadamard.block_size of the 27B

_POW3 = np.array([1, 3, 9, 27, 81, 243], dtype=np.uint16)


def _ptq1_0_element_map() -> tuple[np.ndarray, np.ndarray]:
    """(byte index in qs+qh, base-3 digit) of each of the 128 elements of a PTQ1_0 block."""
    e = np.arange(QK_PTQ1_0)
    byte = np.where(e < 80, e % 16, np.where(e < 120, 16 + (e - 80) % 8, 24 + (e - 120) % 2))
    digit = np.where(e < 80, e // 16, np.where(e < 120, (e - 80) // 8, (e - 120) // 2))
    return byte, digit


_PTQ1_BYTE, _PTQ1_DIGIT = _ptq1_0_element_map()


def _blocks(raw, n: int, qk: int, block_bytes: int, name: str) -> np.ndarray:
    """`raw` (bytes or uint8 array of any shape) as (n // qk, block_bytes) uint8 blocks."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = np.frombuffer(raw, dtype=np.uint8)
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        raise ValueError(f"{name}: raw must be bytes or uint8, got {raw.dtype}")
    if not isinstance(n, (int, np.integer)) or n < 0 or n % qk:
        raise ValueError(f"{name}: n must be a non-negative multiple of {qk}, got {n!r}")
    nb = int(n) // qk
    if raw.size != nb * block_bytes:
        raise ValueError(f"{name}: {n} weights take {nb * block_bytes} bytes, got {raw.size}")
    return raw.reshape(nb, block_bytes)


def _scales_f16(scales, nb: int, name: str) -> np.ndarray:
    s = np.asarray(scales)
    if s.size != nb:
        raise ValueError(f"{name}: need {nb} scales (one per {QK_PQ2_0} weights), got {s.size}")
    return s.reshape(nb).astype("<f2")


def pq2_0_codes(raw, n: int) -> tuple[np.ndarray, np.ndarray]:
    """PQ2_0 bytes -> (int8 values ``c - 1`` in {-1, 0, 1, 2} of shape (n,), fp16 scales (n//128,))."""
    b = _blocks(raw, n, QK_PQ2_0, PQ2_0_BLOCK_BYTES, "PQ2_0")
    d = b[:, :2].copy().view("<f2").reshape(-1)
    shifts = (2 * np.arange(4, dtype=np.uint8))
    codes = (b[:, 2:, None] >> shifts) & 3                 # (nb, 32, 4): weight 4*byte + pair
    return codes.reshape(-1).astype(np.int8) - 1, d


def ptq1_0_decode_byte(byte: int | np.ndarray, digit: int | np.ndarray) -> np.ndarray:
    """Base-3 digit ``digit`` (0 = most significant) of packed byte(s): 0, 1 or 2."""
    q = (np.asarray(byte, dtype=np.uint16) * _POW3[np.asarray(digit)]) & 0xFF
    return ((q * 3) >> 8).astype(np.uint8)


def ptq1_0_codes(raw, n: int) -> tuple[np.ndarray, np.ndarray]:
    """PTQ1_0 bytes -> (int8 trits in {-1, 0, 1} of shape (n,), fp16 scales (n//128,))."""
    b = _blocks(raw, n, QK_PTQ1_0, PTQ1_0_BLOCK_BYTES, "PTQ1_0")
    d = b[:, 26:28].copy().view("<f2").reshape(-1)
    trits = ptq1_0_decode_byte(b[:, _PTQ1_BYTE], _PTQ1_DIGIT)   # (nb, 128)
    return trits.reshape(-1).astype(np.int8) - 1, d


def dequantize_pq2_0(raw, n: int) -> np.ndarray:
    """PQ2_0 bytes -> float32 weights (n,): ``(c - 1) * d`` as the fork's ``dequantize_row_pq2_0``."""
    t, d = pq2_0_codes(raw, n)
    return (t.reshape(-1, QK_PQ2_0).astype(np.float32) * d.astype(np.float32)[:, None]).reshape(-1)


def dequantize_ptq1_0(raw, n: int) -> np.ndarray:
    """PTQ1_0 bytes -> float32 weights (n,): ``(trit - 1) * d`` as ``dequantize_row_ptq1_0``."""
    t, d = ptq1_0_codes(raw, n)
    return (t.reshape(-1, QK_PTQ1_0).astype(np.float32) * d.astype(np.float32)[:, None]).reshape(-1)


def _check_codes(codes, lo: int, hi: int, name: str) -> np.ndarray:
    c = np.asarray(codes).reshape(-1)
    if c.size % QK_PQ2_0:
        raise ValueError(f"{name}: the number of codes must be a multiple of 128, got {c.size}")
    if c.size and (c.min() < lo or c.max() > hi):
        raise ValueError(f"{name}: codes must lie in {lo}..{hi}")
    return c.astype(np.int16)


def quantize_pq2_0(codes, scales) -> np.ndarray:
    """Pack values ``t`` (-1, 0, +1; +2 is allowed by the container) and one scale per 128 weights
    into PQ2_0 bytes, uint8 of shape (n // 128 * 34,)."""
    c = (_check_codes(codes, -1, 2, "PQ2_0") + 1).astype(np.uint8).reshape(-1, 32, 4)
    nb = c.shape[0]
    out = np.empty((nb, PQ2_0_BLOCK_BYTES), dtype=np.uint8)
    out[:, :2] = _scales_f16(scales, nb, "PQ2_0").view(np.uint8).reshape(nb, 2)
    out[:, 2:] = c[..., 0] | (c[..., 1] << 2) | (c[..., 2] << 4) | (c[..., 3] << 6)
    return out.reshape(-1)


def ptq1_0_encode_digits(digits) -> np.ndarray:
    """Bytes for base-3 digit rows (..., 5) in 0..2, most significant first: ``ceil(v*256/243)``."""
    d = np.asarray(digits, dtype=np.int64)
    v = d @ (3 ** np.arange(d.shape[-1] - 1, -1, -1))
    return ((v * 256 + 242) // 243).astype(np.uint8)


def quantize_ptq1_0(codes, scales) -> np.ndarray:
    """Pack trits (-1, 0, +1) and one scale per 128 weights into PTQ1_0 bytes, uint8 (n//128*28,)."""
    c = (_check_codes(codes, -1, 1, "PTQ1_0") + 1).reshape(-1, QK_PTQ1_0)
    nb = c.shape[0]
    digits = np.zeros((nb, 26, 5), dtype=np.int64)        # qh bytes keep their 5th digit at 0
    digits[:, _PTQ1_BYTE, _PTQ1_DIGIT] = c
    out = np.empty((nb, PTQ1_0_BLOCK_BYTES), dtype=np.uint8)
    out[:, :26] = ptq1_0_encode_digits(digits)
    out[:, 26:] = _scales_f16(scales, nb, "PTQ1_0").view(np.uint8).reshape(nb, 2)
    return out.reshape(-1)


def _check_block(block: int) -> int:
    if not isinstance(block, (int, np.integer)) or block < 1 or block & (block - 1):
        raise ValueError(f"Hadamard block size must be a power of two, got {block!r}")
    return int(block)


def hadamard_matrix(block: int) -> np.ndarray:
    """Normalized Sylvester-Walsh-Hadamard matrix, float64: ``(-1)**popcount(r & c) / sqrt(block)``."""
    block = _check_block(block)
    h = np.ones((1, 1))
    while h.shape[0] < block:                       # Sylvester: H_2n = [[H, H], [H, -H]]
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(block)


def _fwht(x: np.ndarray) -> np.ndarray:
    """Unnormalized fast Walsh-Hadamard transform along the last axis (natural/Sylvester order)."""
    n = x.shape[-1]
    y = x.reshape(-1, n).copy()
    h = 1
    while h < n:
        y = y.reshape(-1, n // (2 * h), 2, h)
        a, b = y[:, :, 0, :].copy(), y[:, :, 1, :]
        y[:, :, 0, :] += b
        y[:, :, 1, :] = a - b
        h *= 2
    return y.reshape(x.shape)


def _signs_for(width: int, signs) -> np.ndarray | None:
    if signs is None:
        return None
    s = np.asarray(signs, dtype=np.float64).reshape(-1)
    if s.size != width:
        raise ValueError(f"the sign vector has {s.size} entries, the rows have {width}")
    if not np.all(np.abs(s) == 1.0):
        raise ValueError("sign values must be +1 or -1")
    return s


def hadamard_blocks(x, block: int, signs=None) -> np.ndarray:
    """The activation transform of a folded weight, float64: ``H(s * x)`` on the last axis.

    `signs` (length = the last axis, the weight's input width) is applied first, then the normalized
    Hadamard transform to each consecutive `block`-wide chunk. Self-inverse up to the signs:
    :func:`hadamard_blocks_inverse` undoes it. Folding a weight row uses the same function:
    ``w_stored = hadamard_blocks(w, block, signs)``.
    """
    block = _check_block(block)
    x = np.asarray(x, dtype=np.float64)
    width = x.shape[-1]
    if width % block:
        raise ValueError(f"Hadamard block {block} does not divide the row width {width}")
    s = _signs_for(width, signs)
    if s is not None:
        x = x * s
    y = _fwht(x.reshape(*x.shape[:-1], width // block, block)) / np.sqrt(block)
    return y.reshape(x.shape)


def hadamard_blocks_inverse(y, block: int, signs=None) -> np.ndarray:
    """Undo :func:`hadamard_blocks`: ``s * H(y)``. This is the fork's un-rotation of a latent
    embedding row after lookup, and recovers a primal weight row from its stored (folded) row."""
    z = hadamard_blocks(y, block, None)
    s = _signs_for(z.shape[-1], signs)
    return z if s is None else z * s


def sign_vectors(widths, values, block: int | None = None) -> dict[int, np.ndarray]:
    """``prism.hadamard.sign_widths`` + flattened ``sign_values`` -> {width: float64 +-1 vector}.

    Raises ValueError on what the fork refuses: no widths, a non-positive width (or one the block
    does not divide), values that are not +-1, or a total length that differs from sum(widths).
    """
    widths = [int(w) for w in widths]
    vals = np.asarray(values).reshape(-1)
    if not widths:
        raise ValueError("prism.hadamard.sign_widths is empty")
    out: dict[int, np.ndarray] = {}
    off = 0
    for w in widths:
        if w <= 0 or (block is not None and w % _check_block(block)):
            raise ValueError(f"invalid prism.hadamard sign width {w}")
        if off + w > vals.size:
            raise ValueError("prism.hadamard.sign_values is shorter than its widths")
        out[w] = _signs_for(w, vals[off:off + w])
        off += w
    if off != vals.size:
        raise ValueError("prism.hadamard.sign_values is longer than its widths")
    return out


def gdn_tiled_to_grouped(x, head_dim: int, n_key_heads: int, values_per_key: int) -> np.ndarray:
    """Reorder a linear-attention (GDN) value activation from llama.cpp's tiled head order to the
    grouped (training) order, last axis: grouped head ``k * r + j`` comes from tiled head
    ``j * K + k``. Applied before the signs and the transform for a folded ``ssm_out`` when
    ``prism.hadamard.gdn_v_grouped`` is true."""
    x = np.asarray(x)
    K, r = int(n_key_heads), int(values_per_key)
    if x.shape[-1] != K * r * head_dim:
        raise ValueError(f"width {x.shape[-1]} != {K} key heads x {r} x {head_dim}")
    t = x.reshape(*x.shape[:-1], r, K, head_dim)
    return np.swapaxes(t, -3, -2).reshape(x.shape)
