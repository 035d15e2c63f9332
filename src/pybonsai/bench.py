"""`pybonsai bench`: prompt-processing and generation speed, measured like llama-bench.

pp<N>: one batch of N tokens. tg<N>: N tokens decoded one at a time (no sampling, as
llama-bench). With -d D (llama-bench's depth) D tokens are already in the KV cache when the
timing starts (filled once, untimed; each repetition cuts the cache back to D). Each test runs
once as a warm-up, then `repetitions` times; tokens/s is reported as mean ± standard deviation.

Every configuration (KV types × flash attention, from comma-separated -ctk/-ctv/-fa) reports
its RSS after loading and its peak RSS; with several configurations each runs in a process of
its own, so that each peak is its own.

    python -m pybonsai.bench MODEL.gguf -p 64 -n 32 -t 2 -r 3 [-d 0,1024] [-ctk q8_0 -ctv q8_0 -fa on] [--json]
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from . import kv_cache
from .backends import loaded_cpu_variant, q1_0_kernel_path
from .llama import Llama


@dataclass
class BenchResult:
    test: str            # "pp64", "tg32", "tg32@d4096"
    n_tokens: int
    threads: int
    tokens_per_s: float
    stdev: float
    samples: list[float]
    peak_rss_mb: float
    cpu_variant: str
    q1_0_kernel: str
    model: str
    n_depth: int = 0
    n_ctx: int = 0
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: str = "auto"
    rss_after_load_mb: float = 0.0
    load_s: float = 0.0


def _random_tokens(llm: Llama, n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(llm.n_vocab()) for _ in range(n)]


def _fill(llm: Llama, depth: list[int]) -> None:
    """Bring the cache to exactly `depth` (evaluating it only if it is not there already, or if the
    memory cannot be cut back to it: a recurrent state is then cleared by _forget_after)."""
    if llm.n_tokens >= len(depth) and list(llm.input_ids[:len(depth)]) == depth:
        llm._forget_after(len(depth))
    if llm.n_tokens != len(depth):
        llm.reset()
        llm.eval(depth)


def _time_pp(llm: Llama, tokens: list[int]) -> float:
    start = time.perf_counter()
    llm.eval(tokens)
    return time.perf_counter() - start


def _time_tg(llm: Llama, tokens: list[int]) -> float:
    start = time.perf_counter()
    for t in tokens:
        llm.eval([t])
    return time.perf_counter() - start


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def current_rss_mb() -> float:
    """Resident set size now (Linux /proc; elsewhere the peak, the best available)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return _peak_rss_mb()


def run_bench(model_path: str, n_prompt: Sequence[int] = (64,), n_gen: Sequence[int] = (32,), threads: int = 2,
              repetitions: int = 3, n_ctx: int = 0, seed: int = 0, n_depth: Sequence[int] = (0,),
              type_k: kv_cache.KVType = None, type_v: kv_cache.KVType = None, flash_attn=None,
              use_mmap: bool = True) -> list[BenchResult]:
    """Run every pp and tg test at every depth on one loaded model (one KV configuration)."""
    if repetitions < 1:
        raise ValueError("repetitions must be at least 1")
    if any(d < 0 for d in n_depth):
        raise ValueError("depths must be >= 0")
    longest = max([*n_prompt, *n_gen, 1]) + max([*n_depth, 0])
    if n_ctx and n_ctx < longest:
        raise ValueError(f"n_ctx={n_ctx} is too small for depth + tokens = {longest}")
    start = time.perf_counter()
    with Llama(model_path, n_ctx=n_ctx or longest, n_batch=512, n_threads=threads, type_k=type_k,
               type_v=type_v, flash_attn=flash_attn, use_mmap=use_mmap) as llm:
        load_s = time.perf_counter() - start
        rss_load = current_rss_mb()
        k, v = llm.kv_cache.names
        fa = kv_cache.describe(llm.kv_cache).rsplit("fa=", 1)[1]
        results = []
        for depth in sorted(set(n_depth)):
            prefix = _random_tokens(llm, depth, seed + 1)
            tests = [(f"pp{n}", n, _time_pp) for n in n_prompt if n > 0] + \
                    [(f"tg{n}", n, _time_tg) for n in n_gen if n > 0]
            for name, n, timer in tests:
                tokens = _random_tokens(llm, n, seed)
                rates = []
                for rep in range(repetitions + 1):  # the first is the warm-up
                    _fill(llm, prefix)
                    elapsed = timer(llm, tokens)
                    if rep:
                        rates.append(n / elapsed)
                results.append(BenchResult(
                    test=name + (f"@d{depth}" if depth else ""), n_tokens=n, threads=threads,
                    tokens_per_s=statistics.mean(rates), stdev=statistics.stdev(rates) if len(rates) > 1 else 0.0,
                    samples=rates, peak_rss_mb=_peak_rss_mb(), cpu_variant=loaded_cpu_variant(),
                    q1_0_kernel=q1_0_kernel_path(), model=str(model_path), n_depth=depth, n_ctx=llm.n_ctx(),
                    type_k=k, type_v=v, flash_attn=fa, rss_after_load_mb=rss_load, load_s=load_s))
        return results


