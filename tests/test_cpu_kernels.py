"""Our Q1_0 CPU kernels (csrc/kernels/cpu): unit check of every path, and model-level agreement
with upstream's kernels (Q2_0 at model level: test_q2_0_kernels.py).

- test_kernel_paths: builds csrc/kernels/cpu/test_q1_0_kernels.c against our kernel sources only
  (no ggml) with the system compiler and runs it: each path the CPU supports against a direct
  computation from the unpacked Q1_0 blocks, and from unpacked Q2_0 blocks (q2_0_kernels.h), at
  awkward sizes.
- test_logits_match_upstream: the tiny synthetic model's logits (a prefill batch: GEMM, then
  single tokens: GEMV) in subprocesses with PYBONSAI_Q1_KERNEL=upstream (our buffer type off)
  and with each of our paths; mean KL <= 1e-3 and top-token agreement >= 98%.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "csrc" / "kernels" / "cpu"


def _compilers() -> tuple[str, str] | None:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    return (cc, cxx) if cc and cxx else None


@pytest.fixture(scope="module")
def kernel_test_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tools = _compilers()
    if tools is None:
        pytest.skip("no C/C++ compiler on this machine")
    cc, cxx = tools
    out = tmp_path_factory.mktemp("q1k")
    objs = []
    for src in sorted([*KERNELS.glob("q1_0_*.c*"), *KERNELS.glob("q2_0_*.c*")]):
        if src.name in ("q1_0_buffer.cpp", "q1_0_attn_glue.cpp"):  # the ggml glue: needs ggml headers
            continue
        obj = out / (src.name + ".o")
        compiler = cxx if src.suffix == ".cpp" else cc
        std = ["-std=c++17"] if src.suffix == ".cpp" else ["-std=c11"]
        subprocess.run([compiler, *std, "-O2", "-Wall", "-c", str(src), "-o", str(obj)], check=True)
        objs.append(str(obj))
    exe = out / "test_q1_0_kernels"
    subprocess.run([cxx, "-O2", "-x", "c", str(KERNELS / "test_q1_0_kernels.c"), "-x", "none", *objs,
                    "-lm", "-o", str(exe)], check=True)
    return exe


def test_kernel_paths(kernel_test_binary: Path) -> None:
    res = subprocess.run([str(kernel_test_binary)], capture_output=True, text=True, timeout=600)
    print(res.stdout)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "ALL OK" in res.stdout
    for weights in ("q1_0", "q2_0"):  # both weight types ran (Q2_0: q2_0_kernels.h), on scalar at least
        assert f"{weights} scalar" in res.stdout
    assert "ternary128 (PQ2_0, PTQ1_0 -> Q2_0): ok" in res.stdout  # Bonsai 2's types onto Q2_0 (q2_0_prism.c)


def test_forced_path_falls_back(kernel_test_binary: Path) -> None:
    """A bogus PYBONSAI_Q1_KERNEL (PYBONSAI_Q2_KERNEL) is reported on stderr and the best path is used
    (for Q2_0: the Q1_0 path)."""
    env = dict(os.environ, PYBONSAI_Q1_KERNEL="bogus", PYBONSAI_Q2_KERNEL="bogus2")
    res = subprocess.run([str(kernel_test_binary), "none"], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0
    assert "PYBONSAI_Q1_KERNEL=bogus" in res.stderr
    assert "PYBONSAI_Q2_KERNEL=bogus2" in res.stderr
    selected = next(line for line in res.stdout.splitlines() if line.startswith("selected: "))
    q1, q2 = selected[len("selected: "):].split(", q2_0: ")
    assert q1 == q2


# -- model level ------------------------------------------------------------------------

_RUNNER = textwrap.dedent("""
    import ctypes, json, sys
    import numpy as np
    from pybonsai import Llama

    def kernel_info():
        for line in open("/proc/self/maps"):
            path = line.split()[-1]
            if "ggml-cpu" in path and path.endswith(".so"):
                try:
                    lib = ctypes.CDLL(path)
                    name, lut = lib.pybonsai_q1_0_kernel_name, lib.pybonsai_q1_0_lut_max_tokens
                except (OSError, AttributeError):
                    continue
                name.restype = ctypes.c_char_p
                q2 = getattr(lib, "pybonsai_q2_0_kernel_name", None)
                if q2 is not None:
                    q2.restype = ctypes.c_char_p
                return name().decode(), lut(), q2().decode() if q2 is not None else None
        return None, 0, None

    model, out, n_threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    lo, hi = (100, 20000) if len(sys.argv) < 5 else (0, int(sys.argv[4]))  # token ids drawn from [lo, hi)
    llm = Llama(model, n_ctx=128, n_batch=64, logits_all=True, n_threads=n_threads)
    rng = np.random.default_rng(1)
    toks = [int(t) for t in rng.integers(lo, hi, size=43)]
    llm.eval(toks[:32])            # one batch: the GEMM path
    for t in toks[32:40]:          # single tokens: the GEMV path
        llm.eval([t])
    llm.eval(toks[40:43])          # 3 tokens: the table path's multi-token tiles (2 + 1)
    np.save(out, llm.scores[:len(toks)])
    name, lut, q2 = kernel_info()
    print(json.dumps({"kernel": name, "lut_max_tokens": lut, "q2_kernel": q2}))
