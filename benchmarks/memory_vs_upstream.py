#!/usr/bin/env python3
"""Memory and long-context figures for issue 12, against unpatched upstream llama-bench on the
same file, in one run, alternating ours/upstream, medians over repetitions.

    python benchmarks/memory_vs_upstream.py rss   [--model F] [--reps 3]        # peak RSS, load + 32 tokens
    python benchmarks/memory_vs_upstream.py depth [--model F] --depths 0,1024   # tg32 at depths, q8_0/q4_0 KV + FA
    python benchmarks/memory_vs_upstream.py ctx32k [--model F]                  # RSS with n_ctx 32768
    python benchmarks/memory_vs_upstream.py kvquality                            # tiny model: KL / top-1 vs f16 KV
    python benchmarks/memory_vs_upstream.py ttft  [--model F]                    # 2nd chat turn, with/without cache
    python benchmarks/memory_vs_upstream.py load --unpatched DIR [--model F]    # load time/RSS, patch 0003 or not

Peak RSS of a child comes from wait4()'s ru_maxrss; for a run stopped early (`limit_s`: only its
load and context creation are needed) from the last /proc/<pid>/status VmHWM sample.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, upstream_llama_bench

DEFAULT_MODEL = Path("/work/models/bonsai-8b.gguf")


def _hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_measured(cmd: list[str], limit_s: float | None = None) -> tuple[float, str, float, bool]:
    """(peak RSS MB, stdout, wall seconds, finished) of `cmd`."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    hwm = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            out = proc.stdout.read()
            return max(hwm, usage.ru_maxrss / 1024), out, time.perf_counter() - start, proc.returncode == 0
        hwm = max(hwm, _hwm_mb(proc.pid))
        if limit_s is not None and time.perf_counter() - start > limit_s:
            proc.send_signal(signal.SIGKILL)
            os.wait4(proc.pid, 0)
            return hwm, "", time.perf_counter() - start, False
        time.sleep(0.05)