def format_table(results: Sequence[BenchResult]) -> str:
    lines = [f"{'test':>12} {'KV (k/v/fa)':>16} {'n_ctx':>6} {'t/s':>16} {'RSS load':>9} {'peak RSS':>9}"
             "  cpu variant / Q1_0 kernel"]
    for r in results:
        kv = f"{r.type_k}/{r.type_v}/{r.flash_attn}"
        lines.append(f"{r.test:>12} {kv:>16} {r.n_ctx:>6} {r.tokens_per_s:>9.2f} ± {r.stdev:<5.2f}"
                     f" {r.rss_after_load_mb:>6.0f} MB {r.peak_rss_mb:>6.0f} MB  {r.cpu_variant} / {r.q1_0_kernel}")
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pybonsai bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("-p", "--n-prompt", type=_int_list, default=[64], help="prompt sizes, comma-separated (0: none)")
    ap.add_argument("-n", "--n-gen", type=_int_list, default=[32], help="generation lengths, comma-separated")
    ap.add_argument("-d", "--n-depth", type=_int_list, default=[0],
                    help="tokens already in the KV cache before each test, comma-separated")
    ap.add_argument("-c", "--ctx", type=int, default=0,
                    help="context size (default: the longest depth + test, as llama-bench)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    kv_cache.add_cli_options(ap, bench=True)
    ap.add_argument("--no-mmap", action="store_true", help="read the weights instead of mapping the file")
    ap.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    return ap


def _one_config_argv(argv: Sequence[str], k: str, v: str, fa: str) -> list[str]:
    """argv with the KV switches replaced by one configuration."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("-ctk", "--cache-type-k", "-ctv", "--cache-type-v", "-fa", "--flash-attn", "--json"):
            skip = a != "--json"
            continue
        if a.split("=", 1)[0] in ("--cache-type-k", "--cache-type-v", "--flash-attn"):
            continue
        out.append(a)
    return out + ["-ctk", k, "-ctv", v, "-fa", fa, "--json"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    configs = list(itertools.product(_str_list(args.cache_type_k), _str_list(args.cache_type_v),
                                     _str_list(args.flash_attn)))
    for k, v, fa in configs:  # every configuration is checked before anything runs
        kv_cache.resolve(k, v, kv_cache.cli_kwargs(argparse.Namespace(
            cache_type_k=k, cache_type_v=v, flash_attn=fa))["flash_attn"])
    if len(configs) == 1:
        kw = kv_cache.cli_kwargs(argparse.Namespace(cache_type_k=configs[0][0], cache_type_v=configs[0][1],
                                                    flash_attn=configs[0][2]))
        results = run_bench(args.model, args.n_prompt, args.n_gen, args.threads, args.repetitions,
                            n_ctx=args.ctx, n_depth=args.n_depth, use_mmap=not args.no_mmap, **kw)
    else:
        results = []
        for k, v, fa in configs:
            proc = subprocess.run([sys.executable, "-m", "pybonsai.bench", *_one_config_argv(argv, k, v, fa)],
                                  capture_output=True, text=True)
            if proc.returncode:
                sys.stderr.write(proc.stderr)
                return proc.returncode
            results += [BenchResult(**r) for r in json.loads(proc.stdout)]
    print(json.dumps([asdict(r) for r in results], indent=1) if args.json else format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
