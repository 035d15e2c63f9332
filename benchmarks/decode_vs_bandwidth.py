#!/usr/bin/env python3
"""Decode speed against the machine's memory-bandwidth ceiling and against upstream, one run.

For each thread count, alternating repetitions of
  - upstream  : unpatched upstream `llama-bench -p 0 -n 32` (build_upstream.sh),
  - bench     : `pybonsai bench -p 0 -n 32` (our kernels, a token per eval() call, no sampling),
  - api       : tg32 through the public API: streamed `create_completion`, greedy, time of
                max_tokens=33 minus max_tokens=1 (same prompt, cache reset), so prompt and first
                token are excluded and sampling, detokenizing and streaming are included,
and for every kernel variant asked for (`--variants`: auto = the default choice, mul = the
multiply path only (PYBONSAI_Q1_LUT_MAX=0), lut = the table path up to 8 tokens
(PYBONSAI_Q1_LUT_MAX=8), avx2 = PYBONSAI_Q1_KERNEL=avx2 (its default table limit), avx2mul =
the AVX2 multiply path only, smallpages = the default on 4 KiB pages (PYBONSAI_HUGEPAGES=0),
nofa = the default kernels with flash attention off (every other variant runs llama.cpp's default
"auto", on for the CPU, as upstream llama-bench does)).
The ceiling is bandwidth (benchmarks/bandwidth.c, a streaming read over 2 GiB with that many
threads) / bytes read per token: every weight a token reads (all matrices incl.
the LM head, norms, one embedding row) plus the f16 KV cache at the mean depth of tg32. The
2-core test machines share their memory system with other tenants, and the meter read 41 and
72 GB/s within one 3-minute run; so the meter runs again right before every measurement, and
"of ceiling" is the median over repetitions of each measurement against its own adjacent reading
(the header gives the spread of all readings).
Multi-column: `pybonsai bench -p N -n 0` for N = 2, 4, 8, 16 (N tokens per decode call read the
weights once), reported as tokens/s next to tg.

    python benchmarks/decode_vs_bandwidth.py --model bonsai-8b.gguf --threads 1,2 --reps 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

from common import ROOT, model_file, run_llama_bench, upstream_llama_bench

API_CHILD = textwrap.dedent("""
    import json, sys, time
    from pybonsai import Llama
    model, threads, reps, fa = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    llm = Llama(model, n_ctx=256, n_threads=threads, n_threads_batch=threads, verbose=False, flash_attn=fa)
    ban = {str(t): -100.0 for t in range(llm.n_vocab()) if llm.model.is_eog(t)}

    def run(n):
        llm.reset()
        start = time.perf_counter()
        last = None
        for chunk in llm.create_completion("The capital of France is", max_tokens=n, stream=True,
                                           temperature=0.0, logit_bias=ban):
            last = chunk
        assert last["choices"][0]["finish_reason"] == "length", last
        return time.perf_counter() - start

    run(4)
    rates = []
    for _ in range(reps):
        t1 = run(1)
        t33 = run(33)
        rates.append(32 / (t33 - t1))
    print(json.dumps(rates))
