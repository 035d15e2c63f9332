#!/usr/bin/env python3
"""Everything the CUDA plugin needs checked, in one command; on a GPU machine it runs for real.

    python benchmarks/cuda_verify.py [--backend cuda|vulkan] [--build] [--out DIR] [--models tiny,8b]

Steps (each prints "ok", "FAILED" or "skipped: <why>"; a JSON + Markdown summary goes to --out):
  1. wheels      (--build) wheels/plugin/build_and_test_cuda.sh: toolkit, plugin wheel, repaired, installed
                 with the base wheel in a compiler-free venv; on a GPU machine it checks offload.
  2. emulated    our CUDA kernels on the CPU (csrc/kernels/cuda/emu): every path vs the reference.
  3. harness     the same harness built with nvcc for this GPU and run on it (needs a GPU).
  4. logits      CUDA (upstream's Q1_0 kernels, then ours: PYBONSAI_CUDA_Q1=ours) vs the CPU on the
                 tiny and the 8B-shaped synthetic models: mean KL(CPU || CUDA), top-1 agreement.
  5. speed       pp512 / tg128 tokens/s on the GPU for both paths (llama-bench's method), and
                 upstream's llama-bench built with CUDA from the same pin for the same model.
  6. vram        device memory used while the 8B-shaped model is loaded (nvidia-smi).
The acceptance rule for making our kernel the default (q1_0_mmv.cu): mean KL <= 1e-3 vs the CPU and
tg128 faster than upstream's path.

--backend vulkan checks the Vulkan plugin instead, on any Vulkan device (Mesa's lavapipe included:
GGML_VK_VISIBLE_DEVICES=0 is set when unset): 1. wheels (--build) wheels/plugin/build_and_test_vulkan.sh;
4. logits: wheels/check_offload.py --backend vulkan on each model, all layers and about half (mean KL
vs the CPU path, eval time next to the CPU's; lavapipe is a correctness device, not a speed one).
The CUDA-only steps are skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "csrc" / "kernels" / "cuda"
SKIP_NO_GPU = "skipped: no GPU"


def has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    res = subprocess.run([smi, "-L"], capture_output=True, text=True)
    return res.returncode == 0 and "GPU" in res.stdout


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("   $", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def step_wheels(args, gpu: bool) -> dict:
    if not args.build:
        return {"status": "skipped: --build not given"}
    script = "build_and_test_vulkan.sh" if args.backend == "vulkan" else "build_and_test_cuda.sh"
    res = run(["bash", str(ROOT / "wheels" / "plugin" / script), str(args.out / "wheels")],
              env={**os.environ, "CUDA_MAJOR": args.cuda_major})
    (args.out / "wheels.log").write_text(res.stdout + res.stderr)
    return {"status": "ok" if res.returncode == 0 else "FAILED", "log": str(args.out / "wheels.log"),
            "tail": (res.stdout + res.stderr)[-1500:]}


def step_emulated(args, gpu: bool) -> dict:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        return {"status": "skipped: no C++ compiler"}
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "q1_emulated"
        res = run([cxx, "-std=c++17", "-O2", "-x", "c++", f"-I{KERNELS / 'emu'}", f"-I{KERNELS}",
                   str(KERNELS / "test_q1_0_mmv.cu"), "-o", str(exe)])
        if res.returncode != 0:
            return {"status": "FAILED", "tail": res.stderr[-1500:]}
        t0 = time.time()
        res = run([str(exe), "--emulated"], env={**os.environ, "PYBONSAI_EMU_SM_COUNT": "1"})
    summary = [ln for ln in res.stdout.splitlines() if "cases" in ln or "ALL OK" in ln or "FAIL" in ln][-5:]
    return {"status": "ok" if res.returncode == 0 else "FAILED", "seconds": round(time.time() - t0, 1),
            "summary": summary}


def step_harness(args, gpu: bool) -> dict:
    if not gpu:
        return {"status": SKIP_NO_GPU}
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    cc = run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"]).stdout.split()[0].replace(".", "")
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "q1_native"
        res = run([nvcc, "-std=c++17", "-O2", f"-arch=sm_{cc}", f"-I{KERNELS}", str(KERNELS / "test_q1_0_mmv.cu"),
                   "-o", str(exe)])
        if res.returncode != 0:
            return {"status": "FAILED", "tail": res.stderr[-1500:]}
        res = run([str(exe)])
    return {"status": "ok" if res.returncode == 0 else "FAILED", "sm": cc, "tail": res.stdout[-800:]}


def synth_model(args, shape: str) -> Path:
    path = args.models_dir / f"cuda-verify-{shape}.gguf"
    if not path.is_file():
        subprocess.run([sys.executable, "-m", "pybonsai.synth", str(path), "--shape", shape, "--seed", "0"],
                       check=True, cwd=ROOT)
    return path


# -- a worker process per (model, device, kernel path): PYBONSAI_CUDA_Q1 is read once per process --
def worker(model: str, ngl: int, out: str, measure_speed: bool) -> None:
    from pybonsai import Llama

    rng = np.random.default_rng(0)
    with Llama(model, n_gpu_layers=ngl, n_ctx=1024, n_batch=512, logits_all=True) as llm:
        tokens = [int(t) for t in rng.integers(10, llm.n_vocab() - 10, size=64)]
        llm.reset()
        llm.eval(tokens)
        np.save(out, llm.scores[:len(tokens)].astype(np.float32))
        result: dict = {}
        if measure_speed:
            for name, n in (("pp512", 512), ("tg128", 128)):
                times = []
                for _ in range(4):  # 1 warm-up + 3
                    llm.reset()
                    seq = [int(t) for t in rng.integers(10, llm.n_vocab() - 10, size=n)]
                    t0 = time.perf_counter()
                    if name.startswith("pp"):
                        llm.eval(seq)
                    else:
                        for t in seq:
                            llm.eval([t])
                    times.append(n / (time.perf_counter() - t0))
                result[name] = round(float(np.median(times[1:])), 2)
        Path(out + ".json").write_text(json.dumps(result))


def run_worker(model: Path, ngl: int, path: str, out: Path, speed: bool) -> tuple[np.ndarray, dict]:
    env = {**os.environ, "PYBONSAI_CUDA_Q1": path}
    dest = str(out / f"logits-{model.stem}-{ngl}-{path}.npy")
    res = subprocess.run([sys.executable, __file__, "--worker", str(model), str(ngl), dest, str(int(speed))],
                         env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return np.load(dest), json.loads(Path(dest + ".json").read_text())


def kl_and_top1(p_logits: np.ndarray, q_logits: np.ndarray) -> tuple[float, float]:
    def logsoftmax(x):
        x = x.astype(np.float64) - x.max(axis=-1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    lp, lq = logsoftmax(p_logits), logsoftmax(q_logits)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    top1 = (p_logits.argmax(-1) == q_logits.argmax(-1)).mean()
    return float(kl.mean()), float(top1)


def step_logits_and_speed(args, gpu: bool) -> dict:
    if not gpu:
        return {"status": SKIP_NO_GPU}
    out: dict = {"status": "ok", "models": {}}
    for shape in args.models:
        model = synth_model(args, shape)
        cpu, cpu_speed = run_worker(model, 0, "upstream", args.out, shape != "tiny")
        entry = {"cpu": cpu_speed}
        for path in ("upstream", "ours"):
            logits, speed = run_worker(model, -1, path, args.out, shape != "tiny")
            kl, top1 = kl_and_top1(cpu, logits)
            entry[path] = {"mean_kl": kl, "top1": top1, **speed}
        entry["ours_acceptable"] = bool(entry["ours"]["mean_kl"] <= 1e-3 and (
            "tg128" not in entry["ours"] or entry["ours"]["tg128"] > entry["upstream"]["tg128"]))
        out["models"][shape] = entry
    return out


def step_llama_bench(args, gpu: bool) -> dict:
    if not gpu:
        return {"status": SKIP_NO_GPU}
    tree = args.out / "llama.cpp-upstream"
    build = tree / "build-cuda"
    if not (build / "bin" / "llama-bench").is_file():
        for cmd in ([sys.executable, str(ROOT / "vendor" / "fetch_llama_cpp.py"), "--dest", str(tree), "--no-patches"],
                    ["cmake", "-S", str(tree), "-B", str(build), "-DGGML_CUDA=ON", "-DLLAMA_BUILD_TOOLS=ON",
                     "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_CUDA_ARCHITECTURES=native"],
                    ["cmake", "--build", str(build), "--target", "llama-bench", "-j"]):
            res = run(cmd)
            if res.returncode != 0:
                return {"status": "FAILED", "tail": res.stderr[-1500:]}
    model = synth_model(args, args.models[-1])
    res = run([str(build / "bin" / "llama-bench"), "-m", str(model), "-ngl", "99", "-p", "512", "-n", "128",
               "-o", "json"])
    if res.returncode != 0:
        return {"status": "FAILED", "tail": res.stderr[-1500:]}
    rows = json.loads(res.stdout)
    return {"status": "ok", "model": model.name,
            "tokens_per_s": {f"{'pp' if r['n_prompt'] else 'tg'}{r['n_prompt'] or r['n_gen']}": r["avg_ts"] for r in rows}}


def step_vram(args, gpu: bool) -> dict:
    if not gpu:
        return {"status": SKIP_NO_GPU}
    code = ("import subprocess, sys; from pybonsai import Llama; llm = Llama(sys.argv[1], n_gpu_layers=-1); "
            "print(subprocess.run(['nvidia-smi', '--query-gpu=memory.used', '--format=csv,noheader,nounits'], "
            "capture_output=True, text=True).stdout.split()[0])")
    base = int(run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]).stdout.split()[0])
    out = {"status": "ok", "idle_mib": base}
    for path in ("upstream", "ours"):
        res = subprocess.run([sys.executable, "-c", code, str(synth_model(args, args.models[-1]))], capture_output=True,
                             text=True, env={**os.environ, "PYBONSAI_CUDA_Q1": path})
        out[f"{path}_mib"] = int(res.stdout.split()[-1]) if res.returncode == 0 else res.stderr[-300:]
    return out


def step_vulkan_logits(args, gpu: bool) -> dict:
    """wheels/check_offload.py on each model, with every layer and with about half offloaded."""
    env = {**os.environ, "GGML_VK_VISIBLE_DEVICES": os.environ.get("GGML_VK_VISIBLE_DEVICES", "0")}
    out: dict = {"status": "ok", "models": {}}
    for shape in args.models:
        model = synth_model(args, shape)
        n_layer = {"tiny": 2, "ternary-tiny": 2}.get(shape, 28)
        for ngl in (-1, n_layer // 2 + 1):  # llama.cpp offloads the last N of n_layer blocks + output
            res = run([sys.executable, str(ROOT / "wheels" / "check_offload.py"), "--backend", "vulkan",
                       "--model", str(model), "--ngl", str(ngl)], env=env)
            if res.returncode != 0:
                out["status"] = "FAILED"
                out["models"][f"{shape}@{ngl}"] = (res.stdout + res.stderr)[-600:]
            else:
                out["models"][f"{shape}@{ngl}"] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def markdown(summary: dict) -> str:
    lines = ["| step | result |", "|---|---|"]
    for name, res in summary["steps"].items():
        detail = {k: v for k, v in res.items() if k not in ("status", "tail", "log")}
        lines.append(f"| {name} | {res['status']}{' ' + json.dumps(detail) if detail else ''} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1")
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("cuda", "vulkan"), default="cuda")
    ap.add_argument("--build", action="store_true", help="build and install-test the wheels first (long)")
    ap.add_argument("--cuda-major", default="13")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "pybonsai-cuda-verify")
    ap.add_argument("--models", default="tiny,bonsai-8b", help="synthetic model shapes (pybonsai.synth)")
    ap.add_argument("--models-dir", type=Path, default=None)
    args = ap.parse_args()
    args.models = args.models.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    args.models_dir = args.models_dir or args.out
    gpu = has_gpu() if args.backend == "cuda" else True  # vulkan: check_offload says if there is no device
    print(f"== GPU: {'yes' if gpu else 'no (nvidia-smi -L lists none)'}; results in {args.out}")
    summary: dict = {"gpu": gpu, "steps": {}}
    steps = (("wheels", step_wheels), ("emulated kernels", step_emulated), ("native harness", step_harness),
             ("logits + speed", step_logits_and_speed), ("llama-bench (upstream)", step_llama_bench),
             ("vram", step_vram))
    if args.backend == "vulkan":
        steps = (("wheels", step_wheels), ("logits + speed", step_vulkan_logits))
    for name, fn in steps:
        print(f"== {name}", flush=True)
        try:
            res = fn(args, gpu)
        except Exception as exc:  # one broken step must not hide the others
            res = {"status": "FAILED", "error": f"{type(exc).__name__}: {exc}"}
        summary["steps"][name] = res
        print(f"   {res['status']}" + "".join(f"\n   {ln}" for ln in res.get("summary", [])), flush=True)
    (args.out / "cuda_verify.json").write_text(json.dumps(summary, indent=1))
    (args.out / "cuda_verify.md").write_text(markdown(summary))
    print(f"== wrote {args.out / 'cuda_verify.json'} and cuda_verify.md")
    return 1 if any(r["status"] == "FAILED" for r in summary["steps"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
