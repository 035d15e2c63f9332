"""Multi-turn chat: time to first token per turn with prompt-prefix reuse on and off, against
upstream llama-server at the same pin (its defaults: cache_prompt on, --cache-ram 8192).

    python benchmarks/chat_turns.py [--model F.gguf | --shape bonsai-8b] --threads 2 \
        [--turns 8 --user-tokens 150 --gen 64 --conversations 1,4] [--servers ours,ours-nocache,llama-server]

Each conversation sends, turn after turn, its whole history (the previous user messages and the
replies it got) plus a new ~`user-tokens` user message, streaming `gen` greedy tokens; with 4
conversations they run interleaved (each waits only for its own replies). Every server runs with
4 sequences (--parallel 4) of 3,072 tokens. "ours-nocache" is our server with every request sending
`cache_prompt: false` (a whole prefill each turn). "alone" is the time our server takes for the
first token of a fresh prompt as long as what it decoded of that turn's prompt (one conversation;
from /metrics: the prompt tokens not found in the cache), so the target reads: turn-N TTFT <= 1.5x
alone (4 conversations: against the same per-turn figure).
The synthetic models have random weights: the replies are arbitrary tokens, which is all a
prefill-time benchmark needs. Prints one markdown table per conversation count (median TTFT of
the conversations at each turn)."""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, model_file  # noqa: E402
from serve_concurrency import Server  # noqa: E402

SLOTS, CTX_PER_SEQ = 4, 3072


def commands(args, model: Path) -> dict[str, list[str]]:
    ctx = str(SLOTS * CTX_PER_SEQ)
    ours = [sys.executable, "-m", "pybonsai.server", "-m", str(model), "--parallel", str(SLOTS), "--n-ctx", ctx,
            "--threads", str(args.threads), "--log-level", "warning", "--alias", "m"]
    return {"ours": ours, "ours-nocache": ours,
            "llama-server": [args.llama_server, "-m", str(model), "-t", str(args.threads), "-tb", str(args.threads),
                             "--parallel", str(SLOTS), "-c", ctx, "-ngl", "0", "--alias", "m", "--no-webui"]}


# Common English words that are one token each (with their leading space) in the Qwen vocabularies,
# so that a message of n words is ~n tokens (digits are one token each there: "item123" is 4).
WORDS = ("the of and to in is was for on that with as by at from his it an were are which this be or has had "
         "not but first one their its new after who they have her she two been other when there all during into "
         "school time may years more most only over city some world would where later up such used many can "
         "state about national out known university united then made").split()


def user_message(conv: int, turn: int, n_tokens: int) -> str:
    words = (WORDS[(conv * 131 + turn * 17 + j * 7) % len(WORDS)] for j in range(max(1, n_tokens - 10)))
    return f"Conversation {conv}, question {turn}: " + " ".join(words)


async def chat_turn(http: httpx.AsyncClient, url: str, messages: list, gen: int, cache: bool) -> tuple[float, str]:
    body = {"model": "m", "messages": messages, "max_tokens": gen, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    if not cache:
        body["cache_prompt"] = False
    t0 = time.perf_counter()
    first, parts = None, []
    async with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread()).decode(errors='replace')[:500]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                text = (delta.get("content") or "") + (delta.get("reasoning_content") or "")
                if text:
                    first = first or time.perf_counter()
                    parts.append(delta.get("content") or "")
    return (first or time.perf_counter()) - t0, "".join(parts)


async def conversation(http, url: str, conv: int, args, cache: bool, decoded: list | None) -> list[float]:
    """One conversation's TTFTs; with `decoded` (our server, one conversation at a time) also the
    prompt tokens each turn decoded, from /metrics."""
    messages, ttfts = [], []
    for turn in range(args.turns):
        messages.append({"role": "user", "content": user_message(conv, turn, args.user_tokens)})
        before = await asyncio.to_thread(_metrics, url) if decoded is not None else None
        ttft, reply = await chat_turn(http, url, messages, args.gen, cache)
        if decoded is not None:
            decoded.append((await asyncio.to_thread(_metrics, url))["prompt_tokens_total"] - before["prompt_tokens_total"])
        ttfts.append(ttft)
        messages.append({"role": "assistant", "content": reply})
    return ttfts


