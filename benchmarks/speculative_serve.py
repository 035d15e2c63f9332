"""Speculative decoding through the server (issue 25): the planted-acceptance table of
benchmarks/speculative.py, served by the OpenAI app at concurrency 1 and 4.

    python benchmarks/speculative_serve.py [--shape bonsai-8b] [--threads 2] [--tokens 96]

For each alpha, an Engine with an oracle drafter (each client's own greedy continuation, each drafted
token wrong with probability 1 - alpha; the Engine drafts per sequence inside the continuous batch,
adaptive length, draft_max 8) is served by `pybonsai.server.app.create_app` under uvicorn on
127.0.0.1, in a process of its own (this script with --serve); the clients send /v1/completions requests (greedy, `--tokens` tokens, end of text
forbidden) over HTTP, 1 or 4 at once, each with its own prompt. Reported: aggregate generated tokens/s
(all clients' tokens / wall time, prefill included, no prompt reuse) against the same server without a drafter (up for
the whole run, timed right before each row: the machine's speed drifts), the drafted / accepted counts
from /metrics (after an 8-token warm-up request), and whether every text equals the plain server's."""
from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import model_file  # noqa: E402

from pybonsai import Engine, Llama  # noqa: E402
from pybonsai.llama_speculative import LlamaDraftModel  # noqa: E402

NO_END = {"151643": -100, "151645": -100}


def prompts(n: int) -> list[str]:
    return [f"Story number {i}: once upon a time a small model learned to read its weights one bit at a time and"
            for i in range(n)]


class PromptOracle(LlamaDraftModel):
    """Drafts each known prompt's greedy continuation; each drafted token wrong with probability 1 - alpha."""

    def __init__(self, conts: dict, alpha: float, num_pred_tokens: int = 8, seed: int = 0):
        self.conts, self.alpha, self.num_pred_tokens = conts, alpha, num_pred_tokens
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()

    def __call__(self, ids, /, max_tokens=None, **kwargs):
        ids = [int(t) for t in ids]
        for prompt, cont in self.conts.items():
            if tuple(ids[:len(prompt)]) == prompt:
                m = len(ids) - len(prompt)
                out = cont[m:m + (max_tokens or self.num_pred_tokens)]
                with self.lock:
                    return np.array([t if self.rng.random() < self.alpha else (t + 7) % 1000 for t in out],
                                    dtype=np.intc)
        return np.array([], dtype=np.intc)


def continuations(path: Path, texts: list[str], n: int, threads: int) -> dict:
    """Greedy continuation (n + 16 tokens) of each prompt as the server tokenizes it."""
    llm = Llama(str(path), n_ctx=1024, n_threads=threads, verbose=False)
    out = {}
    for text in texts:
        prompt = llm.tokenize(text.encode())
        llm.reset()
        cont = []
        for token in llm.generate(prompt, temp=0.0, logits_processor=None):
            cont.append(token)
            if len(cont) == n + 16:
                break
        out[tuple(prompt)] = cont
    llm.close()
    return out


class Served:
    """This script in --serve mode (an Engine with the oracle, or none, under uvicorn) in its own process:
    in-process, the clients' and the server's threads shared one GIL and c1 decoded ~35% slower."""

    def __init__(self, path: Path, threads: int, n_parallel: int, conts_file: Path, alpha: Optional[float]):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [sys.executable, __file__, "--serve", str(path), "--port", str(self.port), "--threads", str(threads),
               "--parallel", str(n_parallel), "--conts", str(conts_file)]
        if alpha is not None:
            cmd += ["--alpha", str(alpha)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.close()
        raise RuntimeError("the server did not start")

    def metric(self, name: str) -> float:
        text = httpx.get(self.base + "/metrics", timeout=10).text
        m = re.search(rf"^{re.escape(name)}\s+([0-9.e+-]+)$", text, re.M)
        return float(m.group(1)) if m else float("nan")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def serve_main(args) -> None:
    import uvicorn

    from pybonsai.server.app import ServerSettings, create_app

    conts = {tuple(json.loads(k)): v for k, v in json.loads(Path(args.conts).read_text()).items()}
    drafter = None if args.alpha is None else PromptOracle(conts, args.alpha)
    engine = Engine(args.serve, n_parallel=args.parallel, n_ctx=1024 * args.parallel, n_threads=args.threads,
                    draft_model=drafter, draft_max=8)
    uvicorn.run(create_app(engine, ServerSettings(model_id="bench")), host="127.0.0.1", port=args.port,
                log_level="warning")


def level(base: str, texts: list[str], n: int) -> tuple[float, list[str]]:
    """All clients at once; (aggregate tokens/s, texts in client order)."""
    out: list = [None] * len(texts)

    def client(i: int) -> None:
        r = httpx.post(base + "/v1/completions", timeout=600, json={
            "prompt": texts[i], "max_tokens": n, "temperature": 0, "logit_bias": NO_END,
            "cache_prompt": False})  # every row prefills its prompts (the plain server has seen them before)
        r.raise_for_status()
        body = r.json()
        out[i] = (body["choices"][0]["text"], body["usage"]["completion_tokens"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - t0
    return sum(o[1] for o in out) / seconds, [o[0] for o in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="bonsai-8b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--alphas", default="1.0,0.8,0.6,0.0")
    ap.add_argument("--clients", default="1,4")
    ap.add_argument("--serve", help=argparse.SUPPRESS)  # internal: the server process
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--parallel", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--conts", help=argparse.SUPPRESS)
    ap.add_argument("--alpha", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_main(args)
        return
    path = model_file(args.shape)
    levels = [int(c) for c in args.clients.split(",")]
    texts = prompts(max(levels))
    with tempfile.TemporaryDirectory() as tmp:
        conts_file = Path(tmp) / "continuations.json"
        conts = continuations(path, texts, args.tokens, args.threads)
        conts_file.write_text(json.dumps({json.dumps(list(k)): v for k, v in conts.items()}))
        plain = Served(path, args.threads, max(levels), conts_file, None)  # up for the whole run
        try:
            level(plain.base, texts[:1], 8)  # warm-up: pages in the weights
            print(f"{path.name}, {args.threads} thread(s), {args.tokens} greedy tokens per client, adaptive draft "
                  f"length (draft_max 8)\n")
            print("| alpha | clients | tok/s | plain tok/s just before | vs plain | drafted | accepted | identical |")
            print("|---|---|---|---|---|---|---|---|")
            for alpha in [float(a) for a in args.alphas.split(",")]:
                for c in levels:
                    served = Served(path, args.threads, max(levels), conts_file, alpha)
                    try:
                        level(served.base, texts[:1], 8)
                        base_rate, base_texts = level(plain.base, texts[:c], args.tokens)
                        rate, got = level(served.base, texts[:c], args.tokens)
                        drafted = served.metric("pybonsai_draft_tokens_total")
                        accepted = served.metric("pybonsai_draft_tokens_accepted_total")
                    finally:
                        served.close()
                    print(f"| {alpha} | {c} | {rate:.2f} | {base_rate:.2f} | {rate / base_rate:.2f}x | {drafted:.0f} | "
                          f"{accepted:.0f} | {got == base_texts} |", flush=True)
        finally:
            plain.close()

if __name__ == "__main__":
    main()
