"""Noisy neighbours (issue 28): how long a 60-token victim completion takes on `pybonsai serve`
alone, and beside each hostile request (and beside heavy requests within the limits).

    python benchmarks/noisy_neighbour.py [--model tiny.gguf] [--threads 1] [--reps 3]

For each neighbour and repetition: the victim alone, then the neighbour is sent and the victim
starts once it is in flight (0.1 s later, or at once when it was already answered; the long
neighbours generate 1,000 tokens, so that they outlast the victim: the "overlap" column says in how
many repetitions the neighbour was still running when the victim ended); the ratio is
the median over `reps` of (victim beside / victim alone just before), so that a shared machine's
changing load moves both alike. A refused neighbour's status and
answer time are reported. The server's RSS is sampled every 20 ms: peak over the run vs idle
(after start-up). Target: victim <= 1.5x alone beside every neighbour, or the neighbour refused
(4xx) within 100 ms; peak RSS <= 1.2x idle. Default model: the tiny synthetic Qwen3 (Q1_0, the
Qwen vocabulary) written to build/models/."""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402
from serve_concurrency import _free_port  # noqa: E402

LONG = 1000  # tokens of the long neighbours
VICTIM = {"prompt": "Story number 7: once upon a time", "max_tokens": 60, "temperature": 0,
          "logit_bias": {"151643": -100, "151645": -100}}  # no early end of text: always 60 tokens


def tiny_model() -> Path:
    from pybonsai import synth

    path = ROOT / "build" / "models" / "noisy-tiny.gguf"
    if not path.exists():
        src = synth.find_llama_cpp_dir()
        vocab, template = synth.ARCH_FILES[synth.SHAPES["tiny"].arch]
        path.parent.mkdir(parents=True, exist_ok=True)
        synth.write_model(path, "tiny", seed=0, vocab_gguf=src / vocab, chat_template=(src / template).read_text())
    return path


def neighbours() -> list[tuple[str, str, dict]]:
    alternatives = " | ".join(f'"w{i}"' for i in range(40_000))
    enum = {"type": "json_schema", "json_schema": {"name": "e", "schema": {"enum": [f"v{i}" for i in range(40_000)]}}}
    json_gbnf = (ROOT / "vendor" / "llama.cpp" / "grammars" / "json.gbnf").read_text()
    long = {"prompt": "Story number 3: once upon a time", "max_tokens": LONG, "temperature": 0,
            "logit_bias": VICTIM["logit_bias"]}
    chat = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " * 20} for i in range(4000)]
    return [
        ("logprobs=200000", "/v1/completions", {**long, "logprobs": 200_000}),
        ("300,000 stop strings", "/v1/completions", {**long, "stop": [f"s{i}" for i in range(300_000)]}),
        ("grammar of 40,000 alternatives", "/v1/completions", {**long, "grammar": f"root ::= {alternatives}"}),
        ("response_format enum of 40,000", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": "pick"}], "max_tokens": 50, "response_format": enum}),
        ("3.5 MB prompt", "/v1/completions", {"prompt": "word " * 700_000, "max_tokens": 2}),
        ("4,000-message chat", "/v1/chat/completions", {"messages": chat, "max_tokens": 2}),
        ("reference: a plain 1,000-token completion", "/v1/completions", long),
        ("within limits: logprobs=5, 1,000 tokens", "/v1/completions", {**long, "logprobs": 5}),
        ("within limits: 4 stops of 256 chars", "/v1/completions",
         {**long, "stop": [c * 256 for c in "qxzj"]}),
        ("within limits: json.gbnf grammar", "/v1/completions", {**long, "grammar": json_gbnf}),
        ("within limits: grammar [a-z ]+, 1,000 tokens", "/v1/completions",
         {**long, "grammar": "root ::= [a-z ]+", "logit_bias": VICTIM["logit_bias"]}),
        ("within limits: sampled grammar [a-z ]+, 100 tokens", "/v1/completions",  # a full mask most tokens
         {**long, "max_tokens": 100, "temperature": 0.8, "seed": 1, "grammar": "root ::= [a-z ]+"}),
    ]


class Server:
    def __init__(self, model: Path, threads: int):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "pybonsai.server", "-m", str(model), "--port",
                                      str(self.port), "--threads", str(threads), "--parallel", "4", "--n-ctx", "8192",
                                      "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        self.peak = self.rss()
        self._sampling = True
        threading.Thread(target=self._sample, daemon=True).start()

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _sample(self) -> None:
        while self._sampling and self.proc.poll() is None:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def stop(self) -> None:
        self._sampling = False
        self.proc.terminate()
        self.proc.wait(60)


def victim_time(base: str) -> float:
    t0 = time.monotonic()
    r = httpx.post(base + "/v1/completions", json=VICTIM, timeout=600)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 60, r.text[:300]
    return elapsed


def beside(base: str, path: str, body: dict) -> tuple[float, int, float, bool]:
    """(victim seconds, neighbour status, neighbour answer seconds, whether the neighbour was still
    running when the victim ended) with the neighbour in flight."""
    out: dict = {}
    raw = json.dumps(body).encode("utf-8")

    def send() -> None:
        t0 = time.monotonic()
        with httpx.Client(timeout=600) as http:
            r = http.post(base + path, content=raw, headers={"Content-Type": "application/json"})
        out["status"], out["seconds"], out["end"] = r.status_code, time.monotonic() - t0, time.monotonic()

    t = threading.Thread(target=send)
    t.start()
    deadline = time.monotonic() + 0.1
    while t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    victim = victim_time(base)
    victim_end = time.monotonic()
    t.join()
    return victim, out["status"], out["seconds"], out["end"] > victim_end


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="", help="run the neighbours whose name contains this text")
    args = ap.parse_args()
    server = Server(args.model or tiny_model(), args.threads)
    try:
        victim_time(server.base)  # warm-up
        idle = server.rss()
        alone = statistics.median(victim_time(server.base) for _ in range(args.reps))
        print(f"victim alone: {alone * 1000:.0f} ms (median of {args.reps}); server RSS idle {idle / 2**20:.0f} MiB")
        print("\n| neighbour | its answer | its time | victim | victim / alone just before | overlap | peak RSS / idle |")
        print("|---|---|---|---|---|---|---|")
        peak = server.peak
        for name, path, body in neighbours():
            if args.only not in name:
                continue
            server.peak = server.rss()
            runs, ratios = [], []
            for _ in range(args.reps):  # each beside-run right after an alone-run: the machine's load
                before = victim_time(server.base)  # changes less between the two
                runs.append(beside(server.base, path, body))
                ratios.append(runs[-1][0] / before)
            victim = statistics.median(r[0] for r in runs)
            status, seconds = runs[-1][1], statistics.median(r[2] for r in runs)
            print(f"| {name} | {status} | {seconds * 1000:.0f} ms | {victim * 1000:.0f} ms | "
                  f"{statistics.median(ratios):.2f}x | {sum(r[3] for r in runs)}/{len(runs)} | "
                  f"{server.peak / idle:.2f}x |", flush=True)
            peak = max(peak, server.peak)
        print(f"\npeak server RSS over the run {peak / 2**20:.0f} MiB = {peak / idle:.2f}x idle")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
