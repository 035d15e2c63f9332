"""Shared by the benchmark scripts: the synthetic model files and the unpatched upstream
llama-bench (built once by build_upstream.sh)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def model_file(shape: str) -> Path:
    """build/models/synth-<shape>.gguf, written once (seed 0)."""
    from pybonsai.synth import write_model

    path = ROOT / "build" / "models" / f"synth-{shape}.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_model(path, shape=shape, seed=0)
    return path


def upstream_llama_bench() -> str:
    return subprocess.run([str(ROOT / "benchmarks" / "build_upstream.sh")], check=True, capture_output=True,
                          text=True).stdout.strip()


def run_llama_bench(bench: str, model: Path, n_prompt: int, n_gen: int, threads: int) -> dict[str, float]:
    """One repetition of upstream llama-bench; {"pp64": t/s, "tg32": t/s}."""
    out = subprocess.run([bench, "-m", str(model), "-p", str(n_prompt), "-n", str(n_gen), "-t", str(threads),
                          "-r", "1", "-o", "json"], check=True, capture_output=True, text=True).stdout
    rates = {}
    for row in json.loads(out):
        name = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        rates[name] = float(row["avg_ts"])
    return rates
