#!/usr/bin/env python3
"""Our Q1_0 CPU kernels vs unpatched upstream, one run, same synthetic file and threads.

Alternates upstream `llama-bench -p P -n N` with `pybonsai bench -p P -n N` (one repetition each,
`--reps` rounds) for every kernel path asked for (PYBONSAI_Q1_KERNEL), then prints means and
the ratios ours / upstream.

    python benchmarks/cpu_vs_upstream.py --shape bonsai-8b --threads 2 --reps 3 --paths auto,avx2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from common import model_file, run_llama_bench, upstream_llama_bench


def run_pybonsai_bench(model, n_prompt, n_gen, threads, path) -> tuple[dict[str, float], str]:
    env = dict(os.environ)
    if path != "auto":
        env["PYBONSAI_Q1_KERNEL"] = path
    out = subprocess.run([sys.executable, "-m", "pybonsai.bench", str(model), "-p", str(n_prompt), "-n", str(n_gen),
                          "-t", str(threads), "-r", "1", "--json"], check=True, capture_output=True, text=True,
                         env=env).stdout
    rows = json.loads(out)
    return {r["test"]: r["tokens_per_s"] for r in rows}, rows[0]["q1_0_kernel"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="bonsai-8b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-p", type=int, default=64)
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--paths", default="auto,avx2", help="kernel paths for pybonsai, comma-separated")
    args = ap.parse_args()
    bench = upstream_llama_bench()
    model = model_file(args.shape)
    paths = args.paths.split(",")
    theirs: dict[str, list[float]] = {}
    ours: dict[str, dict[str, list[float]]] = {p: {} for p in paths}
    ran: dict[str, str] = {}
    for _ in range(args.reps):
        for test, rate in run_llama_bench(bench, model, args.p, args.n, args.threads).items():
            theirs.setdefault(test, []).append(rate)
        for path in paths:
            rates, ran[path] = run_pybonsai_bench(model, args.p, args.n, args.threads, path)
            for test, rate in rates.items():
                ours[path].setdefault(test, []).append(rate)
    print(f"model {model.name} ({model.stat().st_size / 1e9:.3f} GB), threads {args.threads}, "
          f"{args.reps} alternating rounds")
    fmt = lambda xs: f"{statistics.mean(xs):8.2f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:5.2f}"
    for test in theirs:
        print(f"{test:>6}  upstream {fmt(theirs[test])} t/s")
        for path in paths:
            xs = ours[path][test]
            print(f"{test:>6}  pybonsai[{ran[path]}] {fmt(xs)} t/s   ratio {statistics.mean(xs) / statistics.mean(theirs[test]):.2f}x")


if __name__ == "__main__":
    main()
