"""Our CUDA kernels (csrc/kernels/cuda/q1_0_mmv.cu) executed on the CPU, no GPU needed.

The kernel source and its harness (test_q1_0_mmv.cu) are compiled unchanged as host C++ against
csrc/kernels/cuda/emu/, a small implementation of the CUDA execution model (blocks of concurrently
running threads as fibers, warps of 32 with __shfl_*_sync, __syncthreads, __shared__, __dp4a, ...).
The harness checks every path (repack, fp32 and int8+dp4a mat-vec, each rows-per-warp choice,
1..8 columns, odd row counts, K 128..12288, strided activations) against the scalar Q1_0 reference,
plus the routing table. Deliberately broken copies of the kernel must fail it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "csrc" / "kernels" / "cuda"
CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
ENV = {**os.environ, "PYBONSAI_EMU_SM_COUNT": "1"}  # 1 SM: the heuristic picks R = 1, 2 and 4 at small sizes

pytestmark = pytest.mark.skipif(CXX is None, reason="no host C++ compiler on PATH (e.g. testing an installed wheel)")


def _build(src_dir: Path, out: Path) -> Path:
    exe = out / "q1_emulated"
    cmd = [CXX, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unknown-pragmas", "-x", "c++",
           f"-I{KERNELS / 'emu'}", f"-I{src_dir}", str(src_dir / "test_q1_0_mmv.cu"), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}{res.stderr}"[-6000:]
    assert "warning" not in res.stderr.lower(), res.stderr[-4000:]
    return exe


def _run(exe: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600, env=env or ENV)


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(KERNELS, tmp_path_factory.mktemp("q1emu"))


def test_every_kernel_path_matches_the_reference(emulated: Path) -> None:
    res = _run(emulated, "--emulated")
    print(res.stdout[-3000:])
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert "ALL OK" in res.stdout and "ok   repack cache" in res.stdout
    m = re.search(r"(\d+) cases, (\d+) mat-vec runs checked", res.stdout)
    assert m and int(m.group(1)) >= 26 and int(m.group(2)) >= 160, res.stdout[-2000:]
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("ok   rows=")]
    assert {int(k) for k in re.findall(r"k=(\d+)", "\n".join(lines))} >= {128, 384, 1152, 4224, 12288}
    assert {int(n) for n in re.findall(r"ncols=(\d+)", "\n".join(lines))} == set(range(1, 9))
    # the heuristic's own picks cover every rows-per-warp value
    assert {int(r) for r in re.findall(r"auto\((\d)\)", res.stdout)} == {1, 2, 4}
    # strided columns (xs > k) with and without 16-byte alignment of the column stride
    strides = [(int(k), int(xs)) for k, xs in re.findall(r"k=(\d+) ncols=\d+ xs=(\d+)", res.stdout)]
    assert any(xs > k and xs % 4 == 0 for k, xs in strides) and any(xs % 4 for k, xs in strides)


def test_the_emulator_itself(tmp_path: Path) -> None:
    """Barriers, shared memory, every shuffle flavour, ballot, byte_perm, dp4a and half conversions
    of cuda_emu.h against their definitions (emu/test_emu.cu); a shuffle naming an exited lane aborts."""
    exe = tmp_path / "test_emu"
    cmd = [CXX, "-std=c++17", "-O2", "-Wall", "-Wextra", "-x", "c++", f"-I{KERNELS / 'emu'}",
           str(KERNELS / "emu" / "test_emu.cu"), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "warning" not in res.stderr.lower(), res.stderr[-4000:]
    res = _run(exe)
    assert res.returncode == 0 and "EMU OK" in res.stdout, res.stdout + res.stderr
    res = _run(exe, "exited-lane")
    assert res.returncode != 0 and "exited without reaching it" in res.stderr, res.stdout + res.stderr


def test_routing_table(emulated: Path) -> None:
    res = _run(emulated, "--route")
    assert res.returncode == 0 and "ROUTING OK" in res.stdout, res.stdout + res.stderr
    assert "route 9 columns (prefill: upstream MMQ)" in res.stdout


@pytest.mark.parametrize("value", [None, "", "upstream", "ours", "q8", "f32", "bogus"])
def test_kernel_mode_matches_what_python_reports(emulated: Path, value: str | None) -> None:
    from pybonsai import gpu

    env = {k: v for k, v in ENV.items() if k != "PYBONSAI_CUDA_Q1"}
    if value is not None:
        env["PYBONSAI_CUDA_Q1"] = value
    res = _run(emulated, "--mode", env=env)
    assert res.returncode == 0, res.stderr
    mode = int(re.search(r"mode=(-?\d+)", res.stdout).group(1))
    expected = {"upstream": 0, "ours": 1, "ours-f32": 2}[gpu.q1_0_cuda_path(env)["active"]]
    assert mode == expected
    assert (mode == 0) == (value in (None, "", "upstream", "bogus"))  # upstream unless opted in
    assert ("unknown PYBONSAI_CUDA_Q1" in res.stderr) == (value == "bogus")


# Planted bugs: each must make the emulated harness fail (exit != 0), with the expected complaint.
PLANTED = {
    "repack_halfword_order": (  # wrong bit order: the two 16-bit halves of each sign word swapped
        "w.x = (uint32_t) b[1] | ((uint32_t) b[2] << 16);",
        "w.x = (uint32_t) b[2] | ((uint32_t) b[1] << 16);",
        r"FAIL repack"),
    "q8_bit_order": (  # wrong bit order inside a byte lane of the dp4a masks
        "m[r][j] = (w >> j) & 0x01010101u;",
        "m[r][j] = (w >> (7 - j)) & 0x01010101u;",
        r"FAIL q8 R=\d"),
    "reduction_missing_half": (  # the reduction never adds lanes 16..31
        "for (int off = kWarp / 2; off > 0; off >>= 1) {\n        v += __shfl_xor_sync",
        "for (int off = kWarp / 4; off > 0; off >>= 1) {\n        v += __shfl_xor_sync",
        r"FAIL (f32|q8) R=\d"),
    "reduction_mask_without_lane_31": (  # a lane left out of the shuffle's mask
        "v += __shfl_xor_sync(0xffffffffu, v, off);",
        "v += __shfl_xor_sync(0x7fffffffu, v, off);",
        r"cuda_emu: __shfl_xor_sync: the calling lane 31 is not in the mask"),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_bug_is_caught(tmp_path: Path, name: str) -> None:
    old, new, complaint = PLANTED[name]
    for f in ("q1_0_mmv.cu", "q1_0_cuda.h", "test_q1_0_mmv.cu"):
        shutil.copy(KERNELS / f, tmp_path / f)
    src = (tmp_path / "q1_0_mmv.cu").read_text()
    assert src.count(old) == 1, f"the kernel changed: update the planted bug {name}"
    (tmp_path / "q1_0_mmv.cu").write_text(src.replace(old, new))
    res = _run(_build(tmp_path, tmp_path), "--emulated")
    out = res.stdout + res.stderr
    complaints = [ln for ln in out.splitlines() if "FAIL" in ln or "cuda_emu" in ln]
    print(f"--- planted {name}: exit {res.returncode}\n" + "\n".join(complaints[:6]))
    assert res.returncode != 0, out[-3000:]
    assert re.search(complaint, out), out[-3000:]
