"""Our Q2_0 CPU kernels (csrc/kernels/cpu/q2_0_kernels.h: a Q2_0 matrix runs on the Q1_0 kernels as
a virtual Q1_0 matrix of twice the columns) at model level, against upstream's (scalar) Q2_0 kernel.
Their unit check (every path against the unpacked Q2_0 blocks) is in test_q1_0_kernels.c, run by
test_cpu_kernels.py::test_kernel_paths.

- test_q2_logits_match_upstream: a small Qwen3-shaped model whose matrices are Q2_0 (K = 128 x odd,
  row counts not multiples of 16), logits with PYBONSAI_Q1_KERNEL=upstream (upstream's Q2_0 path)
  and with each of our paths: mean KL <= 1e-3, top-token agreement >= 98%.
- PYBONSAI_Q2_KERNEL=upstream leaves Q2_0 (only) to upstream: logits equal the upstream run's.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pybonsai import system_info

from gguf_doc import FUZZ_SHAPE, GGML_Q1_0, base_document, serialize
from test_cpu_kernels import _log_softmax, _run_logits

GGML_Q2_0, Q2_0_BLOCK, Q2_0_BYTES = 42, 64, 18
# K = 384 and 640 (128 x 3, 128 x 5); 261-token vocabulary and 128-row K/V: rows not all multiples of 16
Q2_SHAPE = replace(FUZZ_SHAPE, n_embd=384, n_layer=2, n_head=6, n_head_kv=2, head_dim=64, n_ff=640)
VOCAB_LIMIT = 250  # token ids drawn below this (the byte-level vocabulary)


def q2_0_rows(rng: np.random.Generator, rows: int, k: int) -> bytes:
    """Random Q2_0 rows: codes 0..3 (values -d, 0, d, 2d) with probabilities .3/.3/.3/.1 (mean square
    1, so d = 1/sqrt(k) keeps outputs O(1)), d jittered per block."""
    nb = k // Q2_0_BLOCK
    out = np.empty((rows, nb, Q2_0_BYTES), dtype=np.uint8)
    scales = (rng.uniform(0.75, 1.25, size=(rows, nb)) / np.sqrt(k)).astype("<f2")
    out[:, :, :2] = scales.view(np.uint8).reshape(rows, nb, 2)
    codes = rng.choice(4, p=[0.3, 0.3, 0.3, 0.1], size=(rows, nb, Q2_0_BLOCK // 4, 4)).astype(np.uint8)
    out[:, :, 2:] = codes[..., 0] | codes[..., 1] << 2 | codes[..., 2] << 4 | codes[..., 3] << 6
    return out.tobytes()


def write_q2_0_model(path: Path, seed: int = 3) -> Path:
    """base_document()'s Qwen3 model at Q2_SHAPE with every Q1_0 matrix but token_embd made Q2_0."""
    doc = base_document(seed=seed, shape=Q2_SHAPE)
    rng = np.random.default_rng(seed + 1000)
    for t in doc.tensors:
        if t.ttype == GGML_Q1_0 and t.name != "token_embd.weight":
            k, rows = t.dims
            t.ttype, t.data = GGML_Q2_0, q2_0_rows(rng, rows, k)
    path.write_bytes(serialize(doc)[0])
    return path


@pytest.fixture(scope="module")
def q2_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_q2_0_model(tmp_path_factory.mktemp("models") / "small-q2_0.gguf")


def _kl_agree(ref: Path, ours: Path) -> tuple[np.ndarray, float]:
    a, b = _log_softmax(np.load(ref)), _log_softmax(np.load(ours))
    return (np.exp(a) * (a - b)).sum(axis=-1), float((a.argmax(-1) == b.argmax(-1)).mean())