""")


def _run_logits(model: Path, out: Path, kernel: str | None, n_threads: int, token_limit: int | None = None,
                **extra_env: str) -> dict:
    env = dict(os.environ)
    env.pop("PYBONSAI_Q1_KERNEL", None)
    env.pop("PYBONSAI_Q1_LUT_MAX", None)
    env.pop("PYBONSAI_Q2_KERNEL", None)
    if kernel:
        env["PYBONSAI_Q1_KERNEL"] = kernel
    env.update(extra_env)
    args = [str(token_limit)] if token_limit else []
    res = subprocess.run([sys.executable, "-c", _RUNNER, str(model), str(out), str(n_threads), *args],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


# Every forced path at 1 and 2 threads, except scalar at 1 thread (slow; 2 threads covers it).
@pytest.mark.parametrize("kernel, n_threads", [(None, 1), (None, 2), ("avx2", 1), ("avx2", 2), ("scalar", 2)])
def test_logits_match_upstream(tiny_model_path: Path, tmp_path: Path, kernel: str | None, n_threads: int) -> None:
    ref = tmp_path / "upstream.npy"
    ours = tmp_path / "ours.npy"
    name_ref = _run_logits(tiny_model_path, ref, "upstream", n_threads)["kernel"]
    name = _run_logits(tiny_model_path, ours, kernel, n_threads)["kernel"]
    if name is None:
        pytest.fail("pybonsai_q1_0_kernel_name not found in the loaded ggml-cpu library: "
                    "our kernels are not compiled in (vendor/patches + PYBONSAI_CPU_KERNELS_DIR)")
    assert name_ref == "upstream"
    if kernel is not None and name != kernel:
        pytest.skip(f"this CPU cannot run the {kernel} path (ran {name})")
    assert name != "upstream"
    a, b = _log_softmax(np.load(ref)), _log_softmax(np.load(ours))
    kl = (np.exp(a) * (a - b)).sum(axis=-1)
    agree = (a.argmax(-1) == b.argmax(-1)).mean()
    print(f"{name}: mean KL {kl.mean():.2e}, max KL {kl.max():.2e}, top-1 agreement {agree:.3f}")
    assert kl.mean() <= 1e-3
    assert agree >= 0.98


def _cpu_has_vbmi() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return " avx512vbmi " in f.read().replace("\n", " ")
    except OSError:
        return False


@pytest.mark.parametrize("kernel, n_threads", [(None, 1), (None, 2), ("avx2", 1), ("avx2", 2)])
def test_table_path_matches_multiply_path(tiny_model_path: Path, tmp_path: Path, kernel: str | None,
                                          n_threads: int) -> None:
    """A 32-token batch and decode steps (1-3 tokens) on the table path give the multiply path's logits
    bit for bit."""
    lut, mul = tmp_path / "lut.npy", tmp_path / "mul.npy"
    info = _run_logits(tiny_model_path, lut, kernel, n_threads, PYBONSAI_Q1_LUT_MAX="64")
    info_mul = _run_logits(tiny_model_path, mul, kernel, n_threads, PYBONSAI_Q1_LUT_MAX="0")
    assert info_mul["lut_max_tokens"] == 0
    if kernel is not None and info["kernel"] != kernel:
        pytest.skip(f"this CPU cannot run the {kernel} path (ran {info['kernel']})")
    if info["kernel"] == "avx512" and not _cpu_has_vbmi():
        pytest.skip("the AVX-512 table path needs VBMI")
    assert info["kernel"] in ("avx512", "avx2")
    assert info["lut_max_tokens"] >= 3
    np.testing.assert_array_equal(np.load(lut), np.load(mul))


@pytest.mark.parametrize("n_threads", [1, 2])
def test_sliced_table_path_matches_multiply_path(mid_model_path: Path, tmp_path: Path, n_threads: int) -> None:
    """On the mid model (K = 1024 and 3072) the AVX-512 table path runs K in slices (16 KiB of tables
    per tile: 16 blocks for one token, 2 for an 8-token tile), keeping partial sums in the output
    between slices; its logits still equal the multiply path's bit for bit."""
    lut, mul = tmp_path / "lut.npy", tmp_path / "mul.npy"
    info = _run_logits(mid_model_path, lut, None, n_threads, 250, PYBONSAI_Q1_LUT_MAX="64")
    _run_logits(mid_model_path, mul, None, n_threads, 250, PYBONSAI_Q1_LUT_MAX="0")
    if info["kernel"] != "avx512" or not _cpu_has_vbmi():
        pytest.skip(f"no AVX-512 table path here (kernel {info['kernel']})")
    np.testing.assert_array_equal(np.load(lut), np.load(mul))


