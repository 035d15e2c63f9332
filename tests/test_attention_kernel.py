"""The decode attention kernel (csrc/kernels/cpu/q1_0_attn.cpp) against its double-precision
reference, built on its own and called through ctypes: GQA ratios that take every head-group
size, masks with -inf cells (and a row with nothing visible), padded strides, split work."""
from __future__ import annotations

import ctypes
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

KERNELS = Path(__file__).resolve().parent.parent / "csrc" / "kernels" / "cpu"


class Args(ctypes.Structure):
    _fields_ = [("D", ctypes.c_int64), ("n_kv", ctypes.c_int64), ("n_q", ctypes.c_int64),
                ("n_head", ctypes.c_int64), ("n_head_kv", ctypes.c_int64), ("scale", ctypes.c_float),
                ("q", ctypes.c_void_p), ("q_tok", ctypes.c_size_t), ("q_head", ctypes.c_size_t),
                ("k", ctypes.c_void_p), ("k_row", ctypes.c_size_t), ("k_head", ctypes.c_size_t),
                ("v", ctypes.c_void_p), ("v_row", ctypes.c_size_t), ("v_head", ctypes.c_size_t),
                ("mask", ctypes.c_void_p), ("mask_row", ctypes.c_size_t),
                ("dst", ctypes.c_void_p), ("dst_tok", ctypes.c_size_t), ("dst_head", ctypes.c_size_t),
                ("order", ctypes.c_void_p)]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("needs an x86-64 C++ compiler")
    out = tmp_path_factory.mktemp("attn") / "libq1k_attn.so"
    subprocess.run([cxx, "-std=c++17", "-O2", "-Wall", "-shared", "-fPIC", str(KERNELS / "q1_0_attn.cpp"),
                    str(KERNELS / "q1_0_attn_avx512.cpp"), "-o", str(out)], check=True)
    lib = ctypes.CDLL(str(out))
    for name in ("q1k_attn_decode", "q1k_attn_decode_avx2", "q1k_attn_decode_avx512", "q1k_attn_reference"):
        getattr(lib, name).restype = None
    for name in ("q1k_attn_decode", "q1k_attn_decode_avx2", "q1k_attn_decode_avx512"):
        getattr(lib, name).argtypes = [ctypes.POINTER(Args), ctypes.c_int64, ctypes.c_int64]
    lib.q1k_attn_reference.argtypes = [ctypes.POINTER(Args)]
    if not lib.q1k_attn_available():
        pytest.skip("no AVX2/FMA/F16C on this CPU")
    return lib


def _case(rng, D, n_head, n_head_kv, n_kv, n_q, pad, masked):
    q = rng.standard_normal((n_q, n_head, D + pad)).astype(np.float32)
    k = (rng.standard_normal((n_head_kv, n_kv, D + pad)) * 0.5).astype(np.float16)
    v = rng.standard_normal((n_head_kv, n_kv, D + pad)).astype(np.float16)
    mask = np.zeros((n_q, n_kv + pad), np.float16)
    mask[:, :n_kv][rng.random((n_q, n_kv)) < masked] = -np.inf
    mask[:, :n_kv][rng.random((n_q, n_kv)) < 0.1] = -1.5  # a finite bias is added, not skipped
    if n_q > 1:
        mask[1, :] = -np.inf  # a token that sees nothing: output 0, as upstream
    return q, k, v, mask


def _args(q, k, v, mask, out, D, n_head, n_head_kv, n_kv, n_q, scale):
    return Args(D=D, n_kv=n_kv, n_q=n_q, n_head=n_head, n_head_kv=n_head_kv, scale=scale,
                q=q.ctypes.data, q_tok=q.strides[0], q_head=q.strides[1],
                k=k.ctypes.data, k_row=k.strides[1], k_head=k.strides[0],
                v=v.ctypes.data, v_row=v.strides[1], v_head=v.strides[0],
                mask=mask.ctypes.data if mask is not None else None, mask_row=mask.strides[0] if mask is not None else 0,
                dst=out.ctypes.data, dst_tok=out.strides[0], dst_head=out.strides[1])


@pytest.mark.parametrize("path", ["auto", "avx2", "avx512"])
@pytest.mark.parametrize("D, n_head, n_head_kv", [(128, 32, 8), (64, 4, 2), (128, 8, 8), (64, 12, 4), (32, 24, 2),
                                                   (128, 15, 1), (24, 6, 3)])
