"""Check that a GPU backend really runs a model: `python wheels/check_offload.py --backend metal`.

Used where a real (or software) GPU device exists: the macOS release job (Metal, on the runner's
device), the Vulkan plugin's checks (Mesa's lavapipe here and in CI) and benchmarks. On the tiny
synthetic Q1_0 model (pybonsai.synth) it asserts, for Llama(n_gpu_layers=-1 or --ngl):
  1. no GPUFallbackWarning (warnings are errors here) and a device of the backend is registered;
  2. the model's weights went to that device: its free memory drops while the model is loaded
     (reported, not asserted, where the backend reports no usable figure: lavapipe, some Macs);
  3. the logits over every prompt position agree with the CPU path's: mean KL(cpu || gpu) <= --kl-max,
     yet are not bit-identical to them (identical logits would mean the CPU did the work).
Prints one JSON line with the figures; exits non-zero on any failure.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

BACKEND_NAMES = {"metal": ("metal", "mtl"), "vulkan": ("vulkan",), "cuda": ("cuda",)}


def mean_kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """Mean over positions of KL(softmax(p) || softmax(q))."""
    def logsoftmax(x):
        x = x.astype(np.float64) - x.max(axis=-1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    lp, lq = logsoftmax(p_logits), logsoftmax(q_logits)
    return float((np.exp(lp) * (lp - lq)).sum(axis=-1).mean())


def run_logits(model: str, n_gpu_layers: int, tokens: list[int]) -> tuple[np.ndarray, float]:
    from pybonsai import Llama
    # n_batch=16: below ggml's op-offload threshold (32 rows), so layers left on the CPU by a partial
    # offload really run on the CPU (a bigger batch would copy their weights to the device and run
    # them there too), and the device run is the split graph a partial offload means.
    with Llama(model, n_gpu_layers=n_gpu_layers, n_ctx=256, n_batch=16, logits_all=True) as llm:
        start = time.perf_counter()
        llm.eval(tokens)
        seconds = time.perf_counter() - start
        return llm.scores[:len(tokens)].copy(), seconds


def cpu_reference(model: str, tokens: list[int]) -> tuple[np.ndarray, float]:
    """The CPU path's logits, from a process that never loads a GPU backend: in this one, with the
    plugin loaded, n_gpu_layers=0 would still let llama.cpp offload big batches' matrix products
    to the device (op_offload), and the reference would not be the CPU's."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cpu.npy"
        subprocess.run([sys.executable, __file__, "--cpu-reference", model, json.dumps(tokens), str(out)],
                       check=True)
        seconds = json.loads(out.with_suffix(".json").read_text())
        return np.load(out), seconds


def backend_devices(backend: str) -> list[dict]:
    from pybonsai import backends
    names = BACKEND_NAMES[backend]
    return [d for d in backends.devices() if d["type"] in ("gpu", "igpu")
            and any(n in (d.get("backend", "") + d.get("name", "")).lower() for n in names)]


def check(backend: str, model: str, ngl: int, kl_max: float) -> dict:
    from pybonsai import Llama, gpu
    warnings.simplefilter("error", gpu.GPUFallbackWarning)
    rng = np.random.default_rng(0)
    gpu.load()
    devices = backend_devices(backend)
    assert devices, f"no {backend} device registered: {gpu.status().get('unavailable')}"
    free_before = devices[0]["memory_free"]
    with Llama(model, n_gpu_layers=ngl, n_ctx=256) as llm:
        vocab = llm.n_vocab()
        free_loaded = backend_devices(backend)[0]["memory_free"]
    tokens = [int(t) for t in rng.integers(10, vocab - 10, size=48)]
    cpu, cpu_s = cpu_reference(model, tokens)
    dev, dev_s = run_logits(model, ngl, tokens)
    kl = mean_kl(cpu, dev)
    out = {"backend": backend, "device": devices[0]["name"], "description": devices[0].get("description"),
           "n_gpu_layers": ngl, "positions": len(tokens), "mean_kl": kl, "kl_max": kl_max,
           "top1_agreement": float((cpu.argmax(-1) == dev.argmax(-1)).mean()),
           "bit_identical": bool(np.array_equal(cpu, dev)),
           "device_memory_used_by_model": free_before - free_loaded,
           "eval_48_tokens_s": {"cpu": round(cpu_s, 4), backend: round(dev_s, 4)}}
    assert kl <= kl_max, out
    assert not out["bit_identical"], f"{backend} logits equal the CPU's bit for bit: the CPU did the work? {out}"
    return out


def main() -> int:
    if sys.argv[1:2] == ["--cpu-reference"]:  # the child process of cpu_reference()
        model, tokens, out = sys.argv[2], json.loads(sys.argv[3]), Path(sys.argv[4])
        logits, seconds = run_logits(model, 0, tokens)
        np.save(out, logits)
        out.with_suffix(".json").write_text(json.dumps(seconds))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=sorted(BACKEND_NAMES), required=True)
    ap.add_argument("--model", help="a GGUF (default: a synthetic model of --shape, made here)")
    ap.add_argument("--shape", default="tiny", help="pybonsai.synth shape: tiny (Q1_0), ternary-tiny (Q2_0)")
    ap.add_argument("--ngl", type=int, default=-1, help="n_gpu_layers (default -1: all)")
    ap.add_argument("--kl-max", type=float, default=1e-3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(Path(tmp) / f"{args.shape}.gguf")
        if not args.model:
            subprocess.run([sys.executable, "-m", "pybonsai.synth", model, "--shape", args.shape, "--seed", "0",
                            "--force"], check=True, stdout=subprocess.DEVNULL)
        print(json.dumps(check(args.backend, model, args.ngl, args.kl_max)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