async def run(url: str, n_conv: int, args, cache: bool, salt: int, decoded: list | None) -> list[list[float]]:
    # A new connection per request: llama-server may close an idle keep-alive connection just as the
    # next turn is sent on it ("Server disconnected without sending a response").
    async with httpx.AsyncClient(timeout=httpx.Timeout(3600.0), limits=httpx.Limits(max_keepalive_connections=0)) as http:
        return list(await asyncio.gather(*(conversation(http, url, salt + c, args, cache, decoded if n_conv == 1 else None)
                                          for c in range(n_conv))))


async def alone(url: str, n_tokens: int) -> float:
    """TTFT of a fresh token prompt of n_tokens (cache off) on our server."""
    prompt = [1000 + (i * 37) % 5000 for i in range(max(1, n_tokens))]
    body = {"model": "m", "prompt": prompt, "max_tokens": 1, "temperature": 0, "stream": True, "cache_prompt": False}
    async with httpx.AsyncClient(timeout=httpx.Timeout(3600.0)) as http:
        t0 = time.perf_counter()
        async with http.stream("POST", url + "/v1/completions", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if line.startswith("data: ") and '"text"' in line:
                    return time.perf_counter() - t0
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="GGUF file (default: the synthetic --shape)")
    p.add_argument("--shape", default="bonsai-8b")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--turns", type=int, default=8)
    p.add_argument("--user-tokens", type=int, default=150)
    p.add_argument("--gen", type=int, default=64)
    p.add_argument("--conversations", default="1,4")
    p.add_argument("--servers", default="ours,ours-nocache,llama-server")
    p.add_argument("--llama-server", default=None, help="upstream llama-server (default: build_upstream.sh's)")
    args = p.parse_args()
    model = args.model or model_file(args.shape)
    names = args.servers.split(",")
    if "llama-server" in names and args.llama_server is None:
        import subprocess
        args.llama_server = subprocess.run([str(ROOT / "benchmarks" / "build_upstream.sh"), "llama-server"],
                                           check=True, capture_output=True, text=True).stdout.strip()
    log_dir = ROOT / "build" / "bench-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    cmds = commands(args, model)
    levels = [int(x) for x in args.conversations.split(",")]
    table: dict[tuple[str, int], list[list[float]]] = {}
    decoded: list[float] = []  # prompt tokens our server decoded per turn (one conversation, cache on)
    alone_ttft: list[float] = []
    for name in names:
        server = Server(name, cmds[name], log_dir, {})
        try:
            server.wait_ready()
            for i, n in enumerate(levels):
                mine = decoded if name == "ours" and not decoded else None
                table[(name, n)] = asyncio.run(run(server.url, n, args, name != "ours-nocache", 100 * (i + 1), mine))
                ttfts = [f"{statistics.median(c[t] for c in table[(name, n)]):.2f}" for t in range(args.turns)]
                print(f"{name} x{n}: median TTFT per turn {' '.join(ttfts)}", file=sys.stderr, flush=True)
            if name == "ours" and decoded:  # the prefill-alone reference, on the same server
                alone_ttft = [asyncio.run(alone(server.url, int(c))) for c in decoded]
        finally:
            server.stop()
    for n in levels:
        print(f"\n{n} conversation(s), {args.turns} turns, ~{args.user_tokens} new user tokens and {args.gen} "
              f"generated per turn; {model.name}, {args.threads} threads; median TTFT (s) per turn\n")
        head = ["turn", *names] + (["decoded tokens (ours)", "alone (s)", "ours / alone"] if alone_ttft else [])
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for t in range(args.turns):
            row = [str(t + 1)] + [f"{statistics.median(c[t] for c in table[(name, n)]):.2f}" for name in names]
            if alone_ttft:
                ours = statistics.median(c[t] for c in table[("ours", n)])
                row += [f"{decoded[t]:.0f}", f"{alone_ttft[t]:.2f}", f"{ours / alone_ttft[t]:.2f}"]
            print("| " + " | ".join(row) + " |")
    return 0


def _metrics(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^pybonsai_(\w+) (\S+)$", text, re.M)}


if __name__ == "__main__":
    sys.exit(main())