@pytest.mark.parametrize("kernel, n_threads", [(None, 1), (None, 2), ("avx2", 1), ("avx2", 2), ("scalar", 2)])
def test_q2_logits_match_upstream(q2_model_path: Path, tmp_path: Path, kernel: str | None, n_threads: int) -> None:
    ref, ours = tmp_path / "upstream.npy", tmp_path / "ours.npy"
    info_ref = _run_logits(q2_model_path, ref, "upstream", n_threads, VOCAB_LIMIT)
    info = _run_logits(q2_model_path, ours, kernel, n_threads, VOCAB_LIMIT)
    if info["q2_kernel"] is None:
        pytest.fail("pybonsai_q2_0_kernel_name not found in the loaded ggml-cpu library: our Q2_0 kernels are "
                    "not compiled in (vendor/patches/0001 glob, PYBONSAI_CPU_KERNELS_DIR)")
    assert info_ref["q2_kernel"] == "upstream"
    if kernel is not None and info["kernel"] != kernel:
        pytest.skip(f"this CPU cannot run the {kernel} path (ran {info['kernel']})")
    assert info["q2_kernel"] == info["kernel"] != "upstream"
    kl, agree = _kl_agree(ref, ours)
    print(f"Q2_0 {info['q2_kernel']}: mean KL {kl.mean():.2e}, max KL {kl.max():.2e}, top-1 agreement {agree:.3f}")
    assert kl.mean() <= 1e-3
    assert agree >= 0.98


def test_q2_switch_leaves_q2_to_upstream(q2_model_path: Path, tmp_path: Path) -> None:
    """PYBONSAI_Q2_KERNEL=upstream: Q1_0 stays ours, every Q2_0 MUL_MAT is upstream's, so the logits
    are the all-upstream run's bit for bit (this model's only Q1_0 tensor is token_embd, a GET_ROWS)."""
    ref, q2off = tmp_path / "upstream.npy", tmp_path / "q2off.npy"
    _run_logits(q2_model_path, ref, "upstream", 1, VOCAB_LIMIT)
    info = _run_logits(q2_model_path, q2off, None, 1, VOCAB_LIMIT, PYBONSAI_Q2_KERNEL="upstream")
    assert info["q2_kernel"] == "upstream"
    if info["kernel"] == "upstream":
        pytest.skip("no pybonsai CPU kernel on this CPU")
    np.testing.assert_array_equal(np.load(ref), np.load(q2off))


@pytest.mark.parametrize("n_threads", [1, 2])
def test_q2_table_path_matches_multiply_path(q2_model_path: Path, tmp_path: Path, n_threads: int) -> None:
    """Q2_0 on the table path (decode steps of 1-3 tokens, and the 32-token batch) gives the multiply
    path's logits bit for bit."""
    lut, mul = tmp_path / "lut.npy", tmp_path / "mul.npy"
    info = _run_logits(q2_model_path, lut, None, n_threads, VOCAB_LIMIT, PYBONSAI_Q1_LUT_MAX="64")
    info_mul = _run_logits(q2_model_path, mul, None, n_threads, VOCAB_LIMIT, PYBONSAI_Q1_LUT_MAX="0")
    assert info_mul["lut_max_tokens"] == 0
    if info["lut_max_tokens"] == 0:
        pytest.skip(f"no table path for the {info['kernel']} kernel on this CPU")
    assert info["q2_kernel"] == info["kernel"]
    np.testing.assert_array_equal(np.load(lut), np.load(mul))


def test_q2_op_profile_has_its_own_labels(q2_model_path: Path) -> None:
    """PYBONSAI_OP_PROFILE=1 reports Q2_0 MUL_MATs (vendor/patches/0005) and their activation
    quantization (q1_0_buffer.cpp) under names of their own, per thread, once per node."""
    from test_op_profile import _run

    if system_info()["q2_0_kernel"] == "upstream":
        pytest.skip("no pybonsai CPU kernel on this CPU (or PYBONSAI_Q2_KERNEL=upstream): Q2_0 is upstream's")
    decode_calls = 3
    _, sums = _run(q2_model_path, decode_calls, PYBONSAI_OP_PROFILE="1")
    assert not any(name.startswith("MUL_MAT(Q1_0)") for name, _ in sums)  # no Q1_0 matrix in this model
    for t in (0, 1):
        mm, quant = sums[("MUL_MAT(Q2_0)", t)], sums[("MUL_MAT(Q2_0): activation quantization", t)]
        assert mm["count"] == (1 + decode_calls) * (Q2_SHAPE.n_layer * 7 + 1)  # 7 matrices a layer + LM head
        assert quant["count"] == mm["count"]
        assert 0 < quant["compute_ns"] < mm["compute_ns"]
