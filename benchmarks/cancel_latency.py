"""How fast Llama.cancel() stops a long prefill: the time from the cancel() call to the
CancelledError in the evaluating thread, over N tries, and the Llama's health afterwards.

    python benchmarks/cancel_latency.py MODEL.gguf --prompt-tokens 2000 --tries 20 [--ubatch 512]

Each try starts a fresh prefill of --prompt-tokens tokens in a thread, calls cancel() after a random
0.3-1.0 s, and records the latency. After the tries, one greedy generation checks the Llama still
works (and equals the one made before any cancel).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time

from pybonsai import CancelledError, Llama


def one_try(llm: Llama, tokens: list[int], delay: float) -> dict:
    raised: dict = {}

    def work() -> None:
        try:
            llm.reset()
            llm.eval(tokens)
            raised["finished"] = time.perf_counter()
        except CancelledError:
            raised["cancelled"] = time.perf_counter()

    t = threading.Thread(target=work)
    t.start()
    time.sleep(delay)
    asked = time.perf_counter()
    llm.cancel()
    t.join()
    if "cancelled" not in raised:
        return {"finished_before_cancel": True}
    return {"latency_ms": 1000 * (raised["cancelled"] - asked), "n_tokens_kept": llm.n_tokens}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--prompt-tokens", type=int, default=2000)
    p.add_argument("--tries", type=int, default=20)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--ubatch", type=int, default=512)
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    rng = random.Random(args.seed)
    llm = Llama(args.model, n_ctx=args.prompt_tokens + 64, n_batch=args.batch, n_ubatch=args.ubatch,
                n_threads=args.threads)
    tokens = [rng.randrange(1000, 100_000) for _ in range(args.prompt_tokens)]
    probe = tokens[:8]
    before = llm.create_completion(probe, max_tokens=4, temperature=0)["choices"][0]["text"]
    results = [one_try(llm, tokens, rng.uniform(0.3, 1.0)) for _ in range(args.tries)]
    after = llm.create_completion(probe, max_tokens=4, temperature=0)["choices"][0]["text"]
    lat = sorted(r["latency_ms"] for r in results if "latency_ms" in r)
    summary = {
        "model": args.model, "prompt_tokens": args.prompt_tokens, "n_batch": args.batch, "n_ubatch": args.ubatch,
        "tries": args.tries, "cancelled": len(lat),
        "p50_ms": round(statistics.median(lat), 1) if lat else None,
        "p95_ms": round(lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))], 1) if lat else None,
        "max_ms": round(lat[-1], 1) if lat else None,
        "usable_after": after == before,
        "latencies_ms": [round(x, 1) for x in lat],
    }
    print(json.dumps(summary) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0 if lat and after == before else 1


if __name__ == "__main__":
    raise SystemExit(main())
