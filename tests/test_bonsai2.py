"""Bonsai 2: PrismML's ternary types PQ2_0 (142) and PTQ1_0 (143) and the `prism.hadamard` fold
(vendor/patches/0010, csrc/llama/prism_fold.cpp, csrc/kernels/cpu/q2_0_prism.c), on "tiny-bonsai2":
the tiny qwen35 hybrid (3 Gated DeltaNet layers, 1 gated attention layer) with PQ2_0 weights, PTQ1_0
FFN weights, every foldable weight but blk.0.ffn_down folded (block 128, explicit signs for widths
256 / 384 / 512, ssm_out regrouped), token_embd stored as latent rows.

The reference is the float64 NumPy forward pass of the hybrid (hybrid_reference) on the *primal*
weights: synth.read_weights un-folds every listed weight row by row (s * H(w_stored), with an
explicit Hadamard matrix) and un-rotates the embedding table, so it never applies a transform to an
activation; pybonsai applies H(s * P(x)) to the activations in the graph. Tolerance: REL_TOL = 8%
relative L2 error per position, as for the other tiny hybrids (test_hybrid_reference: the Q8_0
rounding of every matmul input, ~33 matmuls per logit). Measured: max 2.89%, median 1.65% on
pybonsai's kernels and on the scalar fallback (PYBONSAI_Q2_KERNEL=upstream), which differ from each
other by a mean KL of 5.2e-6. Without the fold the error is 106-130% at every position, without the
value-head regrouping of ssm_out 52-110%: test_tolerance_rejects_a_missing_fold.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import openai
import pytest

import hybrid_reference as ref
from pybonsai import Llama, prism_types, synth, synth_prism
from pybonsai._core import LlamaError
from server_process import ServerProcess

REL_TOL = 0.08
N_TOKENS = 40
ROOT = Path(__file__).resolve().parents[1]


def _tokens() -> list[int]:
    return np.random.default_rng(1234).integers(0, 151643, size=N_TOKENS).tolist()


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


_RUNNER = """
import sys, numpy as np
from pybonsai import Llama
toks = [int(t) for t in sys.argv[3].split(",")]
with Llama(model_path=sys.argv[1], n_ctx=64, n_batch=64, logits_all=True, n_threads=1, verbose=False) as llm:
    llm.eval(toks)
    np.save(sys.argv[2], llm.scores[:len(toks)].astype(np.float64))
