"""Fuzz seed documents for the rest of the Bonsai family: the qwen35 hybrid (Bonsai 27B's
architecture) and ternary Q2_0 weights, built from pybonsai.synth_shapes' tensor plans and
metadata (the same names, shapes and keys as the synthetic models) with gguf_doc's ~260-token
byte-level vocabulary, so that one load costs milliseconds.

    hybrid   shape "tiny-hybrid": 3 Gated DeltaNet layers + 1 gated attention layer, Q1_0
    ternary  shape "ternary-tiny": Qwen3, Q2_0
"""
from __future__ import annotations

import numpy as np

from gguf_doc import ARRAY, F32, GGML_F32, GGML_Q1_0, I32, KV, STRING, U32, Document, Tensor, _q1_rows, base_document
from pybonsai import q2_0
from pybonsai.synth_shapes import SHAPES, arch_metadata, tensor_plan

GGML_Q2_0 = q2_0.GGML_TYPE_Q2_0
MODELS = {"hybrid": "tiny-hybrid", "ternary": "ternary-tiny"}

# GGUFWriter method (synth_shapes.arch_metadata) -> (key under the architecture, value type)
_KEYS = {
    "add_context_length": ("context_length", U32), "add_embedding_length": ("embedding_length", U32),
    "add_block_count": ("block_count", U32), "add_feed_forward_length": ("feed_forward_length", U32),
    "add_head_count": ("attention.head_count", U32), "add_head_count_kv": ("attention.head_count_kv", U32),
    "add_key_length": ("attention.key_length", U32), "add_value_length": ("attention.value_length", U32),
    "add_rope_freq_base": ("rope.freq_base", F32),
    "add_layer_norm_rms_eps": ("attention.layer_norm_rms_epsilon", F32),
    "add_rope_dimension_count": ("rope.dimension_count", U32),
    "add_rope_dimension_sections": ("rope.dimension_sections", ARRAY),
    "add_ssm_conv_kernel": ("ssm.conv_kernel", U32), "add_ssm_state_size": ("ssm.state_size", U32),
    "add_ssm_group_count": ("ssm.group_count", U32), "add_ssm_time_step_rank": ("ssm.time_step_rank", U32),
    "add_ssm_inner_size": ("ssm.inner_size", U32),
    "add_full_attention_interval": ("full_attention_interval", U32),
}


def _q2_rows(rng: np.random.Generator, rows: int, k: int) -> bytes:
    scales = (rng.uniform(0.75, 1.25, size=(rows, k // q2_0.BLOCK)) * np.sqrt(1.5 / k)).astype("<f2")
    return q2_0.pack_q2_0(rng.integers(0, 3, size=(rows, k), dtype=np.uint8), scales).tobytes()


def family_document(model: str, seed: int = 0) -> Document:
    """A valid, loadable model ("hybrid" or "ternary") with the byte-level vocabulary."""
    shape = SHAPES[MODELS[model]]
    rng = np.random.default_rng(seed)
    vocab_doc = base_document(seed)  # its tokenizer and general.* keys
    arch = shape.arch
    kvs = [KV("general.architecture", STRING, arch), KV("general.name", STRING, f"fuzz {model}"),
           KV("general.alignment", U32, 32)]
    for method, value in arch_metadata(shape):
        key, vtype = _KEYS[method]
        if vtype == ARRAY:
            kvs.append(KV(f"{arch}.{key}", ARRAY, [int(v) for v in value], I32))
        else:
            kvs.append(KV(f"{arch}.{key}", vtype, float(value) if vtype == F32 else int(value)))
    kvs += [kv for kv in vocab_doc.kvs if kv.key.startswith("tokenizer.")]
    n_vocab = len(next(kv.value for kv in kvs if kv.key == "tokenizer.ggml.tokens"))
    wtype, rows_of = (GGML_Q2_0, _q2_rows) if shape.wtype == "q2_0" else (GGML_Q1_0, _q1_rows)
    tensors = []
    for name, shp, quantized in tensor_plan(shape, n_vocab):
        if quantized:
            rows, k = shp
            tensors.append(Tensor(name, [k, rows], wtype, rows_of(rng, rows, k)))
        else:
            lo, hi = (-1.0, -0.1) if name.endswith("ssm_a") else (0.8, 1.2)
            data = rng.uniform(lo, hi, int(np.prod(shp))).astype("<f4").tobytes()
            tensors.append(Tensor(name, [int(d) for d in reversed(shp)], GGML_F32, data))
    return Document(kvs, tensors)
