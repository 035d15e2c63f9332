"""Independent NumPy (float64) Qwen3 forward pass, for checking pybonsai's logits.

Works on the dict returned by pybonsai.synth.read_weights (float32 matrices of shape
(rows, K), i.e. y = W @ x, plus "hparams"). The forward pass follows the Qwen3
architecture description; it shares no code with the package.

Options that emulate what ggml's CPU backend does on purpose (off by default):
  q8_activations  round the input of every Q1_0 matmul to Q8_0 (32 values per block,
                  d = max|x|/127 stored as fp16, q = round(x/d)), as ggml does before its
                  Q1_0 x Q8_0 dot products;
  f16_attention   round q, k, v and the softmax probabilities to fp16, as ggml's attention
                  without flash attention does (fp16 KV cache; Q and KQ converted to fp16
                  for the fp16 matmuls).
With both options on, the float64 result matched pybonsai's ggml CPU build (no flash
attention) to ~1e-7 relative on the tiny model; because every fp16/Q8_0 rounding is a cliff,
one rounding tie decided differently can make later positions drift apart by ~1%.
Deliberately wrong variants, used to show that the tests can tell them apart:
  rope_style="normal"  rotate adjacent pairs (GPT-J / llama style) instead of NeoX halves.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["forward", "hidden_states", "q8_0_roundtrip", "flip_bit_order", "rms_norm", "rope", "linear",
           "attention", "silu", "to_f16"]

# Rows of a weight matrix converted to float64 at a time (bounds the LM-head temporaries).
_ROW_CHUNK = 16384


def q8_0_roundtrip(x: np.ndarray) -> np.ndarray:
    """x (..., K) -> the values ggml's Q8_0 activation quantization reproduces."""
    x32 = np.asarray(x, dtype=np.float32)
    if x32.shape[-1] % 32:
        raise ValueError("Q8_0 needs a multiple of 32 values per row")
    blocks = x32.reshape(*x32.shape[:-1], -1, 32)
    amax = np.abs(blocks).max(axis=-1, keepdims=True)
    d = (amax / np.float32(127)).astype(np.float16).astype(np.float64)    # stored scale
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(blocks * inv)                                   # float32 multiply, round-to-even
    return (q.astype(np.float64) * d).reshape(x32.shape)


def flip_bit_order(w: np.ndarray) -> np.ndarray:
    """The matrix a reader with MSB-first bit order would see (weights 8i..8i+7 reversed)."""
    rows, k = w.shape
    return np.ascontiguousarray(w.reshape(rows, k // 8, 8)[:, :, ::-1]).reshape(rows, k)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * weight."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope(x: np.ndarray, positions: np.ndarray, theta: float, style: str = "neox") -> np.ndarray:
    """Rotary embedding of x (n_tokens, n_heads, head_dim) at the given positions.

    "neox": element i is paired with i + head_dim/2 (Qwen3, ggml's NEOX mode);
    "normal": element 2i is paired with 2i+1.
    """
    n, _, hd = x.shape
    half = hd // 2
    freqs = theta ** (-np.arange(half, dtype=np.float64) * 2.0 / hd)       # (half,)
    ang = positions.astype(np.float64)[:, None] * freqs[None, :]            # (n, half)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if style == "neox":
        a, b = x[..., :half], x[..., half:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
    if style == "normal":
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out
    raise ValueError(f"unknown rope style {style!r}")


def linear(x: np.ndarray, w: np.ndarray, q8: bool) -> np.ndarray:
    """x (n, K) @ w.T for w (rows, K), in float64."""
    if q8:
        x = q8_0_roundtrip(x)
    out = np.empty((x.shape[0], w.shape[0]), dtype=np.float64)
    for r0 in range(0, w.shape[0], _ROW_CHUNK):
        out[:, r0:r0 + _ROW_CHUNK] = x @ w[r0:r0 + _ROW_CHUNK].astype(np.float64).T
    return out


def to_f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float64)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float,
              f16: bool = False) -> np.ndarray:
    """Causal GQA attention: q (n, H, hd), k/v (n, Hkv, hd) -> (n, H*hd)."""
    n, n_head, hd = q.shape
    group = n_head // k.shape[1]
    kh = np.repeat(k, group, axis=1)                 # query head h uses kv head h // group
    vh = np.repeat(v, group, axis=1)
    scores = np.einsum("ihd,jhd->hij", q, kh) * scale
    scores = np.where(np.tri(n, dtype=bool)[None], scores, -np.inf)
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)
    if f16:
        p = to_f16(p)
    return np.einsum("hij,jhd->ihd", p, vh).reshape(n, n_head * hd)


def forward(weights: Mapping[str, Any], tokens: Sequence[int], *, q8_activations: bool = False,
            f16_attention: bool = False, rope_style: str = "neox") -> np.ndarray:
    """Logits (n_tokens, n_vocab), float64, for tokens at positions 0..n-1."""
    h = hidden_states(weights, tokens, q8_activations=q8_activations, f16_attention=f16_attention,
                      rope_style=rope_style)
    return linear(h, weights["output.weight"], q8_activations)


def hidden_states(weights: Mapping[str, Any], tokens: Sequence[int], *, q8_activations: bool = False,
                  f16_attention: bool = False, rope_style: str = "neox") -> np.ndarray:
    """The final hidden states after the output norm (what the LM head reads, and what
    llama.cpp returns as embeddings), (n_tokens, n_embd), float64."""
    hp = weights["hparams"]
    n_head, n_head_kv, hd = hp["n_head"], hp["n_head_kv"], hp["head_dim"]
    eps, theta = float(hp["rms_eps"]), float(hp["rope_theta"])
    tokens = np.asarray(tokens, dtype=np.int64)
    n = len(tokens)
    pos = np.arange(n)
    q8 = q8_activations
    maybe_f16 = to_f16 if f16_attention else (lambda a: a)

    x = weights["token_embd.weight"][tokens].astype(np.float64)          # (n, n_embd)
    for il in range(hp["n_layer"]):
        w = {key[len(f"blk.{il}."):]: val for key, val in weights.items()
             if key.startswith(f"blk.{il}.")}
        h = rms_norm(x, w["attn_norm.weight"], eps)
        q = linear(h, w["attn_q.weight"], q8).reshape(n, n_head, hd)
        k = linear(h, w["attn_k.weight"], q8).reshape(n, n_head_kv, hd)
        v = linear(h, w["attn_v.weight"], q8).reshape(n, n_head_kv, hd)
        q = rope(rms_norm(q, w["attn_q_norm.weight"], eps), pos, theta, rope_style)
        k = rope(rms_norm(k, w["attn_k_norm.weight"], eps), pos, theta, rope_style)
        att = attention(maybe_f16(q), maybe_f16(k), maybe_f16(v), 1.0 / np.sqrt(hd),
                        f16=f16_attention)
        x = x + linear(att, w["attn_output.weight"], q8)

        h = rms_norm(x, w["ffn_norm.weight"], eps)
        gate = linear(h, w["ffn_gate.weight"], q8)
        up = linear(h, w["ffn_up.weight"], q8)
        x = x + linear(silu(gate) * up, w["ffn_down.weight"], q8)

    return rms_norm(x, weights["output_norm.weight"], eps)
