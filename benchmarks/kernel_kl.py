#!/usr/bin/env python3
"""Our kernels vs upstream's on the same file: mean KL of every position's next-token distribution.

Evaluates the same prompt (`--tokens` random ordinary tokens, one batch) twice in fresh processes,
once with our kernels and once with the environment that hands the weight type back to upstream's
code (default PYBONSAI_Q2_KERNEL=upstream: the pin's Q2_0 dot product), and prints the mean and
max KL(upstream || ours) and how often the top token agrees.

    python benchmarks/kernel_kl.py --shape ternary-bonsai-8b --tokens 48 --threads 2
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import model_file

CHILD = """
import sys, numpy as np
from pybonsai import Llama
toks = [int(t) for t in sys.argv[3].split(",")]
with Llama(sys.argv[1], n_ctx=len(toks) + 8, n_batch=len(toks), logits_all=True, n_threads=int(sys.argv[4]),
           verbose=False) as llm:
    llm.eval(toks)
    np.save(sys.argv[2], llm.scores[:len(toks)].astype(np.float64))
"""


def logits(model: Path, out: Path, toks: list[int], threads: int, env: dict[str, str]) -> np.ndarray:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PYBONSAI_Q")} | env
    subprocess.run([sys.executable, "-c", CHILD, str(model), str(out), ",".join(map(str, toks)), str(threads)],
                   check=True, env=full)
    return np.load(out)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="ternary-bonsai-8b")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--upstream-env", default="PYBONSAI_Q2_KERNEL=upstream")
    args = ap.parse_args()
    model = model_file(args.shape)
    toks = np.random.default_rng(1234).integers(100, 20000, size=args.tokens).tolist()
    env = dict(kv.split("=", 1) for kv in args.upstream_env.split(",") if kv)
    with tempfile.TemporaryDirectory() as tmp:
        ours = log_softmax(logits(model, Path(tmp) / "ours.npy", toks, args.threads, {}))
        up = log_softmax(logits(model, Path(tmp) / "up.npy", toks, args.threads, env))
    kl = (np.exp(up) * (up - ours)).sum(axis=1)
    top1 = float(np.mean(up.argmax(axis=1) == ours.argmax(axis=1)))
    print(f"{args.shape}, {args.tokens} tokens, {args.threads} threads, upstream = {args.upstream_env}: "
          f"mean KL {kl.mean():.2e}, max KL {kl.max():.2e}, top-1 agreement {top1:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