""")


def bandwidth_tool() -> Path:
    exe = ROOT / "build" / "bench-tools" / "bandwidth"
    src = ROOT / "benchmarks" / "bandwidth.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        exe.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([os.environ.get("CC", "cc"), "-O3", "-march=native", "-pthread", str(src), "-o", str(exe)],
                       check=True)
    return exe


def bytes_per_token(model: Path, depth: float) -> tuple[float, dict]:
    """Bytes a decode step moves: all tensors but the embedding table (one row of it), plus the
    f16 KV cache of the attention layers at `depth`; the embedding table counts whole when it is
    also the LM head. A qwen35 hybrid keeps a KV cache in its full-attention layers only, and its
    Gated DeltaNet layers read and write their f32 recurrent state (value heads x head size^2) and
    conv state ((conv width - 1) x conv channels) every token: counted twice (read + write)."""
    from pybonsai.gguf_file import scan_gguf

    summary = scan_gguf(model)
    tensors = {t.name: t for t in summary.tensors}
    meta = summary.metadata
    arch = meta["general.architecture"]

    def field(key):
        return int(meta[f"{arch}.{key}"])

    emb = tensors["token_embd.weight"]
    tied = "output.weight" not in tensors
    weights = sum(int(t.n_bytes) for n, t in tensors.items() if n != "token_embd.weight")
    weights += int(emb.n_bytes) if tied else int(emb.n_bytes) // int(emb.shape[-1])
    n_layer, n_head_kv = field("block_count"), field("attention.head_count_kv")
    head_dim = field("attention.key_length") if f"{arch}.attention.key_length" in meta else \
        field("embedding_length") // field("attention.head_count")
    n_attn, state = n_layer, 0
    if arch == "qwen35":
        n_linear = sum(1 for n in tensors if n.endswith(".ssm_out.weight"))
        n_attn = n_layer - n_linear
        d_state, v_heads = field("ssm.state_size"), field("ssm.time_step_rank")
        conv_ch = 2 * d_state * field("ssm.group_count") + d_state * v_heads
        state = 2 * n_linear * 4 * (v_heads * d_state * d_state + (field("ssm.conv_kernel") - 1) * conv_ch)
    kv = n_attn * n_head_kv * head_dim * 2 * 2 * depth
    return weights + kv + state, {"weights_bytes": weights, "kv_bytes_at_mean_depth": kv,
                                  "recurrent_state_bytes_read_and_written": state, "tied_embeddings": tied}


def run_ours_bench(model: Path, threads: int, env: dict, fa: str, prompt: str, gen: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "pybonsai", "bench", str(model), "-p", prompt, "-n", gen,
                          "-t", str(threads), "-r", "1", "-fa", fa, "--json"], check=True, capture_output=True,
                         text=True, env=env).stdout
    return {r["test"]: r["tokens_per_s"] for r in json.loads(out)}


def run_api(model: Path, threads: int, env: dict, fa: str, reps: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", API_CHILD, str(model), str(threads), str(reps), fa], check=True,
                         capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


VARIANTS = {"auto": {}, "mul": {"PYBONSAI_Q1_LUT_MAX": "0"}, "lut": {"PYBONSAI_Q1_LUT_MAX": "8"},
            "avx2": {"PYBONSAI_Q1_KERNEL": "avx2"},
            "avx2mul": {"PYBONSAI_Q1_KERNEL": "avx2", "PYBONSAI_Q1_LUT_MAX": "0"},
            "smallpages": {"PYBONSAI_HUGEPAGES": "0"}, "nofa": {}}
FLASH_ATTN = {"nofa": "off"}  # the variants that change -fa (default: auto)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="GGUF (default: the Bonsai-8B-shaped synthetic file)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", default="auto,mul,avx2", help=f"kernel variants: {', '.join(VARIANTS)}")
    ap.add_argument("--columns", default="2,4,8,16", help="multi-column sizes (pp N), '' for none")
    ap.add_argument("--bw-mib", type=int, default=2048)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    model = args.model or model_file("bonsai-8b")
    variants = args.variants.split(",")
    columns = [c for c in args.columns.split(",") if c]
    per_token, detail = bytes_per_token(model, depth=16.5)
    upstream = upstream_llama_bench()
    bw_exe = bandwidth_tool()
    result: dict = {"model": str(model), "bytes_per_token": per_token, **detail, "threads": {}}
    print(f"{model.name}: {per_token / 1e9:.4f} GB read per token (weights {detail['weights_bytes'] / 1e9:.4f} GB)")
    for threads in [int(t) for t in args.threads.split(",")]:
        readings: list[float] = []

        def ceiling_now() -> float:
            """Tokens/s the memory system allows right now (a short meter run)."""
            bw = json.loads(subprocess.run([str(bw_exe), str(threads), str(args.bw_mib), "3"], check=True,
                                           capture_output=True, text=True).stdout)["best_gbps"]
            readings.append(bw)
            return bw * 1e9 / per_token

        rows: dict[str, list[float]] = {}
        fractions: dict[str, list[float]] = {}

        def record(name: str, value: float, ceiling: float) -> None:
            rows.setdefault(name, []).append(value)
            fractions.setdefault(name, []).append(value / ceiling)

        for _ in range(args.reps):
            ceiling = ceiling_now()
            record("upstream llama-bench tg32", run_llama_bench(upstream, model, 0, 32, threads)["tg32"], ceiling)
            for v in variants:
                env, fa = dict(os.environ, **VARIANTS[v]), FLASH_ATTN.get(v, "auto")
                ceiling = ceiling_now()
                rates = run_ours_bench(model, threads, env, fa, ",".join(["0", *columns]), "32")
                record(f"[{v}] pybonsai bench tg32", rates["tg32"], ceiling)
                for c in columns:
                    record(f"[{v}] pybonsai bench pp{c} ({c} columns)", rates[f"pp{c}"], ceiling)
                ceiling = ceiling_now()
                record(f"[{v}] API create_completion stream tg32", run_api(model, threads, env, fa, 1)[0], ceiling)
        med = {k: statistics.median(v) for k, v in rows.items()}
        of_ceiling = {k: statistics.median(v) for k, v in fractions.items()}
        up = med["upstream llama-bench tg32"]
        print(f"\n{threads} thread(s): {len(readings)} meter readings, one before each measurement: "
              f"{min(readings):.2f}-{max(readings):.2f} GB/s (median {statistics.median(readings):.2f})")
        print("| measurement | tok/s (median) | of ceiling (median, adjacent reading) | vs upstream tg32 |")
        print("|---|---:|---:|---:|")
        for k, v in med.items():
            print(f"| {k} | {v:.2f} | {of_ceiling[k]:.0%} | {v / up:.2f}x |")
        for v in variants:
            api, bench = med[f"[{v}] API create_completion stream tg32"], med[f"[{v}] pybonsai bench tg32"]
            print(f"[{v}] API / bench: {api / bench:.3f}" + "".join(
                f"; pp{c}/tg32 {med[f'[{v}] pybonsai bench pp{c} ({c} columns)'] / bench:.2f}x" for c in columns))
        result["threads"][threads] = {"bandwidth_gbps_readings": readings, "samples": rows,
                                      "of_ceiling_samples": fractions, "median": med, "of_ceiling": of_ceiling}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
