#!/usr/bin/env python3
"""Where a decode token's time goes: per ggml op, from the installed wheel's own timers.

Runs decode (one token per eval() call, as `pybonsai bench` tg) in a child with
PYBONSAI_OP_PROFILE=1 (vendor/patches/0005: ggml-cpu sums each node's compute time and the time
its thread then waits at the barrier, per op and thread), twice: --short and --long tokens after
the same prompt of --depth tokens, and subtracts, so loading, the prompt and warm-up drop out.
Per op: ms per token computing and waiting (mean over threads) and its share of the decode wall
time; "outside the graph" is the rest (llama_decode's bookkeeping, Python). Last, the Q1_0 (and
Q2_0) matrices' read rate while they run (weight bytes / their compute time) next to the read
bandwidth meter (benchmarks/bandwidth.c) measured just before.

    python benchmarks/op_profile.py --model bonsai-8b.gguf --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

from common import model_file
from decode_vs_bandwidth import bandwidth_tool, bytes_per_token

CHILD = textwrap.dedent("""
    import sys, time
    from pybonsai import Llama
    model, threads, n, fa, depth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    llm = Llama(model, n_ctx=depth + n + 8, n_threads=threads, n_threads_batch=threads, verbose=False,
                flash_attn=fa)
    prompt = llm.tokenize(b"The capital of France is")
    prompt = (prompt * (depth // len(prompt) + 1))[:depth]
    llm.eval(prompt)
    start = time.perf_counter()
    for _ in range(n):
        llm.eval([prompt[-1]])
    print(time.perf_counter() - start)
""")


def profile(model: Path, threads: int, n: int, fa: str, depth: int) -> tuple[float, dict]:
    """(decode wall seconds, {(name, thread): [count, compute_ns, wait_ns]}) of one child."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(model), str(threads), str(n), fa, str(depth)], check=True,
                          capture_output=True, text=True, env=dict(os.environ, PYBONSAI_OP_PROFILE="1"))
    sums = {}
    for line in proc.stderr.splitlines():
        if line.startswith("pybonsai-op-profile "):
            head, _, tail = line[len("pybonsai-op-profile "):].rpartition(" thread ")
            f = tail.split()  # <i> count <n> compute_ns <c> wait_ns <w>
            sums[(head, int(f[0]))] = [int(f[2]), int(f[4]), int(f[6])]
    if not sums:
        raise SystemExit("no pybonsai-op-profile lines: is the installed wheel built with vendor/patches/0005?")
    return float(proc.stdout.strip().splitlines()[-1]), sums


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="GGUF (default: the Bonsai-8B-shaped synthetic file)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--short", type=int, default=16)
    ap.add_argument("--long", type=int, default=80)
    ap.add_argument("--flash-attn", default="auto", help="on, off or auto (Llama's default)")
    ap.add_argument("--depth", type=int, default=6, help="prompt tokens in the KV cache before decoding")
    args = ap.parse_args()
    model = args.model or model_file("bonsai-8b")
    meter = json.loads(subprocess.run([str(bandwidth_tool()), str(args.threads), "2048", "3"], check=True,
                                      capture_output=True, text=True).stdout)["best_gbps"]
    wall_s, short = profile(model, args.threads, args.short, args.flash_attn, args.depth)
    wall_l, long_ = profile(model, args.threads, args.long, args.flash_attn, args.depth)
    tokens = args.long - args.short
    wall_ms = (wall_l - wall_s) * 1e3 / tokens
    per_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # count, compute, wait per token
    for key, (count, compute, wait) in long_.items():
        c0, p0, w0 = short.get(key, (0, 0, 0))
        row = per_op[key[0]]
        row[0] += (count - c0) / tokens / args.threads
        row[1] += (compute - p0) / 1e6 / tokens / args.threads
        row[2] += (wait - w0) / 1e6 / tokens / args.threads
    print(f"{model.name}, {args.threads} thread(s), flash attention {args.flash_attn}, decode at positions "
          f"{args.depth + args.short + 1}-{args.depth + args.long}: {wall_ms:.2f} ms per token "
          f"({1e3 / wall_ms:.2f} tok/s)")
    print("| op | nodes per token | compute ms/token | waiting after it, ms/token | share of the token |")
    print("|---|---:|---:|---:|---:|")
    quant = tuple(f"MUL_MAT({n}): activation quantization" for n in ("Q1_0", "Q2_0", "PQ2_0", "PTQ1_0"))
    inside = 0.0
    for name, (count, compute, wait) in sorted(per_op.items(), key=lambda kv: -(kv[1][1] + kv[1][2])):
        if name not in quant:  # a part of MUL_MAT(Q1_0) or MUL_MAT(Q2_0), listed below it
            inside += compute + wait
        print(f"| {name} | {count:.1f} | {compute:.3f} | {wait:.3f} | {(compute + wait) / wall_ms:.1%} |")
    print(f"| outside the graph | | {wall_ms - inside:.3f} | | {(wall_ms - inside) / wall_ms:.1%} |")
    weights = bytes_per_token(model, 0)[1]["weights_bytes"]
    kinds = [n for n in ("Q1_0", "Q2_0", "PQ2_0", "PTQ1_0") if per_op.get(f"MUL_MAT({n})", (0, 0))[1] > 0]
    mm_ms = sum(per_op[f"MUL_MAT({n})"][1] for n in kinds)
    if mm_ms > 0:
        rate = weights / (mm_ms * 1e-3) / 1e9
        print(f"{'+'.join(kinds)} matrices while they run: {weights / 1e9:.3f} GB in {mm_ms:.2f} ms = {rate:.1f} GB/s; "
              f"meter just before: {meter:.1f} GB/s ({rate / meter:.0%}); decode as a whole: "
              f"{weights / (wall_ms * 1e-3) / 1e9:.1f} GB/s ({weights / (wall_ms * 1e-3) / 1e9 / meter:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
