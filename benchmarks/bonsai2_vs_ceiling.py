#!/usr/bin/env python3
"""Bonsai 2 (PQ2_0 / PTQ1_0 with the Hadamard fold) against the bandwidth ceiling and our own Q2_0.

Upstream llama.cpp cannot load these files, so the comparison is with the ceiling and with our Q2_0
on the same architecture (`--baseline`, the ternary 27B of Bonsai 1). For each thread count and
`--reps` rounds, each model in turn: a bandwidth meter reading (benchmarks/bandwidth.c), then
`pybonsai bench -p 64 -n 32`. Medians: tg32 and pp64 tokens/s, their ratio to the baseline's, and
tg32 against the ceiling of the reading taken right before it (bytes a decode token moves, counted
from the file: decode_vs_bandwidth.bytes_per_token; PTQ1_0's 1.75 bits per weight, although our
kernels read it repacked at 2.25).

    python benchmarks/bonsai2_vs_ceiling.py --shapes bonsai2-27b-pq2,bonsai2-27b-ptq1 \
        --baseline ternary-bonsai-27b --threads 2,1 --reps 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from common import model_file
from decode_vs_bandwidth import bandwidth_tool, bytes_per_token
from family_vs_upstream import ours


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="bonsai2-27b-pq2,bonsai2-27b-ptq1")
    ap.add_argument("--baseline", default="ternary-bonsai-27b", help="our Q2_0 on the same architecture ('' for none)")
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--bw-mib", type=int, default=2048)
    args = ap.parse_args()
    bw_exe = bandwidth_tool()
    shapes = ([args.baseline] if args.baseline else []) + args.shapes.split(",")
    models = {s: model_file(s) for s in shapes}
    per_token = {s: bytes_per_token(m, depth=64 + 16.5)[0] for s, m in models.items()}
    print("| model | threads | tg32 | tg32 vs baseline | of ceiling | pp64 | pp64 vs baseline | meter GB/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for threads in [int(t) for t in args.threads.split(",") if t]:
        runs = {s: dict(tg=[], pp=[], frac=[], meter=[]) for s in shapes}
        for _ in range(args.reps):
            for s in shapes:
                bw = json.loads(subprocess.run([str(bw_exe), str(threads), str(args.bw_mib), "3"], check=True,
                                               capture_output=True, text=True).stdout)["best_gbps"]
                rows = {r["test"]: r["tokens_per_s"] for r in ours(models[s], threads)}
                r = runs[s]
                r["tg"].append(rows["tg32"])
                r["pp"].append(rows["pp64"])
                r["frac"].append(rows["tg32"] * per_token[s] / (bw * 1e9))
                r["meter"].append(bw)
        base = {k: statistics.median(runs[shapes[0]][k]) for k in ("tg", "pp")} if args.baseline else None
        for s in shapes:
            r = runs[s]
            tg, pp, frac = (statistics.median(r[k]) for k in ("tg", "pp", "frac"))
            vs = (f"{tg / base['tg']:.2f}x", f"{pp / base['pp']:.2f}x") if base else ("-", "-")
            print(f"| {s} | {threads} | {tg:.2f} | {vs[0]} | {frac:.0%} | {pp:.2f} | {vs[1]} | "
                  f"{min(r['meter']):.1f}-{max(r['meter']):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
