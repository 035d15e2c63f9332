"""Serving throughput and latency at concurrency 1/2/4/8: our `pybonsai serve` against upstream
`llama-server` (same pin, built by build_upstream.sh) and llama-cpp-python's server.

    python benchmarks/serve_concurrency.py --model /path/bonsai-8b.gguf --threads 2 --reps 3 \
        [--lcp-python build/lcp-venv/bin/python] [--servers ours,ours-fa-off,llama-server,llama-cpp-python]

Every client sends one streaming /v1/completions request: a 64-token text prompt (distinct per
client and run, so no server can reuse a cached prefix) and 64 greedy tokens. All servers stay
up for the whole run; the levels and servers alternate (rep → level → server) and each figure is
the median over the repetitions. Reported per server and level: aggregate generated tokens/s
(all clients' tokens / wall time of the level), p50/p95 time to first token, p50 inter-token
latency (gaps between streamed chunks)."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, model_file  # noqa: E402

SLOTS = 8


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_commands(args, model: Path) -> dict[str, list[str]]:
    ctx = str(SLOTS * 256)  # 256 tokens per sequence: 64 prompt + 64 generated fit
    ours = [sys.executable, "-m", "pybonsai.server", "-m", str(model), "--parallel", str(SLOTS), "--n-ctx", ctx,
            "--threads", str(args.threads), "--log-level", "warning", "--alias", "m"]
    cmds = {
        "ours": ours,  # flash attention on (serve's default since issue 24)
        "ours-fa-off": [*ours, "--flash-attn", "off"],  # the default before
        "llama-server": [args.llama_server, "-m", str(model), "-t", str(args.threads), "-tb", str(args.threads),
                         "--parallel", str(SLOTS), "-c", ctx, "-cb", "-ngl", "0", "--alias", "m",
                         "--cache-ram", "0", "--no-webui"],
        "llama-cpp-python": [args.lcp_python, "-m", "llama_cpp.server", "--model", str(model), "--n_threads",
                             str(args.threads), "--n_threads_batch", str(args.threads), "--n_ctx", ctx,
                             "--model_alias", "m", "--interrupt_requests", "False"],  # default: a new request
                             # cancels the one streaming, which would end the other clients' streams early
    }
    return {name: cmds[name] for name in args.servers}


class Server:
    def __init__(self, name: str, cmd: list[str], log_dir: Path, env: dict):
        self.name, self.port = name, _free_port()
        flag = "--port"
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_dir / f"{name}.log", "wb")
        self.proc = subprocess.Popen(["nice", "-n", "10", *cmd, flag, str(self.port), "--host", "127.0.0.1"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **env})

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"{self.name} did not start within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def make_prompts(model: Path, n: int, n_tokens: int, salt: int) -> list[str]:
    """Distinct text prompts of exactly n_tokens tokens (llama-cpp-python's server takes text only)."""
    from pybonsai import Llama

    with Llama(str(model), vocab_only=True) as vocab:
        out = []
        for i in range(n):
            text = (f"Request {salt}-{i}. Write a long story about the river, the mountain and the city "
                    f"number {i * 7919 + salt}, with many details about people, weather and history. ") * 4
            tokens = vocab.tokenize(text.encode(), add_bos=False)[:n_tokens]
            text = vocab.detokenize(tokens).decode()
            assert len(vocab.tokenize(text.encode(), add_bos=False)) == n_tokens, text
            out.append(text)
        return out


async def one_request(http: httpx.AsyncClient, url: str, prompt: str, n_gen: int) -> dict:
    body = {"model": "m", "prompt": prompt, "max_tokens": n_gen, "temperature": 0, "stream": True}
    t0 = time.perf_counter()
    stamps, finish = [], None
    async with http.stream("POST", url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            choices = chunk.get("choices") or []
            if choices and choices[0].get("text"):
                stamps.append(time.perf_counter())
            if choices and choices[0].get("finish_reason"):
                finish = choices[0]["finish_reason"]
    t_end = time.perf_counter()
    return {"ttft": stamps[0] - t0 if stamps else float("nan"), "itl": [b - a for a, b in zip(stamps, stamps[1:])],
            "tokens": n_gen if finish == "length" else len(stamps), "t0": t0, "t_end": t_end}


async def run_level(url: str, prompts: list[str], n_gen: int) -> dict:
    async with httpx.AsyncClient(timeout=httpx.Timeout(1800.0)) as http:
        results = await asyncio.gather(*(one_request(http, url, p, n_gen) for p in prompts))
    wall = max(r["t_end"] for r in results) - min(r["t0"] for r in results)
    ttfts = sorted(r["ttft"] for r in results)
    itls = [x for r in results for x in r["itl"]]
    return {"agg_tps": sum(r["tokens"] for r in results) / wall, "ttft_p50": statistics.median(ttfts),
            "ttft_p95": ttfts[min(len(ttfts) - 1, int(round(0.95 * (len(ttfts) - 1))))],
            "itl_p50": statistics.median(itls) if itls else float("nan")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_model = Path("/work/models/bonsai-8b.gguf")
    p.add_argument("--model", type=Path, default=None, help="GGUF (default: a Bonsai-8B-shaped synthetic file)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--levels", default="1,2,4,8")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--servers", default="ours,llama-server,llama-cpp-python")
    p.add_argument("--llama-server", default=None, help="default: build_upstream.sh llama-server")
    p.add_argument("--lcp-python", default=str(ROOT / "build" / "lcp-venv" / "bin" / "python"),
                   help="a Python with llama-cpp-python 0.3.36 and its server dependencies (see below)")
    p.add_argument("--json", type=Path, help="write every measurement here")
    args = p.parse_args()
    args.servers = args.servers.split(",")
    levels = [int(x) for x in args.levels.split(",")]
    model = args.model or (default_model if default_model.exists() else model_file("bonsai-8b"))
    if not args.llama_server and {"llama-server", "llama-cpp-python"} & set(args.servers):
        args.llama_server = subprocess.run([str(ROOT / "benchmarks" / "build_upstream.sh"), "llama-server"],
                                           check=True, capture_output=True, text=True).stdout.strip()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers (finally) on SIGTERM too
    log_dir = ROOT / "build" / "serve-bench"
    log_dir.mkdir(parents=True, exist_ok=True)
    # llama-cpp-python's Python package is installed from its 0.3.36 sdist without its native build
    # (CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF"); it loads libllama from the upstream build
    # of the same llama.cpp commit, the one llama-server uses (LLAMA_CPP_LIB_PATH).
    lib_dir = str(Path(args.llama_server).parent) if args.llama_server else os.environ.get("LLAMA_CPP_LIB_PATH", "")
    env = {"llama-cpp-python": {"LLAMA_CPP_LIB_PATH": lib_dir}}
    servers = [Server(name, cmd, log_dir, env.get(name, {})) for name, cmd in server_commands(args, model).items()]
    raw: dict[str, dict[int, list[dict]]] = {s.name: {c: [] for c in levels} for s in servers}
    try:
        for s in servers:
            s.wait_ready()
            asyncio.run(run_level(s.url, make_prompts(model, 1, args.prompt_tokens, salt=999), 8))  # warm-up
        for rep in range(args.reps):
            for c in levels:
                prompts = make_prompts(model, c, args.prompt_tokens, salt=rep * 100 + c)
                for s in servers:
                    m = asyncio.run(run_level(s.url, prompts, args.gen_tokens))
                    raw[s.name][c].append(m)
                    print(f"rep {rep} c{c} {s.name:17s} {m['agg_tps']:7.2f} tok/s  TTFT p50 {m['ttft_p50']:6.2f} s "
                          f"p95 {m['ttft_p95']:6.2f} s  ITL p50 {1000 * m['itl_p50']:7.1f} ms", flush=True)
    finally:
        for s in servers:
            s.stop()
    med = {n: {c: {k: statistics.median(m[k] for m in runs) for k in runs[0]} for c, runs in per.items() if runs}
           for n, per in raw.items()}
    print(f"\nmedians of {args.reps} runs, {model.name}, {args.threads} threads, {args.prompt_tokens}-token prompts, "
          f"{args.gen_tokens} generated tokens per client\n")
    print("| server | concurrency | aggregate tok/s | TTFT p50 (s) | TTFT p95 (s) | ITL p50 (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    for n, per in med.items():
        for c, m in per.items():
            print(f"| {n} | {c} | {m['agg_tps']:.2f} | {m['ttft_p50']:.2f} | {m['ttft_p95']:.2f} | "
                  f"{1000 * m['itl_p50']:.0f} |")
    if "ours" in med:
        ours = med["ours"]
        print()
        if 1 in ours and 8 in ours:
            print(f"ours c8 / ours c1: {ours[8]['agg_tps'] / ours[1]['agg_tps']:.2f}x")
        for other in ("ours-fa-off", "llama-server", "llama-cpp-python"):
            if other in med:
                print(f"ours / {other}: " + ", ".join(f"c{c} {ours[c]['agg_tps'] / med[other][c]['agg_tps']:.2f}x"
                                                   for c in levels if c in med[other]))
    if args.json:
        args.json.write_text(json.dumps({"model": str(model), "threads": args.threads, "raw": raw, "median": med},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