@pytest.mark.parametrize("n_kv, n_q, masked", [(1, 1, 0.0), (9, 1, 0.3), (300, 3, 0.5), (1100, 1, 0.05)])
def test_matches_the_reference(lib, path, D, n_head, n_head_kv, n_kv, n_q, masked):
    if path == "avx512" and (not lib.q1k_attn_avx512_usable() or D % 16):
        pytest.skip("the AVX-512 instance needs AVX-512 and a head size that is a multiple of 16")
    decode = {"auto": lib.q1k_attn_decode, "avx2": lib.q1k_attn_decode_avx2,
              "avx512": lib.q1k_attn_decode_avx512}[path]
    rng = np.random.default_rng(D * 1000 + n_head * 10 + n_kv)
    pad = 8
    q, k, v, mask = _case(rng, D, n_head, n_head_kv, n_kv, n_q, pad, masked)
    scale = 1.0 / np.sqrt(D)
    for use_mask in (True, False):
        m = mask if use_mask else None
        want = np.full((n_q, n_head, D), np.nan, np.float32)
        got = np.full((n_q, n_head, D), np.nan, np.float32)
        lib.q1k_attn_reference(ctypes.byref(_args(q, k, v, m, want, D, n_head, n_head_kv, n_kv, n_q, scale)))
        args = _args(q, k, v, m, got, D, n_head, n_head_kv, n_kv, n_q, scale)
        items = n_q * n_head_kv
        decode(ctypes.byref(args), 0, items // 2)  # two threads' shares
        decode(ctypes.byref(args), items // 2, items)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
        if use_mask and n_q > 1:
            assert not got[1].any()


@pytest.mark.parametrize("path", ["avx2", "avx512"])
@pytest.mark.parametrize("D, n_head, n_head_kv", [(128, 32, 8), (64, 12, 4), (24, 6, 3)])
def test_cells_followed_in_the_given_order_wherever_they_lie(lib, path, D, n_head, n_head_kv):
    """With `order`, a token's result is the same bit for bit as with its cells packed in that
    order at the front of the cache: what llama.cpp's KV cache relies on (vendor/patches/0012)
    when a sequence's cells lie out of position order among other sequences' cells."""
    if path == "avx512" and (not lib.q1k_attn_avx512_usable() or D % 16):
        pytest.skip("the AVX-512 instance needs AVX-512 and a head size that is a multiple of 16")
    decode = {"avx2": lib.q1k_attn_decode_avx2, "avx512": lib.q1k_attn_decode_avx512}[path]
    rng = np.random.default_rng(D + n_head)
    n_live, n_kv, n_q = 203, 640, 2
    q, k_live, v_live, _ = _case(rng, D, n_head, n_head_kv, n_live, n_q, 0, 0.0)
    cells = rng.permutation(n_kv)[:n_live]  # where the sequence's cells lie, in position order
    k = (rng.standard_normal((n_head_kv, n_kv, D)) * 0.5).astype(np.float16)  # other sequences' cells
    v = rng.standard_normal((n_head_kv, n_kv, D)).astype(np.float16)
    k[:, cells], v[:, cells] = k_live, v_live
    mask = np.full((n_q, n_kv), -np.inf, np.float16)
    mask[0, cells] = 0
    mask[1, cells[:150]] = 0  # an earlier token sees a prefix of them
    packed_mask = np.full((n_q, n_live), -np.inf, np.float16)
    packed_mask[0], packed_mask[1, :150] = 0, 0
    others = np.setdiff1d(np.arange(n_kv), cells)
    order = np.concatenate([cells, rng.permutation(others)]).astype(np.int32)
    scale = 1.0 / np.sqrt(D)

    want = np.zeros((n_q, n_head, D), np.float32)
    decode(ctypes.byref(_args(q, k_live, v_live, packed_mask, want, D, n_head, n_head_kv, n_live, n_q, scale)),
           0, n_q * n_head_kv)
    got = np.zeros((n_q, n_head, D), np.float32)
    args = _args(q, k, v, mask, got, D, n_head, n_head_kv, n_kv, n_q, scale)
    args.order = order.ctypes.data
    decode(ctypes.byref(args), 0, n_q * n_head_kv)
    np.testing.assert_array_equal(got, want)
    scattered = np.zeros((n_q, n_head, D), np.float32)  # the same cells in cell order: other sums
    decode(ctypes.byref(_args(q, k, v, mask, scattered, D, n_head, n_head_kv, n_kv, n_q, scale)),
           0, n_q * n_head_kv)
    np.testing.assert_allclose(scattered, want, rtol=1e-4, atol=2e-5)
    assert not np.array_equal(scattered, want)


def test_reference_is_softmax_attention(lib):
    """The reference itself, against NumPy (float64) on a small case."""
    rng = np.random.default_rng(5)
    D, n_head, n_head_kv, n_kv, n_q = 16, 4, 2, 11, 2
    q, k, v, mask = _case(rng, D, n_head, n_head_kv, n_kv, n_q, 0, 0.3)
    out = np.zeros((n_q, n_head, D), np.float32)
    lib.q1k_attn_reference(ctypes.byref(_args(q, k, v, mask, out, D, n_head, n_head_kv, n_kv, n_q, 0.25)))
    for i in range(n_q):
        for h in range(n_head):
            g = h // (n_head // n_head_kv)
            s = k[g].astype(np.float64) @ q[i, h].astype(np.float64) * 0.25 + mask[i].astype(np.float64)
            if np.isinf(s).all():
                np.testing.assert_array_equal(out[i, h], 0)
                continue
            p = np.exp(s - s.max())
            np.testing.assert_allclose(out[i, h], p @ v[g].astype(np.float64) / p.sum(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_tokens", [40, 600])
def test_model_logits_do_not_depend_on_batching(tiny_model_path, n_tokens):
    """With the default (flash attention, this kernel) a token's logits are the same bit for bit
    whether it was evaluated in one batch, one token at a time or in two pieces (600 tokens: past
    the 512 cells where upstream's decode splits the KV cache among threads)."""
    from pybonsai import Llama

    tokens = [int(t) for t in np.random.default_rng(n_tokens).integers(0, 151_000, n_tokens)]
    with Llama(tiny_model_path, n_ctx=1024, n_threads=2, logits_all=True) as llm:
        llm.eval(tokens)
        batch = llm.scores[:n_tokens].copy()
        llm.reset()
        for t in tokens:
            llm.eval([t])
        single = llm.scores[:n_tokens].copy()
        llm.reset()
        llm.eval(tokens[:n_tokens // 3])
        llm.eval(tokens[n_tokens // 3:])
        split = llm.scores[:n_tokens].copy()
    assert np.isfinite(batch).all()
    np.testing.assert_array_equal(single, batch)
    np.testing.assert_array_equal(split, batch)