"""


def _logits(path: Path, out: Path, **env: str) -> np.ndarray:
    """Every position's logits from a fresh process (so that PYBONSAI_* switches take effect)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PYBONSAI_Q")} | env
    res = subprocess.run([sys.executable, "-c", _RUNNER, str(path), str(out), ",".join(map(str, _tokens()))],
                         capture_output=True, text=True, env=full, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    logits = np.load(out)
    assert np.all(np.isfinite(logits))
    return logits


@pytest.fixture(scope="module")
def reference(tiny_bonsai2_weights) -> np.ndarray:
    return ref.forward(tiny_bonsai2_weights, _tokens())


@pytest.fixture(scope="module")
def ours(tiny_bonsai2_model_path, tmp_path_factory) -> np.ndarray:
    return _logits(tiny_bonsai2_model_path, tmp_path_factory.mktemp("b2") / "ours.npy")


def test_file_declares_both_types_and_the_fold(tiny_bonsai2_model_path):
    from pybonsai.gguf_file import scan_gguf

    summary = scan_gguf(tiny_bonsai2_model_path)
    types = {t.name: t.type for t in summary.tensors}
    assert types["blk.0.attn_qkv.weight"] == 142 and types["blk.0.ffn_up.weight"] == 143
    assert summary.metadata["prism.hadamard.block_size"] == 128
    assert summary.metadata["prism.hadamard.gdn_v_grouped"] is True


def test_logits_match_the_reference(ours, reference):
    rel = _rel(ours, reference)
    assert rel.max() < REL_TOL, f"max {rel.max():.4f} median {np.median(rel):.4f}"


def test_scalar_fallback_matches(tiny_bonsai2_model_path, tmp_path, ours, reference):
    """PYBONSAI_Q2_KERNEL=upstream: the patch's scalar PQ2_0/PTQ1_0 x Q8_0 dot products instead of
    our repacked Q2_0 kernels; both near the reference and near each other (mean KL <= 1e-3)."""
    up = _logits(tiny_bonsai2_model_path, tmp_path / "up.npy", PYBONSAI_Q2_KERNEL="upstream")
    assert not np.array_equal(up, ours)  # really another path
    assert _rel(up, reference).max() < REL_TOL
    p = np.exp(up - up.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    logq = ours - ours.max(1, keepdims=True)
    logq -= np.log(np.exp(logq).sum(1, keepdims=True))
    kl = float((p * (np.log(p) - logq)).sum(1).mean())
    assert kl <= 1e-3, kl


def test_tolerance_rejects_a_missing_fold(tiny_bonsai2_model_path, ours):
    """The 8% tolerance tells a missing transform apart: the reference on the stored weights taken
    as primal (no fold at all), and with the fold but ssm_out's input left in tiled head order."""
    real_unfold = synth_prism.unfold

    def without_regrouping(weights, fields, hp):
        real_unfold(weights, {**fields, "prism.hadamard.gdn_v_grouped": False}, hp)

    for variant in (lambda *a: None, without_regrouping):
        with mock.patch.object(synth_prism, "unfold", variant):
            wrong = ref.forward(synth.read_weights(tiny_bonsai2_model_path), _tokens())
        assert _rel(ours, wrong).min() > 3 * REL_TOL


def test_unfolded_weight_is_read_unrotated(tiny_bonsai2_weights, tiny_bonsai2_model_path):
    """blk.0.ffn_down is not in weight_names: read_weights leaves it as stored (the model must too,
    or the logits test would fail)."""
    from pybonsai.gguf_file import scan_gguf

    t = next(t for t in scan_gguf(tiny_bonsai2_model_path).tensors if t.name == "blk.0.ffn_down.weight")
    data = Path(tiny_bonsai2_model_path).read_bytes()
    start = scan_gguf(tiny_bonsai2_model_path).data_offset + t.offset
    raw = np.frombuffer(data[start:start + t.n_bytes], np.uint8)
    stored = prism_types.dequantize_ptq1_0(raw, raw.size // 28 * 128).reshape(tiny_bonsai2_weights[t.name].shape)
    np.testing.assert_array_equal(tiny_bonsai2_weights[t.name], stored)


def _ggml_to_float(ttype: int, raw: np.ndarray, n: int) -> np.ndarray:
    from pybonsai import _core

    lib = ctypes.CDLL(str(Path(_core.__file__).parent / "libggml-base.so"))  # beside the extension

    class Traits(ctypes.Structure):
        _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                    ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                    ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                    ("from_float_ref", ctypes.c_void_p)]

    lib.ggml_get_type_traits.restype = ctypes.POINTER(Traits)
    traits = lib.ggml_get_type_traits(ttype).contents
    assert traits.blck_size == 128
    to_float = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(traits.to_float)
    src = np.ascontiguousarray(raw, dtype=np.uint8)
    out = np.empty(n, dtype=np.float32)
    to_float(src.ctypes.data, out.ctypes.data, n)
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="loads libggml-base.so by name")
def test_ggml_dequantize_is_bit_identical_to_numpy():
    """ggml's to_float of both types (patch 0010) against prism_types on blocks that hold every byte
    value in every byte position (PTQ1_0: the qs and qh bytes alike) and random scales."""
    rng = np.random.default_rng(7)
    nb = 256
    pq2 = np.empty((nb, 34), np.uint8)
    pq2[:, 2:] = (np.arange(nb)[:, None] + 37 * np.arange(32)[None, :]) % 256
    pq2[:, :2] = rng.uniform(-2, 2, nb).astype("<f2").view(np.uint8).reshape(nb, 2)
    ptq = np.empty((nb, 28), np.uint8)
    ptq[:, :26] = (np.arange(nb)[:, None] + 53 * np.arange(26)[None, :]) % 256
    ptq[:, 26:] = rng.uniform(-2, 2, nb).astype("<f2").view(np.uint8).reshape(nb, 2)
    n = nb * 128
    np.testing.assert_array_equal(_ggml_to_float(142, pq2, n), prism_types.dequantize_pq2_0(pq2, n))
    np.testing.assert_array_equal(_ggml_to_float(143, ptq, n), prism_types.dequantize_ptq1_0(ptq, n))


def test_generates_and_serves(tiny_bonsai2_model_path, tmp_path):
    """Llama, the Engine and `pybonsai serve` (the real openai client) give the same greedy texts."""
    from pybonsai import Engine

    prompts = ["Story number 1: once upon a time", "Story number 2: the river"]
    with Llama(str(tiny_bonsai2_model_path), n_ctx=512, n_threads=2, flash_attn=True, verbose=False) as llm:
        want = [llm.create_completion(p, max_tokens=6, temperature=0)["choices"][0]["text"] for p in prompts]
    assert all(want)
    with Engine(str(tiny_bonsai2_model_path), n_parallel=2, n_ctx=1024, n_threads=2) as e:
        got = [e.create_completion(p, max_tokens=6, temperature=0)["choices"][0]["text"] for p in prompts]
    assert got == want
    srv = ServerProcess(tiny_bonsai2_model_path, "--parallel", "2", "--n-ctx", "1024", log=tmp_path / "server.log")
    try:
        with openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0, timeout=120) as client:
            served = [client.completions.create(model="tiny", prompt=p, max_tokens=6, temperature=0).choices[0].text
                      for p in prompts]
    finally:
        assert srv.terminate() == 0, srv.log()
    assert served == want


