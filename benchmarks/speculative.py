#!/usr/bin/env python3
"""Speculative decoding (pybonsai.speculative), measured in halves, since random-weight models make
real acceptance rates meaningless:

1. The mechanism at a controlled acceptance rate: an oracle drafter proposes the model's own greedy
   continuation with a planted fraction (1 - alpha) of wrong tokens; decode tokens/s with it vs plain
   decoding of the same tokens, same file, same run. Draft length fixed (2, 4, 8) or adaptive.
2. The drafters' own cost: prompt lookup per call (µs) on a long context; a draft model's cost per
   drafted token relative to one token of the target.
3. Real acceptance, end to end, labelled as such: prompt lookup on a copy task (a logits processor
   makes the model echo its prompt, so the continuation repeats the context).

    python benchmarks/speculative.py                      # 8B shape, 1 and 2 threads
    python benchmarks/speculative.py --shape tiny --tokens 32 --threads 1   # a quick look

Prints markdown tables (paste into benchmarks/RESULTS.md with the command)."""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import model_file  # noqa: E402

from pybonsai import Llama  # noqa: E402
from pybonsai import speculative  # noqa: E402
from pybonsai.llama_speculative import GGUFDraftModel, LlamaDraftModel, LlamaPromptLookupDecoding  # noqa: E402

PROMPT = b"Once upon a time there was a little model that learned to read the weights one bit at a time and"


class Oracle(LlamaDraftModel):
    """The reference continuation, each drafted token wrong with probability 1 - alpha."""

    def __init__(self, prompt_len: int, cont: list, alpha: float, num_pred_tokens: int, seed: int = 0):
        self.prompt_len, self.cont, self.alpha, self.num_pred_tokens = prompt_len, cont, alpha, num_pred_tokens
        self.rng = np.random.default_rng(seed)

    def __call__(self, ids, /, max_tokens=None, **kwargs):
        m = len(ids) - self.prompt_len
        out = self.cont[m:m + (max_tokens or self.num_pred_tokens)]
        return np.array([t if self.rng.random() < self.alpha else (t + 7) % 1000 for t in out], dtype=np.intc)


def decode_rate(llm: Llama, prompt: list, n: int, **kw) -> tuple[float, list]:
    """Tokens/s from the first generated token to the n-th (the prompt's prefill excluded)."""
    llm.reset()
    stream = llm.generate(prompt, temp=0.0, **kw)
    out = [next(stream)]
    start = time.perf_counter()
    out += list(itertools.islice(stream, n - 1))
    rate = (n - 1) / (time.perf_counter() - start)
    stream.close()
    return rate, out


def mechanism(path: Path, threads: int, n: int, alphas: list, lengths: list) -> None:
    plain = Llama(str(path), n_ctx=1024, n_threads=threads)
    prompt = plain.tokenize(PROMPT)
    decode_rate(plain, prompt, 4)  # warm-up: pages in the weights
    base, ref = decode_rate(plain, prompt, n)
    print(f"\n### {path.name}, {threads} thread(s), {n} tokens: plain {base:.2f} tok/s\n")
    print("| alpha | draft length | tok/s | vs plain | drafted | accepted | identical |")
    print("|---|---|---|---|---|---|---|")
    for alpha in alphas:
        for length in lengths:
            fixed = length != "adaptive"
            drafter = Oracle(len(prompt), ref + [0] * 16, alpha, int(length) if fixed else 8)
            spec = Llama(str(path), n_ctx=1024, n_threads=threads, draft_model=drafter)
            if fixed:
                spec._speculation.length = speculative.DraftLength(int(length), adaptive=False)
            rate, out = decode_rate(spec, prompt, n)
            s = spec._speculation.stats
            print(f"| {alpha} | {length} | {rate:.2f} | {rate / base:.2f}x | {s['drafted']} | {s['accepted']} | "
                  f"{out == ref} |", flush=True)
            spec.close()
    again, _ = decode_rate(plain, prompt, n)
    print(f"\nplain again at the end: {again:.2f} tok/s (drift {again / base:.2f}x)")
    plain.close()


def drafter_costs(path: Path, draft_path: Path, threads: int) -> None:
    ids = np.random.default_rng(0).integers(0, 150000, 2000).astype(np.intc)
    lookup = LlamaPromptLookupDecoding(max_ngram_size=3, num_pred_tokens=8)
    start = time.perf_counter()
    for _ in range(200):
        lookup(ids)
    per_call = (time.perf_counter() - start) / 200 * 1e6
    print(f"\nprompt lookup on a 2000-token context: {per_call:.0f} µs per call (no match: the worst case)")
    target = Llama(str(path), n_ctx=1024, n_threads=threads)
    prompt = target.tokenize(PROMPT)
    decode_rate(target, prompt, 4)
    t_rate, _ = decode_rate(target, prompt, 16)
    draft = GGUFDraftModel(draft_path, num_pred_tokens=8)
    draft.bind(target)
    decode_rate(draft.llama, prompt, 4)
    d_rate, _ = decode_rate(draft.llama, prompt, 32)
    print(f"draft model {draft_path.name}: {d_rate:.2f} tok/s vs target {t_rate:.2f} tok/s: one drafted token costs "
          f"{t_rate / d_rate:.2f} of a target token ({threads} thread(s))")
    target.close()
    draft.llama.close()


def copy_task(path: Path, threads: int, n: int) -> None:
    """A logits processor forces the model to repeat its prompt: prompt lookup then drafts right."""
    text = b" ".join([PROMPT] * 3)
    plain = Llama(str(path), n_ctx=1024, n_threads=threads)
    prompt = plain.tokenize(text)

    def echo(ids, scores):  # the token that followed the same position one prompt-length earlier
        want = prompt[(len(ids) - len(prompt)) % len(prompt)]
        out = np.full_like(scores, -np.inf)
        out[want] = 0.0
        return out
    decode_rate(plain, prompt, 4, logits_processor=echo)
    base, ref = decode_rate(plain, prompt, n, logits_processor=echo)
    spec = Llama(str(path), n_ctx=1024, n_threads=threads, draft_model=LlamaPromptLookupDecoding(num_pred_tokens=8))
    rate, out = decode_rate(spec, prompt, n, logits_processor=echo)
    s = spec._speculation.stats
    print(f"\ncopy task (echo forced by a logits processor; real prompt-lookup acceptance), {threads} thread(s): "
          f"plain {base:.2f} tok/s, prompt lookup {rate:.2f} tok/s = {rate / base:.2f}x; drafted {s['drafted']}, "
          f"accepted {s['accepted']}; identical {out == ref}")
    plain.close()
    spec.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="bonsai-8b")
    ap.add_argument("--draft-shape", default="bonsai-1.7b")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--alphas", default="1.0,0.8,0.6,0.0")
    ap.add_argument("--lengths", default="2,4,8,adaptive")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: mechanism,costs,copy")
    args = ap.parse_args()
    path = model_file(args.shape)
    skip = set(filter(None, args.skip.split(",")))
    for threads in [int(t) for t in args.threads.split(",")]:
        if "mechanism" not in skip:
            mechanism(path, threads, args.tokens, [float(a) for a in args.alphas.split(",")], args.lengths.split(","))
        if "costs" not in skip:
            drafter_costs(path, model_file(args.draft_shape), threads)
        if "copy" not in skip:
            copy_task(path, threads, args.tokens)


if __name__ == "__main__":
    main()
