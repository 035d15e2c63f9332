#!/usr/bin/env python3
"""Decode speed of `Llama(...).create_completion("Hello", max_tokens=N)` next to unpatched upstream
`llama-bench -p 0 -n N` on the same synthetic file and thread count, alternating runs.

    python benchmarks/generate_vs_upstream.py --shape bonsai-8b --threads 2 --reps 3
"""
from __future__ import annotations

import argparse
import statistics
import time

from common import model_file, run_llama_bench, upstream_llama_bench
from pybonsai import Llama


def pybonsai_tg(llm: Llama, n: int) -> float:
    start = time.perf_counter()
    result = llm.create_completion("Hello", max_tokens=n, temperature=0)
    elapsed = time.perf_counter() - start
    assert result["usage"]["completion_tokens"] == n, result["usage"]
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="bonsai-8b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    bench = upstream_llama_bench()
    model = model_file(args.shape)
    llm = Llama(model, n_ctx=512, n_threads=args.threads)
    llm.create_completion("Hello", max_tokens=2, temperature=0)  # warm-up, as llama-bench does
    ours, theirs = [], []
    for _ in range(args.reps):
        theirs.append(run_llama_bench(bench, model, 0, args.n, args.threads)[f"tg{args.n}"])
        ours.append(pybonsai_tg(llm, args.n))
    fmt = lambda xs: f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.2f} t/s"
    print(f"model {model.name} ({model.stat().st_size / 1e9:.3f} GB), threads {args.threads}, n {args.n}, reps {args.reps}")
    print(f"upstream llama-bench tg{args.n}:            {fmt(theirs)}")
    print(f"pybonsai create_completion(max_tokens={args.n}): {fmt(ours)}  (includes the 1-token prompt)")
    print(f"ratio pybonsai / upstream: {statistics.mean(ours) / statistics.mean(theirs):.3f}")


if __name__ == "__main__":
    main()
