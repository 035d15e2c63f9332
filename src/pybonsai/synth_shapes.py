"""Model shapes and tensor plans of the synthetic Bonsai models (pybonsai.synth).

Three architectures, with tensor names, shapes and metadata as the pinned llama.cpp loads them:
- `qwen3`: Bonsai 1.7B / 4B / 8B and the ternary Bonsai models.
- `qwen35`: Bonsai 27B (Qwen3.5/3.6 hybrid): every `full_attn_interval`-th layer is gated full
  attention (query and output gate from one projection, q/k RMS norm, partial rotary embedding),
  the others Gated DeltaNet linear attention (a fused q/k/v projection through a causal conv, a
  z gate, per-head decay `ssm_a`/`ssm_alpha`/`ssm_dt` and write strength `ssm_beta`, a recurrent
  state of ssm_state x ssm_state per value head).
- `mamba`: Mamba-1, a pure recurrent model (the stand-in for llama-cpp-python's mamba-130m test
  model): per layer an input projection to x and z (d_inner = 2 n_embd each), a causal conv over
  x, a selective scan with input-dependent step dt (through a rank-`ssm_dt_rank` projection), B
  and C (ssm_state each), a skip D, the z gate, and an output projection; no attention, no FFN.
Every 2-D weight matrix is stored in the shape's weight type (`q1_0` or `q2_0`), except Mamba's
dt projection when its rank is not a multiple of the block (F32); norms, conv kernels, biases
and the decay parameters are F32. `pooling_type` (llama.h's enum) makes an embedding model:
llama.cpp then pools by default.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["ModelShape", "SHAPES", "WEIGHT_TYPES", "tensor_plan", "tensor_wtype", "arch_metadata",
           "is_recurrent_layer"]

# weight type name -> (ggml type id, weights per block, bytes per block)
WEIGHT_TYPES = {"q1_0": (41, 128, 18), "q2_0": (42, 64, 18),
                # PrismML's Bonsai 2 types (pybonsai.synth_prism)
                "pq2_0": (142, 128, 34), "ptq1_0": (143, 128, 28)}


@dataclass(frozen=True)
class ModelShape:
    """Hyperparameters of a synthetic model (the vocabulary comes from the tokenizer)."""
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx_train: int
    rope_theta: float = 1e6
    rms_eps: float = 1e-6
    arch: str = "qwen3"
    wtype: str = "q1_0"
    # qwen35 only
    full_attn_interval: int = 0
    rope_dim: int = 0                     # rotated dimensions of a head (partial RoPE)
    rope_sections: tuple[int, ...] = ()   # the multi-section RoPE split (text uses one position)
    ssm_conv: int = 0                     # causal conv width
    ssm_state: int = 0                    # head size of the linear-attention keys and values
    ssm_groups: int = 0                   # key heads
    ssm_v_heads: int = 0                  # value heads
    n_vocab: int = 0                      # pad the tokenizer to this many tokens (0: as is)
    ssm_dt_rank: int = 0                  # mamba only: rank of the dt projection
    pooling_type: int = -1                # {arch}.pooling_type (1 mean, 2 cls, 3 last); -1: not written
    # Bonsai 2 (pybonsai.synth_prism)
    wtype_ffn: str = ""                   # the FFN matrices' weight type, when not wtype
    hadamard_block: int = 0               # prism.hadamard.block_size; 0: no rotation
    fold_skip: tuple[str, ...] = ()       # foldable weights left unfolded

    @property
    def block(self) -> int:
        return WEIGHT_TYPES[self.wtype][1]

    @property
    def key_dim(self) -> int:
        return self.ssm_state * self.ssm_groups

    @property
    def value_dim(self) -> int:
        return self.ssm_state * self.ssm_v_heads

    @property
    def mamba_inner(self) -> int:
        """Mamba's d_inner (the loader supports an expansion factor of 2 only)."""
        return 2 * self.n_embd

    def validate(self) -> None:
        if self.arch not in ("qwen3", "qwen35", "mamba"):
            raise ValueError(f"unknown architecture {self.arch!r}")
        for wtype in (self.wtype, self.wtype_ffn or self.wtype):
            if wtype not in WEIGHT_TYPES:
                raise ValueError(f"unknown weight type {wtype!r}; choose from {sorted(WEIGHT_TYPES)}")
        if WEIGHT_TYPES[self.wtype_ffn or self.wtype][1] != self.block:
            raise ValueError("wtype_ffn must have the block size of wtype")
        if self.hadamard_block and (self.hadamard_block & (self.hadamard_block - 1) or
                                    any(k % self.hadamard_block for k in
                                        (self.n_embd, self.n_ff, self.n_head * self.head_dim, self.value_dim))):
            raise ValueError("hadamard_block must be a power of two dividing every input width")
        if self.pooling_type not in (-1, 0, 1, 2, 3):
            raise ValueError("pooling_type must be -1 (none written), 0 none, 1 mean, 2 cls or 3 last")
        if self.arch == "mamba":
            if min(self.ssm_conv, self.ssm_state, self.ssm_dt_rank) <= 0:
                raise ValueError("mamba needs ssm_conv, ssm_state and ssm_dt_rank")
            if self.n_head or self.n_head_kv or self.n_ff:
                raise ValueError("mamba has no attention heads and no FFN (n_head, n_head_kv, n_ff 0)")
            ks = [self.n_embd, self.mamba_inner]
        elif self.n_head_kv <= 0 or self.n_head % self.n_head_kv or self.head_dim % 2:
            raise ValueError("n_head must be a multiple of n_head_kv and head_dim even")
        else:
            ks = [self.n_embd, self.n_ff, self.n_head * self.head_dim]
        if self.arch == "qwen35":
            if min(self.full_attn_interval, self.ssm_conv, self.ssm_state, self.ssm_groups, self.ssm_v_heads) <= 0:
                raise ValueError("qwen35 needs full_attn_interval, ssm_conv, ssm_state, ssm_groups, ssm_v_heads")
            if self.ssm_v_heads % self.ssm_groups:
                raise ValueError("ssm_v_heads must be a multiple of ssm_groups")
            if not 0 < self.rope_dim <= self.head_dim or self.rope_dim % 2 or \
                    sum(self.rope_sections) * 2 != self.rope_dim:
                raise ValueError("rope_dim must be even, at most head_dim, and twice the sum of rope_sections")
            ks.append(self.value_dim)
        for k in ks:
            if k % self.block:
                raise ValueError(f"every matrix row length must be a multiple of {self.block} for "
                                 f"{self.wtype.upper()} (got {k})")


