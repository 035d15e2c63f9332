"""One sampler pick over a full vocabulary of random logits: greedy with the top-logits shortcut
(`Sampler.set_greedy_shortcut`) against the whole vocabulary, plain and with a grammar, and the
top-logprobs list that `logprobs=N` adds to each token.

    python benchmarks/sampler_pick.py [--model tiny.gguf] [--reps 300]

Default model: the tiny synthetic Qwen3 (the 152k Qwen vocabulary), written to build/models/."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from common import model_file


def per_call(fn, reps: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--reps", type=int, default=300)
    args = ap.parse_args()
    import pybonsai.sampling as sampling
    from pybonsai import Llama
    from pybonsai.completions import _top_logprobs

    llm = Llama(str(args.model or model_file("tiny")), n_ctx=256, n_threads=1, verbose=False)
    logits = (np.random.default_rng(0).standard_normal(llm.n_vocab()) * 3).astype(np.float32)
    never_raises = sampling._never_raises
    print(f"vocabulary {llm.n_vocab()}, {args.reps} picks each (grammar: a tenth of them)")
    print("| pick | shortcut | whole vocabulary |\n|---|---|---|")
    for name, grammar in (("greedy", None), ("greedy, grammar [a-z ]+", ("root ::= [a-z ]+", "root"))):
        row = []
        for shortcut in (True, False):
            sampling._never_raises = never_raises if shortcut else (lambda params, bias: False)
            s = sampling.build_sampler(llm.model, sampling.SamplingParams(temperature=0), 0, grammar=grammar,
                                       logit_bias={151643: -100.0})
            reps = args.reps if grammar is None else max(1, args.reps // 10)
            row.append(per_call(lambda: s.sample_logits(llm.model, logits), reps))
        sampling._never_raises = never_raises
        print(f"| {name} | {row[0] * 1e6:.0f} us | {row[1] * 1e6:.0f} us |")
    lp = per_call(lambda: _top_logprobs(llm, logits, 5, 5), args.reps)
    print(f"\ntop-5 logprobs list: {lp * 1e6:.0f} us a token")


if __name__ == "__main__":
    main()
