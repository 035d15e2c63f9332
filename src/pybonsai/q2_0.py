"""NumPy helpers for the GGUF Q2_0 format (ggml type 42): ternary Bonsai weights.

One block holds 64 weights in 18 bytes: a little-endian fp16 scale ``d`` followed by 16 bytes
of 2-bit codes. Weight ``j`` of a block is code ``c = (byte[j // 4] >> (2 * (j % 4))) & 3``
(the lowest bit pair first) and means ``(c - 1) * d``: 0 -> -d, 1 -> 0, 2 -> +d, 3 -> +2d
(ternary models never use 3).
"""
from __future__ import annotations

import numpy as np

__all__ = ["BLOCK", "BLOCK_BYTES", "GGML_TYPE_Q2_0", "row_bytes", "pack_q2_0", "quantize_q2_0",
           "dequantize_q2_0"]

BLOCK = 64                    # weights per block
BLOCK_BYTES = 18              # 2 bytes fp16 scale + 16 bytes of codes
GGML_TYPE_Q2_0 = 42

_CHUNK_WEIGHTS = 1 << 22

# _VALUE_LUT[b, j] = (code j of byte b) - 1, codes taken lowest bit pair first
_VALUE_LUT = (((np.arange(256, dtype=np.uint8)[:, None] >> (2 * np.arange(4, dtype=np.uint8))) & 3)
              .astype(np.float32) - 1.0)


def _n_blocks(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or k <= 0 or k % BLOCK:
        raise ValueError(f"row length K must be a positive multiple of {BLOCK}, got {k!r}")
    return int(k) // BLOCK


def row_bytes(k: int) -> int:
    """Bytes taken by one Q2_0 row of ``k`` weights."""
    return _n_blocks(k) * BLOCK_BYTES


def pack_q2_0(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Pack 2-bit codes (rows, K) in 0..3 and fp16 scales (rows, K//64) into raw Q2_0 bytes."""
    codes = np.asarray(codes)
    scales = np.asarray(scales)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (rows, K), got shape {codes.shape}")
    rows, k = codes.shape
    nb = _n_blocks(k)
    if scales.shape != (rows, nb):
        raise ValueError(f"scales must have shape {(rows, nb)}, got {scales.shape}")
    if codes.size and (codes.min() < 0 or codes.max() > 3):
        raise ValueError("codes must lie in 0..3")
    c = codes.astype(np.uint8).reshape(rows, nb, BLOCK // 4, 4)
    out = np.empty((rows, nb, BLOCK_BYTES), dtype=np.uint8)
    out[:, :, :2] = scales.astype("<f2").view(np.uint8).reshape(rows, nb, 2)
    out[:, :, 2:] = c[..., 0] | (c[..., 1] << 2) | (c[..., 2] << 4) | (c[..., 3] << 6)
    return out.reshape(rows, nb * BLOCK_BYTES)


def quantize_q2_0(w: np.ndarray) -> np.ndarray:
    """Ternary-quantize float weights (rows, K) to raw Q2_0 bytes (rows, K//64*18).

    Per block, d = mean(|w|) (absmean, as ternary training does) and each weight becomes the
    nearest of -d, 0, +d.
    """
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"w must be 2-D (rows, K), got shape {w.shape}")
    rows, k = w.shape
    nb = _n_blocks(k)
    blocks = w.reshape(rows, nb, BLOCK)
    d = np.abs(blocks).mean(axis=-1, dtype=np.float32)
    safe = np.where(d > 0, d, 1.0)[..., None]
    codes = np.clip(np.rint(blocks / safe), -1, 1).astype(np.int8) + 1
    return pack_q2_0(codes.reshape(rows, k), d.astype(np.float16))


def dequantize_q2_0(raw: np.ndarray, k: int) -> np.ndarray:
    """Expand raw Q2_0 bytes (rows, K//64*18) to float32 weights (rows, K)."""
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        raise ValueError(f"raw must be uint8, got {raw.dtype}")
    nb = _n_blocks(k)
    if raw.ndim != 2 or raw.shape[1] != nb * BLOCK_BYTES:
        raise ValueError(f"raw must have shape (rows, {nb * BLOCK_BYTES}) for K={k}, got {raw.shape}")
    rows = raw.shape[0]
    out = np.empty((rows, nb, BLOCK // 4, 4), dtype=np.float32)
    step = max(1, _CHUNK_WEIGHTS // k)
    for r0 in range(0, rows, step):
        blk = raw[r0:r0 + step].reshape(-1, nb, BLOCK_BYTES)
        d = np.ascontiguousarray(blk[:, :, :2]).view("<f2").astype(np.float32)[..., None]
        dst = out[r0:r0 + step]
        np.take(_VALUE_LUT, blk[:, :, 2:], axis=0, out=dst, mode="clip")
        dst *= d
    return out.reshape(rows, k)