_QWEN35_27B = dict(n_embd=5120, n_layer=64, n_head=24, n_head_kv=4, head_dim=256, n_ff=17408,
                   n_ctx_train=262144, rope_theta=1e7, arch="qwen35", full_attn_interval=4,
                   rope_dim=64, rope_sections=(11, 11, 10, 0), ssm_conv=4, ssm_state=128,
                   ssm_groups=16, ssm_v_heads=48, n_vocab=248320)
_TINY = dict(n_embd=256, n_layer=2, n_head=4, n_head_kv=2, head_dim=64, n_ff=512, n_ctx_train=4096)
_NO_ATTENTION = dict(n_head=0, n_head_kv=0, head_dim=0, n_ff=0)
_QWEN3 = {
    "bonsai-1.7b": dict(n_embd=2048, n_layer=28, n_head=16, n_head_kv=8, head_dim=128, n_ff=6144,
                        n_ctx_train=40960),
    "bonsai-4b": dict(n_embd=2560, n_layer=36, n_head=32, n_head_kv=8, head_dim=128, n_ff=9728,
                      n_ctx_train=40960),
    "bonsai-8b": dict(n_embd=4096, n_layer=36, n_head=32, n_head_kv=8, head_dim=128, n_ff=12288,
                      n_ctx_train=40960),
}

