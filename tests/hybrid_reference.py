"""Independent NumPy (float64) forward pass of the Qwen3.5/3.6 hybrid (GGUF arch `qwen35`, Bonsai 27B).

Works on the dict returned by pybonsai.synth.read_weights (float32 matrices (rows, K), y = W @ x,
plus "hparams"). Written from the published equations, sharing no code with the package or with
llama.cpp; the generic pieces (RMSNorm, rotary embedding, softmax attention, SiLU, Q8_0 rounding)
come from qwen3_reference. The conventions the equations leave open were read off the pinned graph
(vendor/llama.cpp/src/models/qwen35.cpp, delta-net-base.cpp, ggml-cpu's gated_delta_net, ssm_conv
and rope ops); each is named where it is used.

Layer il is Gated DeltaNet unless (il + 1) % full_attn_interval == 0. Every layer:
    x += mixer(rms_norm(x, attn_norm));  x += ffn(rms_norm(x, post_attention_norm))
with the SwiGLU FFN down(silu(gate(h)) * up(h)), and logits = output(rms_norm(x, output_norm)).

Gated DeltaNet (Yang, Kautz, Hatamizadeh, "Gated Delta Networks", ICLR 2025), per token t:
    [q; k; v] = silu(causal_conv(attn_qkv @ h))   depthwise, width ssm_conv, over the q|k|v channels,
                                                  zero history before the first token; tap j of a
                                                  channel multiplies the input j - (ssm_conv - 1)
                                                  tokens back (no kernel flip)
    q, k: ssm_groups heads, L2-normalized (x / sqrt(|x|^2 + eps), eps = rms_eps); q /= sqrt(d_k)
    v: ssm_v_heads heads; value head h reads key head h % ssm_groups (the GGUF stores the value
       heads tiled: llama.cpp's ggml_repeat and its fused kernel use iv % n_k. Hugging Face's
       PyTorch layout is grouped, h // ratio, which the converter reorders; "grouped" below is
       the deliberately wrong variant)
    alpha_t = exp(g_t), g_t = ssm_a * softplus(ssm_alpha @ h + ssm_dt.bias)   (ssm_a = -A < 0)
    beta_t  = sigmoid(ssm_beta @ h)
    S_t = alpha_t * S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T      (S: d_v x d_k, S_0 = 0)
    o_t = S_t q_t
    out = ssm_out @ concat_h(rms_norm(o_t,h, ssm_norm) * silu(z_t,h)),  z = attn_gate @ h

Gated attention (Qwen3-Next / Qwen3.5 full-attention layers):
    attn_q gives, per head, head_dim query values then head_dim gate values (interleaved by head);
    q, k RMS-normed per head (attn_q_norm / attn_k_norm); rotary embedding of the first rope_dim
    dimensions of each head, NeoX pairing within them (i with i + rope_dim/2), frequencies
    theta^(-2i/rope_dim); the rest pass unrotated. llama.cpp runs this as interleaved multi-section
    RoPE (IMROPE), whose t/h/w positions are all the token's position for text, so it is plain 1-D
    RoPE here (the 4th section, position 0, has size 0 in Qwen3.5). Causal softmax attention,
    scale 1/sqrt(head_dim), query head h on KV head h // (n_head / n_head_kv); the result times
    sigmoid(gate), then attn_output.

Options emulating what ggml's CPU backend rounds on purpose (off by default):
  q8_activations      round the input of every quantized (Q1_0 / Q2_0) matmul to Q8_0;
  attention_rounding  "kv": k and v to fp16 (the f16 KV cache as pybonsai's flash-attention kernel
                      reads it: q and the probabilities stay f32); "qkvp": q, k, v and the softmax
                      probabilities to fp16 (ggml's attention without flash attention).
With q8_activations and the matching attention_rounding, the float64 result matched pybonsai's CPU
build to ~3e-8 relative at most positions of the tiny hybrids; where an activation sits so close
to a Q8_0 rounding boundary that float32 (ggml) and float64 (here) round it apart, that position and
some later ones (through the attention and the recurrent state) move by up to ~1e-2.
Deliberately wrong variants (tests show the tolerance rejects them):
  key_heads="grouped"  value head h reads key head h // (ssm_v_heads / ssm_groups);
  l2_norm=False        q and k of the DeltaNet not L2-normalized;
  rope_style="normal"  adjacent pairs rotated instead of NeoX halves.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from qwen3_reference import attention, linear, rms_norm, rope, silu, to_f16

__all__ = ["forward", "hidden_states", "is_recurrent", "delta_rule", "causal_conv", "l2_normalize",
           "value_to_key_head"]


def is_recurrent(hp: Mapping[str, Any], il: int) -> bool:
    """Whether layer il is Gated DeltaNet (else gated full attention)."""
    return (il + 1) % hp["full_attn_interval"] != 0


def l2_normalize(x: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(sum(x^2) + eps) over the last axis."""
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + eps)