def _cpu_is_amd_zen5_or_later() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        return False
    info = {k.strip(): v.strip() for k, v in info.items()}
    return info.get("vendor_id") == "AuthenticAMD" and int(info.get("cpu family", "0")) >= 0x1A


def test_table_path_default_follows_the_cpu(tiny_model_path: Path, tmp_path: Path) -> None:
    """Without PYBONSAI_Q1_LUT_MAX, the AVX2 table path covers up to 256 tokens and the AVX-512 one
    up to 8, or 4 on AMD Zen 5 and later (its multiply path measured faster there from 5 tokens)."""
    for kernel in (None, "avx2"):
        info = _run_logits(tiny_model_path, tmp_path / "x.npy", kernel, 1)
        if info["kernel"] == "avx512" and not _cpu_has_vbmi():
            continue  # no AVX-512 table path on this CPU
        if info["kernel"] not in ("avx512", "avx2"):
            continue
        if info["kernel"] == "avx2":
            expected = 256
        else:
            expected = 4 if _cpu_is_amd_zen5_or_later() else 8
        assert info["lut_max_tokens"] == expected, info


def test_lut_max_env_is_checked(tiny_model_path: Path, tmp_path: Path) -> None:
    """A malformed PYBONSAI_Q1_LUT_MAX is reported on stderr and the default is used."""
    env = dict(os.environ, PYBONSAI_Q1_LUT_MAX="lots")
    res = subprocess.run([sys.executable, "-c", _RUNNER, str(tiny_model_path), str(tmp_path / "x.npy"), "1"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "PYBONSAI_Q1_LUT_MAX=lots" in res.stderr