SHAPES: dict[str, ModelShape] = {
    "tiny": ModelShape(**_TINY),
    **{name: ModelShape(**kw) for name, kw in _QWEN3.items()},
    "ternary-tiny": ModelShape(**_TINY, wtype="q2_0"),
    **{"ternary-" + name: ModelShape(**kw, wtype="q2_0") for name, kw in _QWEN3.items()},
    # both layer kinds (3 Gated DeltaNet layers, then 1 gated attention layer), 3 value heads per key head
    "tiny-hybrid": ModelShape(n_embd=256, n_layer=4, n_head=4, n_head_kv=2, head_dim=64, n_ff=512,
                              n_ctx_train=4096, rope_theta=1e7, arch="qwen35", full_attn_interval=4,
                              rope_dim=16, rope_sections=(3, 3, 2, 0), ssm_conv=4, ssm_state=64,
                              ssm_groups=2, ssm_v_heads=6),
    "bonsai-27b": ModelShape(**_QWEN35_27B),
    "ternary-bonsai-27b": ModelShape(**_QWEN35_27B, wtype="q2_0"),
    # stand-ins for llama-cpp-python's test models mamba-130m and bge-small:
    # Mamba-1 as mamba-130m (d_conv 4, d_state 16, dt_rank ceil(n_embd / 16), eps 1e-5), 2 layers
    "tiny-mamba": ModelShape(n_embd=256, n_layer=2, **_NO_ATTENTION, n_ctx_train=4096, rms_eps=1e-5,
                             arch="mamba", ssm_conv=4, ssm_state=16, ssm_dt_rank=16),
    # the tiny Qwen3 as an embedding model: llama.cpp mean-pools by default (CLS pooling, bge's,
    # would see only the first token of a causal model)
    "tiny-embed": ModelShape(**_TINY, pooling_type=1),
}
SHAPES["ternary-tiny-hybrid"] = replace(SHAPES["tiny-hybrid"], wtype="q2_0")
# Bonsai 2 (Ternary-Bonsai-2-27B): the qwen35 27B in PQ2_0 or PTQ1_0 with the Hadamard fold of block
# 1024; the tiny one mixes both types (FFN in PTQ1_0), folds every foldable weight but one, block 128
SHAPES["tiny-bonsai2"] = replace(SHAPES["tiny-hybrid"], wtype="pq2_0", wtype_ffn="ptq1_0", hadamard_block=128,
                                 fold_skip=("blk.0.ffn_down.weight",))
SHAPES["bonsai2-27b-pq2"] = ModelShape(**_QWEN35_27B, wtype="pq2_0", hadamard_block=1024)
SHAPES["bonsai2-27b-ptq1"] = ModelShape(**_QWEN35_27B, wtype="ptq1_0", hadamard_block=1024)


def tensor_wtype(shape: ModelShape, name: str) -> str:
    """The weight type of a quantized tensor of the shape."""
    if shape.wtype_ffn and ".ffn_" in name:
        return shape.wtype_ffn
    return shape.wtype


def is_recurrent_layer(shape: ModelShape, il: int) -> bool:
    """Whether layer il is recurrent: every Mamba layer, a qwen35 Gated DeltaNet layer (the
    loader's rule without an explicit list)."""
    if shape.arch == "mamba":
        return True
    return shape.arch == "qwen35" and (il + 1) % shape.full_attn_interval != 0


# (name, numpy shape (rows, K) or (n,), quantized) for every tensor, in file order
Plan = list[tuple[str, tuple[int, ...], bool]]


def _qwen3_attention(shape: ModelShape, b: str, gated: bool) -> Plan:
    e, hd = shape.n_embd, shape.head_dim
    q, kv = shape.n_head * hd, shape.n_head_kv * hd
    return [
        (b + "attn_q.weight", (2 * q if gated else q, e), True),  # gated: query and gate per head
        (b + "attn_k.weight", (kv, e), True),
        (b + "attn_v.weight", (kv, e), True),
        (b + "attn_q_norm.weight", (hd,), False),
        (b + "attn_k_norm.weight", (hd,), False),
        (b + "attn_output.weight", (e, q), True),
    ]


def _delta_net(shape: ModelShape, b: str) -> Plan:
    e, nv = shape.n_embd, shape.ssm_v_heads
    conv_dim = 2 * shape.key_dim + shape.value_dim
    return [
        (b + "attn_qkv.weight", (conv_dim, e), True),
        (b + "attn_gate.weight", (shape.value_dim, e), True),
        (b + "ssm_conv1d.weight", (conv_dim, shape.ssm_conv), False),
        (b + "ssm_dt.bias", (nv,), False),
        (b + "ssm_a", (nv,), False),
        (b + "ssm_beta.weight", (nv, e), True),
        (b + "ssm_alpha.weight", (nv, e), True),
        (b + "ssm_norm.weight", (shape.ssm_state,), False),
        (b + "ssm_out.weight", (e, shape.value_dim), True),
    ]