def causal_conv(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Depthwise causal convolution: x (n, C), taps (C, width) -> (n, C), with
    out[t, c] = sum_j taps[c, j] * x[t - (width - 1) + j, c] and zeros before the first token."""
    n, width = x.shape[0], taps.shape[1]
    padded = np.concatenate([np.zeros((width - 1, x.shape[1])), x], axis=0)
    return sum(padded[j:j + n] * taps[:, j] for j in range(width))


def value_to_key_head(n_v: int, n_k: int, key_heads: str = "tiled") -> np.ndarray:
    """For each value head, the key head whose q and k it uses."""
    h = np.arange(n_v)
    if key_heads == "tiled":
        return h % n_k
    if key_heads == "grouped":
        return h // (n_v // n_k)
    raise ValueError(f"unknown key-head mapping {key_heads!r}")


def delta_rule(q: np.ndarray, k: np.ndarray, v: np.ndarray, alpha: np.ndarray,
               beta: np.ndarray) -> np.ndarray:
    """The gated delta rule of one head, token by token: q, k (n, d_k), v (n, d_v), alpha and
    beta (n,) -> outputs o_t = S_t q_t, (n, d_v)."""
    n, d_k = k.shape
    state = np.zeros((v.shape[1], d_k))
    eye = np.eye(d_k)
    out = np.empty_like(v)
    for t in range(n):
        state = alpha[t] * state @ (eye - beta[t] * np.outer(k[t], k[t])) + beta[t] * np.outer(v[t], k[t])
        out[t] = state @ q[t]
    return out


_ROUNDINGS = ("none", "kv", "qkvp")


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _delta_net(w: Mapping[str, np.ndarray], h: np.ndarray, hp: Mapping[str, Any], q8: bool,
               key_heads: str, l2_norm: bool) -> np.ndarray:
    """A Gated DeltaNet mixer: h (n, n_embd) -> (n, n_embd)."""
    n, eps = h.shape[0], float(hp["rms_eps"])
    d, n_k, n_v = hp["ssm_state"], hp["ssm_groups"], hp["ssm_v_heads"]
    mixed = silu(causal_conv(linear(h, w["attn_qkv.weight"], q8), w["ssm_conv1d.weight"].astype(np.float64)))
    q = mixed[:, :n_k * d].reshape(n, n_k, d)
    k = mixed[:, n_k * d:2 * n_k * d].reshape(n, n_k, d)
    v = mixed[:, 2 * n_k * d:].reshape(n, n_v, d)
    if l2_norm:
        q, k = l2_normalize(q, eps), l2_normalize(k, eps)
    q = q / np.sqrt(d)
    g = w["ssm_a"] * _softplus(linear(h, w["ssm_alpha.weight"], q8) + w["ssm_dt.bias"])     # (n, n_v)
    alpha, beta = np.exp(g), _sigmoid(linear(h, w["ssm_beta.weight"], q8))
    z = linear(h, w["attn_gate.weight"], q8).reshape(n, n_v, d)
    key_of = value_to_key_head(n_v, n_k, key_heads)
    o = np.stack([delta_rule(q[:, key_of[i]], k[:, key_of[i]], v[:, i], alpha[:, i], beta[:, i])
                  for i in range(n_v)], axis=1)                                            # (n, n_v, d)
    gated = rms_norm(o, w["ssm_norm.weight"], eps) * silu(z)
    return linear(gated.reshape(n, n_v * d), w["ssm_out.weight"], q8)


def _partial_rope(x: np.ndarray, pos: np.ndarray, theta: float, rope_dim: int, style: str) -> np.ndarray:
    """Rotate the first rope_dim dimensions of every head of x (n, heads, head_dim)."""
    return np.concatenate([rope(x[..., :rope_dim], pos, theta, style), x[..., rope_dim:]], axis=-1)


def _gated_attention(w: Mapping[str, np.ndarray], h: np.ndarray, hp: Mapping[str, Any], q8: bool,
                     rounding: str, rope_style: str) -> np.ndarray:
    """A gated full-attention mixer: h (n, n_embd) -> (n, n_embd)."""
    n, eps, theta = h.shape[0], float(hp["rms_eps"]), float(hp["rope_theta"])
    n_head, n_head_kv, hd, rd = hp["n_head"], hp["n_head_kv"], hp["head_dim"], hp["rope_dim"]
    pos = np.arange(n)
    qg = linear(h, w["attn_q.weight"], q8).reshape(n, n_head, 2 * hd)
    q, gate = qg[..., :hd], qg[..., hd:].reshape(n, n_head * hd)
    k = linear(h, w["attn_k.weight"], q8).reshape(n, n_head_kv, hd)
    v = linear(h, w["attn_v.weight"], q8).reshape(n, n_head_kv, hd)
    q = _partial_rope(rms_norm(q, w["attn_q_norm.weight"], eps), pos, theta, rd, rope_style)
    k = _partial_rope(rms_norm(k, w["attn_k_norm.weight"], eps), pos, theta, rd, rope_style)
    if rounding not in _ROUNDINGS:
        raise ValueError(f"unknown attention_rounding {rounding!r}; choose from {_ROUNDINGS}")
    if rounding != "none":
        k, v = to_f16(k), to_f16(v)
    if rounding == "qkvp":
        q = to_f16(q)
    att = attention(q, k, v, 1.0 / np.sqrt(hd), f16=rounding == "qkvp")
    return linear(att * _sigmoid(gate), w["attn_output.weight"], q8)


def hidden_states(weights: Mapping[str, Any], tokens: Sequence[int], *, q8_activations: bool = False,
                  attention_rounding: str = "none", key_heads: str = "tiled", l2_norm: bool = True,
                  rope_style: str = "neox") -> np.ndarray:
    """The final hidden states after the output norm, (n_tokens, n_embd), float64."""
    hp = weights["hparams"]
    if hp["arch"] != "qwen35":
        raise ValueError(f"hybrid_reference runs qwen35 models, not {hp['arch']!r}")
    eps, q8 = float(hp["rms_eps"]), q8_activations
    x = weights["token_embd.weight"][np.asarray(tokens, dtype=np.int64)].astype(np.float64)
    for il in range(hp["n_layer"]):
        prefix = f"blk.{il}."
        w = {key[len(prefix):]: val for key, val in weights.items() if key.startswith(prefix)}
        h = rms_norm(x, w["attn_norm.weight"], eps)
        if is_recurrent(hp, il):
            x = x + _delta_net(w, h, hp, q8, key_heads, l2_norm)
        else:
            x = x + _gated_attention(w, h, hp, q8, attention_rounding, rope_style)
        h = rms_norm(x, w["post_attention_norm.weight"], eps)
        x = x + linear(silu(linear(h, w["ffn_gate.weight"], q8)) * linear(h, w["ffn_up.weight"], q8),
                       w["ffn_down.weight"], q8)
    return rms_norm(x, weights["output_norm.weight"], eps)


def forward(weights: Mapping[str, Any], tokens: Sequence[int], **options: Any) -> np.ndarray:
    """Logits (n_tokens, n_vocab), float64, for tokens at positions 0..n-1 (options: hidden_states)."""
    h = hidden_states(weights, tokens, **options)
    return linear(h, weights["output.weight"], options.get("q8_activations", False))