def ours(model: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pybonsai", "bench", str(model), "-t", "2", "--json", *args]


def upstream(model: Path, *args: str) -> list[str]:
    return [upstream_llama_bench(), "-m", str(model), "-t", "2", "-o", "json", *args]


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def cmd_rss(a) -> dict:
    """Peak RSS: load + tg32 at n_ctx = 32 (llama-bench's own n_ctx for -p 0 -n 32) and at
    n_ctx 4096 (ours: -c 4096; upstream: -d 4064 stopped after `limit` s, i.e. once its model is
    loaded, its 4096-cell context allocated and its depth fill running)."""
    rows: dict[str, list[float]] = {}
    for _ in range(a.reps):
        for name, cmd, limit in (
                ("ours n_ctx=32", ours(a.model, "-p", "0", "-n", "32", "-r", "1"), None),
                ("upstream n_ctx=32", upstream(a.model, "-p", "0", "-n", "32", "-r", "1"), None),
                ("ours n_ctx=4096", ours(a.model, "-p", "0", "-n", "32", "-r", "1", "-c", "4096"), None),
                ("upstream n_ctx=4096 (first %ds)" % a.limit, upstream(a.model, "-p", "0", "-n", "32", "-r", "1",
                                                                        "-d", "4064"), a.limit)):
            peak, out, wall, done = run_measured(cmd, limit)
            rows.setdefault(name, []).append(peak)
            if name.startswith("ours") and out:
                r = json.loads(out)[0]
                rows.setdefault(name + " RSS after load", []).append(r["rss_after_load_mb"])
                rows.setdefault(name + " load s", []).append(r["load_s"])
                rows.setdefault(name + " tg32 t/s", []).append(r["tokens_per_s"])
            elif out:
                rows.setdefault(name + " tg32 t/s", []).append(json.loads(out)[0]["avg_ts"])
            print(f"  {name}: peak {peak:.0f} MB ({wall:.0f} s)", file=sys.stderr, flush=True)
    return {k: {"median": _median(v), "samples": v} for k, v in rows.items()}


def cmd_depth(a) -> dict:
    """tg32 at each depth with q8_0 and q4_0 KV + flash attention, ours vs upstream, alternating."""
    out: dict[str, list[float]] = {}
    depths = a.depths
    for kv in a.kv.split(","):
        for _ in range(a.reps):
            for who in ("ours", "upstream"):
                if who == "ours":
                    cmd = ours(a.model, "-p", "0", "-n", "32", "-r", str(a.bench_reps), "-d", ",".join(map(str, depths)),
                               "-ctk", kv, "-ctv", kv, "-fa", "on", "-c", str(a.ctx or max(depths) + 32))
                else:
                    # llama-bench refills the depth for every repetition: -r 1 halves a long run
                    cmd = upstream(a.model, "-p", "0", "-n", "32", "-r", str(a.bench_reps), "-d", ",".join(map(str, depths)),
                                   "-ctk", kv, "-ctv", kv, "-fa", "1")
                peak, text, wall, done = run_measured(cmd)
                if not done:
                    raise SystemExit(f"{who} failed: {' '.join(cmd)}")
                for r in json.loads(text):
                    d = r["n_depth"]
                    rate = r["tokens_per_s"] if who == "ours" else r["avg_ts"]
                    out.setdefault(f"{kv} {who} tg32@d{d}", []).append(rate)
                out.setdefault(f"{kv} {who} peak RSS MB", []).append(peak)
                print(f"  {kv} {who}: {wall:.0f} s, peak {peak:.0f} MB", file=sys.stderr, flush=True)
    return {k: {"median": _median(v), "samples": v} for k, v in out.items()}


def cmd_ctx32k(a) -> dict:
    """RSS with a 32768-cell context: ours after load and tg32 at depth 0; upstream stopped after
    `limit` s of `-d 32736` (its context is allocated at creation, before the depth fill)."""
    out: dict[str, list[float]] = {}
    for kv in a.kv.split(","):
        for _ in range(a.reps):
            peak, text, _, _ = run_measured(ours(a.model, "-p", "0", "-n", "32", "-r", "1", "-c", "32768",
                                                 "-ctk", kv, "-ctv", kv, "-fa", "on"))
            r = json.loads(text)[0]
            out.setdefault(f"{kv} ours peak", []).append(peak)
            out.setdefault(f"{kv} ours RSS after load", []).append(r["rss_after_load_mb"])
            peak, _, _, _ = run_measured(upstream(a.model, "-p", "0", "-n", "32", "-r", "1", "-d", "32736",
                                                  "-ctk", kv, "-ctv", kv, "-fa", "1"), a.limit)
            out.setdefault(f"{kv} upstream peak (first {a.limit} s)", []).append(peak)
            print(f"  {kv}: {out}", file=sys.stderr, flush=True)
    return {k: {"median": _median(v), "samples": v} for k, v in out.items()}


def cmd_kvquality(a) -> dict:
    """Mean KL(f16 || quantized) and top-1 agreement over 256 positions of the tiny model, f16 KV
    with flash attention as the reference (so only the cache type differs)."""
    import numpy as np

    from common import model_file
    from pybonsai import Llama

    path = model_file("tiny")
    tokens = [int(t) for t in np.random.default_rng(0).integers(0, 151_000, 256)]

    def logprobs(kv):
        with Llama(path, n_ctx=512, n_batch=512, logits_all=True, n_threads=2, type_k=kv, type_v=kv,
                   flash_attn=True) as llm:
            llm.eval(tokens)
            x = llm.scores[:256].astype(np.float64)
        x -= x.max(axis=-1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))

    ref = logprobs("f16")
    out = {}
    for kv in ("q8_0", "q4_0"):
        lp = logprobs(kv)
        kl = (np.exp(ref) * (ref - lp)).sum(axis=-1)
        out[kv] = {"mean_kl": float(kl.mean()), "max_kl": float(kl.max()),
                   "top1_agreement": float((ref.argmax(-1) == lp.argmax(-1)).mean())}
    return out


