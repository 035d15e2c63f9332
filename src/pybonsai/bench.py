"""`pybonsai bench`: prompt-processing and generation speed, measured like llama-bench.

pp<N>: one batch of N tokens into an empty context. tg<N>: N tokens decoded one at a time
after an empty context (no sampling, as llama-bench). Each test runs once as a warm-up, then
`repetitions` times; tokens/s is reported as mean ± standard deviation.

    python -m pybonsai.bench MODEL.gguf -p 64 -n 32 -t 2 -r 3 [--json]
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from .backends import loaded_cpu_variant, q1_0_kernel_path
from .llama import Llama


@dataclass
class BenchResult:
    test: str            # "pp64", "tg32"
    n_tokens: int
    threads: int
    tokens_per_s: float
    stdev: float
    samples: list[float]
    peak_rss_mb: float
    cpu_variant: str
    q1_0_kernel: str
    model: str


def _random_tokens(llm: Llama, n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(llm.n_vocab()) for _ in range(n)]


def _time_pp(llm: Llama, tokens: list[int]) -> float:
    llm.reset()
    start = time.perf_counter()
    llm.eval(tokens)
    return time.perf_counter() - start


def _time_tg(llm: Llama, tokens: list[int]) -> float:
    llm.reset()
    start = time.perf_counter()
    for t in tokens:
        llm.eval([t])
    return time.perf_counter() - start


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def run_bench(model_path: str, n_prompt: Sequence[int] = (64,), n_gen: Sequence[int] = (32,), threads: int = 2,
              repetitions: int = 3, n_ctx: int = 0, seed: int = 0) -> list[BenchResult]:
    """Run every pp and tg test on one loaded model; return one BenchResult per test."""
    if repetitions < 1:
        raise ValueError("repetitions must be at least 1")
    longest = max([*n_prompt, *n_gen, 1])
    with Llama(model_path, n_ctx=n_ctx or longest, n_batch=max([*n_prompt, 1]), n_threads=threads) as llm:
        tests = [(f"pp{n}", n, _time_pp) for n in n_prompt if n > 0] + \
                [(f"tg{n}", n, _time_tg) for n in n_gen if n > 0]
        results = []
        for name, n, timer in tests:
            tokens = _random_tokens(llm, n, seed)
            timer(llm, tokens)  # warm-up
            rates = [n / timer(llm, tokens) for _ in range(repetitions)]
            results.append(BenchResult(
                test=name, n_tokens=n, threads=threads, tokens_per_s=statistics.mean(rates),
                stdev=statistics.stdev(rates) if len(rates) > 1 else 0.0, samples=rates,
                peak_rss_mb=_peak_rss_mb(), cpu_variant=loaded_cpu_variant(), q1_0_kernel=q1_0_kernel_path(),
                model=str(model_path)))
        return results


def format_table(results: Sequence[BenchResult]) -> str:
    lines = [f"{'test':>8} {'threads':>7} {'t/s':>16} {'peak RSS':>10}  cpu variant / Q1_0 kernel"]
    for r in results:
        lines.append(f"{r.test:>8} {r.threads:>7} {r.tokens_per_s:>9.2f} ± {r.stdev:<5.2f}"
                     f" {r.peak_rss_mb:>7.0f} MB  {r.cpu_variant} / {r.q1_0_kernel}")
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="pybonsai bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("-p", "--n-prompt", type=_int_list, default=[64], help="prompt sizes, comma-separated (0: none)")
    ap.add_argument("-n", "--n-gen", type=_int_list, default=[32], help="generation lengths, comma-separated")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    args = ap.parse_args(argv)
    results = run_bench(args.model, args.n_prompt, args.n_gen, args.threads, args.repetitions)
    print(json.dumps([asdict(r) for r in results], indent=1) if args.json else format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