# --- malformed rotation metadata: a LlamaError naming the problem, never a garbage model ----------

_PRISM_FIELDS = synth_prism.prism_fields  # the well-formed keys, which each case edits


def _edit(field: str, value):
    """prism_fields with one key replaced (value, or a function of the old value) or left out (None)."""
    def fields(shape, plan, seed):
        out = []
        for key, v, vtype, sub in _PRISM_FIELDS(shape, plan, seed):
            if key == "prism.hadamard." + field:
                if value is None:
                    continue
                v = value(v) if callable(value) else value
            out.append((key, v, vtype, sub))
        return out
    return fields


MALFORMED = {
    "version": (_edit("version", 2), "version 2 is not supported"),
    "transform": (_edit("transform", b"dct"), "transform 'dct' is unknown"),
    "sign mode": (_edit("sign_mode", b"random"), "sign_mode 'random' is unknown"),
    "block not a power of two": (_edit("block_size", 96), "block_size 96 is not a power of two"),
    "block does not divide": (_edit("block_size", 512), "is not a positive multiple of block_size 512"),
    "missing list": (_edit("weight_names", None), "prism.hadamard.weight_names is missing"),
    "unknown tensor": (_edit("weight_names", lambda v: v + [b"blk.9.ffn_up.weight"]),
                       "'blk.9.ffn_up.weight', which the model does not have"),
    "not foldable": (_edit("weight_names", lambda v: v + [b"blk.0.attn_norm.weight"]),
                     "not a weight that can be folded"),
    "duplicate": (_edit("weight_names", lambda v: v + v[:1]), "twice"),
    "sign value": (_edit("sign_values", lambda v: [0] + v[1:]), "sign_values[0] is 0"),
    "short signs": (_edit("sign_values", lambda v: v[:-1]), "fewer than the widths add up to"),
    "missing width": (_edit("sign_widths", lambda v: v[:-1]), "more than the widths add up to"),
    "inverse table": (_edit("inverse_weight_names", [b"output.weight"]), "only token_embd.weight"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_rotation_metadata_fails_the_load(case, tmp_path, llama_cpp_dir):
    edit, message = MALFORMED[case]
    path = tmp_path / "bad.gguf"
    with mock.patch.object(synth_prism, "prism_fields", edit):
        synth.write_model(path, "tiny-bonsai2", vocab_gguf=llama_cpp_dir / "models/ggml-vocab-qwen35.gguf",
                          chat_template="{{ messages }}")
    with pytest.raises(LlamaError) as err:
        Llama(str(path), n_ctx=64, verbose=False)
    assert "prism.hadamard" in str(err.value) and message in str(err.value), str(err.value)[-600:]


def test_info_names_the_types_and_the_rotation(capsys, tiny_bonsai2_model_path):
    from pybonsai.cli import main

    assert main(["info", str(tiny_bonsai2_model_path)]) == 0
    out = capsys.readouterr().out
    assert "rotation:         Hadamard fold of Bonsai 2 (prism.hadamard v1), block 128; 25 weights folded; " \
           "explicit signs for widths 256, 384, 512; token_embd holds rotated rows" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  P")}
    assert rows["PQ2_0"][1] == "2.125" and rows["PTQ1_0"][1] == "1.750"