TTFT_CHILD = r"""
import json, sys, time
from pybonsai import Llama, LlamaRAMCache
path, use_cache, n_hist = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
llm = Llama(path, n_ctx=4096, n_threads=2)
if use_cache:
    llm.set_cache(LlamaRAMCache())
words = ("The history of the river valley is long and the people who lived there kept careful "
         "records of floods, harvests and trade. ").split()
hist = " ".join(words[i % len(words)] for i in range(n_hist))
msgs = [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": hist}]
first = llm.create_chat_completion(msgs, max_tokens=4, temperature=0, enable_thinking=False)
prompt_tokens = first["usage"]["prompt_tokens"]
llm.create_completion("An unrelated request that takes over the context.", max_tokens=2, temperature=0)
msgs += [first["choices"][0]["message"], {"role": "user", "content": "Summarize that in one line."}]
t0 = time.perf_counter()
for chunk in llm.create_chat_completion(msgs, max_tokens=2, temperature=0, enable_thinking=False, stream=True):
    if chunk["choices"][0]["delta"].get("content"):
        break
print(json.dumps({"ttft_s": time.perf_counter() - t0, "history_tokens": prompt_tokens}))
"""


def cmd_ttft(a) -> dict:
    """Second chat turn after ~1,500 history tokens, when another prompt used the context in
    between: time to first token with and without a RAM prompt cache (alternating processes)."""
    out: dict[str, list[float]] = {}
    for _ in range(a.reps):
        for use in ("0", "1"):
            proc = subprocess.run([sys.executable, "-c", TTFT_CHILD, str(a.model), use, str(a.history_words)],
                                  capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.splitlines()[-1])
            key = "with cache" if use == "1" else "without cache"
            out.setdefault(key, []).append(r["ttft_s"])
            out.setdefault("history tokens", []).append(r["history_tokens"])
            print(f"  {key}: {r}", file=sys.stderr, flush=True)
    return {k: {"median": _median(v), "samples": v} for k, v in out.items()}


LOAD_CHILD = r"""
import json, sys, time
def status():
    with open("/proc/self/status") as f:
        rows = dict(line.split(":", 1) for line in f if ":" in line)
    return {k: int(rows[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}
from pybonsai import _core, backends
backends.ensure_loaded()
t = time.perf_counter()
m = _core.Model(sys.argv[1])
dt = time.perf_counter() - t
print(json.dumps({"load_s": dt, **status()}))
"""


def cmd_load(a) -> dict:
    """Model load time, RSS and peak RSS: this build vs `--unpatched DIR`, a copy of the same
    build's installed pybonsai package made without vendor/patches/0003 (alternating)."""
    out: dict[str, list[float]] = {}
    for _ in range(a.reps):
        for who, env in (("patched", {}), ("unpatched", {"PYTHONPATH": str(a.unpatched)})):
            proc = subprocess.run([sys.executable, "-c", LOAD_CHILD, str(a.model)], capture_output=True, text=True,
                                  check=True, env={**os.environ, **env})
            r = json.loads(proc.stdout.splitlines()[-1])
            for k, v in r.items():
                out.setdefault(f"{who} {k}", []).append(v)
    return {k: {"median": _median(v), "samples": v} for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["rss", "depth", "ctx32k", "kvquality", "ttft", "load"])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--depths", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1024, 4096])
    ap.add_argument("--kv", default="q8_0,q4_0")
    ap.add_argument("--bench-reps", type=int, default=2, help="depth: repetitions inside each bench run (-r)")
    ap.add_argument("--ctx", type=int, default=0, help="our n_ctx for depth runs (default: deepest + 32)")
    ap.add_argument("--limit", type=int, default=60, help="seconds an upstream run is observed when stopped early")
    ap.add_argument("--unpatched", type=Path, help="load: directory holding an unpatched pybonsai package")
    ap.add_argument("--history-words", type=int, default=1250)
    a = ap.parse_args()
    os.chdir(ROOT)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    result = {"what": a.what, "started": started, "model": str(a.model), "argv": sys.argv[1:],
              "result": globals()["cmd_" + a.what](a)}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
