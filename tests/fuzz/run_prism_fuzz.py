#!/usr/bin/env python3
"""Fuzz Bonsai 2's rotation metadata: tiny-bonsai2 files whose `prism.hadamard.*` keys are mutated
(keys dropped, values of the wrong type, random integers, foreign or bogus tensor names, sign values
that are not +-1, arrays cut short), each loaded and evaluated in a subprocess. Every case must end
as a model that loads or a LlamaError: a crash (signal, non-zero exit) or a hang (120 s) fails.

    python tests/fuzz/run_prism_fuzz.py --cases 250 --seed 2
"""
from __future__ import annotations

import argparse
import collections
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

from gguf import GGUFValueType as T

from pybonsai import synth, synth_prism

CHILD = """
import sys
from pybonsai import Llama
try:
    Llama(sys.argv[1], n_ctx=64, verbose=False).eval([1, 2, 3])
    print("LOADED")
except Exception as e:
    lines = [x for x in str(e).splitlines() if "error loading model:" in x]
    print("ERROR", (lines[0].split("error loading model:")[1] if lines else str(e).splitlines()[0])[:200])
"""
NAMES = [b"ffn_up", b"ssm_out", b"attn_qkv", b"attn_norm", b"ffn_up_exps"]


def mutate(rng: random.Random, fields: list) -> list:
    f = list(fields)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(f))
        key, value, vtype, sub = f[i]
        kind = rng.randrange(9)
        if kind == 0:
            f.pop(i)
        elif kind == 1:
            f[i] = (key, rng.choice([0, 1, 2, 3, 7, 64, 4096, 16384, 2**31 - 1, 2**32 - 1]), T.UINT32, None)
        elif kind == 2:
            f[i] = (key, b"x" * rng.randint(0, 40), T.STRING, None)
        elif kind == 3:
            f[i] = (key, [rng.randint(-3, 3) for _ in range(rng.randint(1, 50))], T.ARRAY, T.INT32)
        elif kind == 4:
            f[i] = (key, [b"blk.%d.%s.weight" % (rng.randint(0, 9), rng.choice(NAMES))
                          for _ in range(rng.randint(1, 5))], T.ARRAY, T.STRING)
        elif kind == 5:
            f[i] = (key, rng.choice([True, False]), T.BOOL, None)
        elif kind == 6 and vtype == T.ARRAY and sub == T.INT32:
            value = list(value)
            value[rng.randrange(len(value))] = rng.choice([0, 2, -2, 1, -1, 2**31 - 1, -2**31])
            f[i] = (key, value, vtype, sub)
        elif kind == 7 and vtype == T.ARRAY:
            f[i] = (key, list(value)[:rng.randint(1, len(value))], vtype, sub)  # gguf refuses empty arrays
        elif kind == 8:
            f[i] = (key, [rng.randint(0, 2**31 - 1) for _ in range(rng.randint(1, 4))], T.ARRAY, T.INT32)
    return f


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng, original = random.Random(args.seed), synth_prism.prism_fields
    outcomes: dict[str, list[str]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case.gguf"
        for _ in range(args.cases):
            with mock.patch.object(synth_prism, "prism_fields", lambda *a: mutate(rng, original(*a))):
                synth.write_model(path, "tiny-bonsai2", overwrite=True)
            try:
                p = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=120)
            except subprocess.TimeoutExpired:
                outcomes["hang"].append("")
                continue
            out = p.stdout.strip()
            kind = "crash" if p.returncode != 0 else "loaded" if out == "LOADED" else "error"
            outcomes[kind].append(out[6:] if kind == "error" else p.stderr[-300:])
    print({k: len(v) for k, v in outcomes.items()})
    reasons = collections.Counter(r.split(":", 2)[-1].strip()[:60] for r in outcomes["error"])
    for reason, n in reasons.most_common(20):
        print(f"{n:5d}  {reason}")
    for kind in ("crash", "hang"):
        for detail in outcomes.get(kind, [])[:5]:
            print(kind, detail)
    return 1 if outcomes.get("crash") or outcomes.get("hang") else 0


if __name__ == "__main__":
    sys.exit(main())
