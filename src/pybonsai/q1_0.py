"""NumPy helpers for the GGUF Q1_0 format (ggml type 41).

One block holds 128 weights in 18 bytes: a little-endian fp16 scale ``d``
followed by 16 bytes of sign bits. Bit ``j`` (LSB = 0) of byte ``i`` is weight
``8*i + j``; a 0 bit means ``-d`` and a 1 bit means ``+d``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["BLOCK", "BLOCK_BYTES", "GGML_TYPE_Q1_0", "row_bytes",
           "pack_q1_0", "quantize_q1_0", "dequantize_q1_0"]

BLOCK = 128                   # weights per block
BLOCK_BYTES = 18              # 2 bytes fp16 scale + 16 bytes of bits
GGML_TYPE_Q1_0 = 41

# Weights handled per step when dequantizing (keeps the scale temporaries small).
_CHUNK_WEIGHTS = 1 << 22

# _SIGN_LUT[b, j] = +1.0 if bit j (LSB first) of byte b is set, else -1.0.
_SIGN_LUT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1,
                          bitorder="little").astype(np.float32) * 2.0 - 1.0


def _n_blocks(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or k <= 0 or k % BLOCK:
        raise ValueError(f"row length K must be a positive multiple of {BLOCK}, got {k!r}")
    return int(k) // BLOCK


def row_bytes(k: int) -> int:
    """Bytes taken by one Q1_0 row of ``k`` weights."""
    return _n_blocks(k) * BLOCK_BYTES


def pack_q1_0(signs: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Pack sign bits (rows, K) and fp16 scales (rows, K//128) into raw Q1_0 bytes.

    ``signs`` is a bool/integer array (nonzero = +d). Returns uint8 (rows, K//128*18).
    """
    signs = np.asarray(signs)
    scales = np.asarray(scales)
    if signs.ndim != 2:
        raise ValueError(f"signs must be 2-D (rows, K), got shape {signs.shape}")
    rows, k = signs.shape
    nb = _n_blocks(k)
    if scales.shape != (rows, nb):
        raise ValueError(f"scales must have shape {(rows, nb)}, got {scales.shape}")
    out = np.empty((rows, nb, BLOCK_BYTES), dtype=np.uint8)
    out[:, :, :2] = scales.astype("<f2").view(np.uint8).reshape(rows, nb, 2)
    bits = signs.reshape(rows, nb, BLOCK).astype(bool, copy=False)
    out[:, :, 2:] = np.packbits(bits, axis=-1, bitorder="little")
    return out.reshape(rows, nb * BLOCK_BYTES)


def quantize_q1_0(w: np.ndarray) -> np.ndarray:
    """Quantize float weights (rows, K) to raw Q1_0 bytes (rows, K//128*18).

    Per block, d = mean(|w|) (the least-squares scale for sign quantization)
    and the bit is set where w >= 0.
    """
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"w must be 2-D (rows, K), got shape {w.shape}")
    rows, k = w.shape
    nb = _n_blocks(k)
    scales = np.abs(w).reshape(rows, nb, BLOCK).mean(axis=-1, dtype=np.float32)
    return pack_q1_0(w >= 0, scales.astype(np.float16))


def dequantize_q1_0(raw: np.ndarray, k: int) -> np.ndarray:
    """Expand raw Q1_0 bytes (rows, K//128*18) to float32 weights (rows, K)."""
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        raise ValueError(f"raw must be uint8, got {raw.dtype}")
    nb = _n_blocks(k)
    if raw.ndim != 2 or raw.shape[1] != nb * BLOCK_BYTES:
        raise ValueError(f"raw must have shape (rows, {nb * BLOCK_BYTES}) for K={k}, "
                         f"got {raw.shape}")
    rows = raw.shape[0]
    out = np.empty((rows, nb, BLOCK // 8, 8), dtype=np.float32)
    step = max(1, _CHUNK_WEIGHTS // k)
    for r0 in range(0, rows, step):
        blk = raw[r0:r0 + step].reshape(-1, nb, BLOCK_BYTES)
        d = np.ascontiguousarray(blk[:, :, :2]).view("<f2").astype(np.float32)[..., None]
        dst = out[r0:r0 + step]
        np.take(_SIGN_LUT, blk[:, :, 2:], axis=0, out=dst, mode="clip")  # byte -> 8 signs
        dst *= d
    return out.reshape(rows, k)