def _mamba(shape: ModelShape, b: str) -> Plan:
    e, di, r = shape.n_embd, shape.mamba_inner, shape.ssm_dt_rank
    return [
        (b + "ssm_in.weight", (2 * di, e), True),                  # x and z
        (b + "ssm_conv1d.weight", (di, shape.ssm_conv), False),
        (b + "ssm_conv1d.bias", (di,), False),
        (b + "ssm_x.weight", (r + 2 * shape.ssm_state, di), True),  # dt (rank r), B, C
        (b + "ssm_dt.weight", (di, r), r % shape.block == 0),
        (b + "ssm_dt.bias", (di,), False),
        (b + "ssm_a", (di, shape.ssm_state), False),                # A = -exp(A_log) < 0
        (b + "ssm_d", (di,), False),
        (b + "ssm_out.weight", (e, di), True),
    ]


def _ffn(shape: ModelShape, b: str) -> Plan:
    e, f = shape.n_embd, shape.n_ff
    return [(b + "ffn_gate.weight", (f, e), True), (b + "ffn_up.weight", (f, e), True),
            (b + "ffn_down.weight", (e, f), True)]


def tensor_plan(shape: ModelShape, n_vocab: int) -> Plan:
    """Every tensor of the model, in file order."""
    e = shape.n_embd
    plan: Plan = [("token_embd.weight", (n_vocab, e), True)]
    for i in range(shape.n_layer):
        b = f"blk.{i}."
        plan.append((b + "attn_norm.weight", (e,), False))
        if shape.arch == "mamba":
            plan += _mamba(shape, b)
            continue
        if shape.arch == "qwen3":
            plan += _qwen3_attention(shape, b, gated=False)
            plan.append((b + "ffn_norm.weight", (e,), False))
        else:
            plan += _delta_net(shape, b) if is_recurrent_layer(shape, i) else _qwen3_attention(shape, b, gated=True)
            plan.append((b + "post_attention_norm.weight", (e,), False))
        plan += _ffn(shape, b)
    plan += [("output_norm.weight", (e,), False), ("output.weight", (n_vocab, e), True)]
    return plan


def arch_metadata(shape: ModelShape) -> list[tuple[str, Any]]:
    """(GGUFWriter method, value) calls that describe the architecture."""
    calls: list[tuple[str, Any]] = [
        ("add_context_length", shape.n_ctx_train),
        ("add_embedding_length", shape.n_embd),
        ("add_block_count", shape.n_layer),
    ]
    calls += _mamba_metadata(shape) if shape.arch == "mamba" else _transformer_metadata(shape)
    if shape.pooling_type >= 0:
        from gguf import PoolingType
        calls.append(("add_pooling_type", PoolingType(shape.pooling_type)))
    return calls


def _mamba_metadata(shape: ModelShape) -> list[tuple[str, Any]]:
    """What convert_hf_to_gguf's MambaModel writes besides the common keys."""
    return [
        ("add_feed_forward_length", 0),  # unused, but seemingly required when loading (the converter)
        ("add_head_count", 0),
        ("add_ssm_conv_kernel", shape.ssm_conv),
        ("add_ssm_inner_size", shape.mamba_inner),
        ("add_ssm_state_size", shape.ssm_state),
        ("add_ssm_time_step_rank", shape.ssm_dt_rank),
        ("add_layer_norm_rms_eps", shape.rms_eps),
        ("add_ssm_dt_b_c_rms", False),
    ]


def _transformer_metadata(shape: ModelShape) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = [
        ("add_feed_forward_length", shape.n_ff),
        ("add_head_count", shape.n_head),
        ("add_head_count_kv", shape.n_head_kv),
        ("add_key_length", shape.head_dim),
        ("add_value_length", shape.head_dim),
        ("add_rope_freq_base", shape.rope_theta),
        ("add_layer_norm_rms_eps", shape.rms_eps),
    ]
    if shape.arch == "qwen35":
        calls += [
            ("add_rope_dimension_count", shape.rope_dim),
            ("add_rope_dimension_sections", list(shape.rope_sections)),
            ("add_ssm_conv_kernel", shape.ssm_conv),
            ("add_ssm_state_size", shape.ssm_state),
            ("add_ssm_group_count", shape.ssm_groups),
            ("add_ssm_time_step_rank", shape.ssm_v_heads),
            ("add_ssm_inner_size", shape.value_dim),
            ("add_full_attention_interval", shape.full_attn_interval),
        ]
    return calls
