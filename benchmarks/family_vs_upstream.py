#!/usr/bin/env python3
"""The Bonsai family on our kernels vs unpatched upstream: decode, prefill, bandwidth, memory.

For each model file and thread count, `--reps` alternating rounds of
  - a bandwidth meter reading (benchmarks/bandwidth.c), then upstream `llama-bench -p 64 -n 32`,
  - a meter reading, then `pybonsai bench -p 64 -n 32` (our kernels),
and the medians: tg32 and pp64 tokens/s, ours / upstream, and tg32 against the ceiling of the
reading taken right before it (bytes a decode token moves: decode_vs_bandwidth.bytes_per_token,
which counts a hybrid's KV cache in its attention layers only and its recurrent state read and
written). Last, with `--rss`, the peak RSS of `pybonsai bench -p 64 -n 32 -c 4096 -ctk q8_0
-ctv q8_0 -fa on` next to the file size and the q8_0 KV cache of 4096 cells.

    python benchmarks/family_vs_upstream.py --shapes bonsai-27b,ternary-bonsai-8b,ternary-bonsai-27b \
        --threads 2,1 --reps 1 --rss
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from common import model_file, run_llama_bench, upstream_llama_bench
from decode_vs_bandwidth import bandwidth_tool, bytes_per_token


def ours(model: Path, threads: int, extra: list[str] = (), n_prompt: int = 64, n_gen: int = 32) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "pybonsai.bench", str(model), "-p", str(n_prompt), "-n", str(n_gen), "-t",
                          str(threads), "-r", "1", "--json", *extra], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def kv_q8_bytes(model: Path, n_ctx: int) -> int:
    """q8_0 K and V cache of n_ctx cells in the layers that have one (34 bytes per 32 values)."""
    from pybonsai.gguf_file import scan_gguf

    s = scan_gguf(model)
    meta, arch = s.metadata, s.metadata["general.architecture"]
    n_layer = int(meta[f"{arch}.block_count"])
    n_attn = n_layer - sum(1 for t in s.tensors if t.name.endswith(".ssm_out.weight"))
    per_cell = int(meta[f"{arch}.attention.head_count_kv"]) * int(meta[f"{arch}.attention.key_length"])
    return n_attn * 2 * n_ctx * per_cell * 34 // 32


def recurrent_state_bytes(model: Path) -> int:
    """One sequence's recurrent state (f32): each Gated DeltaNet layer's value heads x head size^2
    and its conv state ((conv width - 1) x conv channels); 0 for a model without one."""
    from pybonsai.gguf_file import scan_gguf

    s = scan_gguf(model)
    meta, arch = s.metadata, s.metadata["general.architecture"]
    n_linear = sum(1 for t in s.tensors if t.name.endswith(".ssm_out.weight"))
    if n_linear == 0:
        return 0
    d_state, v_heads = int(meta[f"{arch}.ssm.state_size"]), int(meta[f"{arch}.ssm.time_step_rank"])
    conv_ch = 2 * d_state * int(meta[f"{arch}.ssm.group_count"]) + d_state * v_heads
    return n_linear * 4 * (v_heads * d_state * d_state + (int(meta[f"{arch}.ssm.conv_kernel"]) - 1) * conv_ch)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="bonsai-27b,ternary-bonsai-8b,ternary-bonsai-27b",
                    help="synthetic shapes (build/models/synth-<shape>.gguf, written if missing)")
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--bw-mib", type=int, default=2048)
    ap.add_argument("--rss", action="store_true", help="also the peak RSS at n_ctx 4096, q8_0 KV cache")
    ap.add_argument("--short", default="", help="shapes measured with -p 16 -n 8 instead of -p 64 -n 32 (both sides): "
                    "upstream's scalar Q2_0 takes minutes per pp64 at the 27B shape")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    upstream, bw_exe = upstream_llama_bench(), bandwidth_tool()
    results = []
    print("| model | threads | upstream tg32 | ours tg32 | tg32 ratio | of ceiling | upstream pp64 | ours pp64 "
          "| pp64 ratio | meter GB/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    short = set(filter(None, args.short.split(",")))
    for shape in args.shapes.split(","):
        model = model_file(shape)
        n_prompt, n_gen = (16, 8) if shape in short else (64, 32)
        pp, tg = f"pp{n_prompt}", f"tg{n_gen}"
        per_token, _ = bytes_per_token(model, depth=n_prompt + n_gen / 2 + 0.5)
        for threads in [int(t) for t in args.threads.split(",") if t]:  # --threads "": RSS only
            up_tg, up_pp, our_tg, our_pp, frac, meter = [], [], [], [], [], []

            def reading() -> float:
                bw = json.loads(subprocess.run([str(bw_exe), str(threads), str(args.bw_mib), "3"], check=True,
                                               capture_output=True, text=True).stdout)["best_gbps"]
                meter.append(bw)
                return bw

            for _ in range(args.reps):
                reading()
                up = run_llama_bench(upstream, model, n_prompt, n_gen, threads)
                up_tg.append(up[tg])
                up_pp.append(up[pp])
                bw = reading()
                rows = {r["test"]: r["tokens_per_s"] for r in ours(model, threads, n_prompt=n_prompt, n_gen=n_gen)}
                our_tg.append(rows[tg])
                our_pp.append(rows[pp])
                frac.append(rows[tg] * per_token / (bw * 1e9))
            med = {k: statistics.median(v) for k, v in
                   dict(up_tg=up_tg, up_pp=up_pp, our_tg=our_tg, our_pp=our_pp, frac=frac).items()}
            print(f"| {shape}{' (pp16/tg8)' if shape in short else ''} | {threads} | {med['up_tg']:.2f} | {med['our_tg']:.2f} | "
                  f"{med['our_tg'] / med['up_tg']:.2f}x | {med['frac']:.0%} | {med['up_pp']:.2f} | "
                  f"{med['our_pp']:.2f} | {med['our_pp'] / med['up_pp']:.2f}x | "
                  f"{min(meter):.1f}-{max(meter):.1f} |", flush=True)
            results.append(dict(shape=shape, threads=threads, n_prompt=n_prompt, n_gen=n_gen,
                                bytes_per_token=per_token, meter_gbps=meter,
                                upstream_tg32=up_tg, upstream_pp64=up_pp, ours_tg32=our_tg, ours_pp64=our_pp,
                                of_ceiling=frac))
    if args.rss:
        print("\n| model | file MiB | q8_0 KV cache (4096 cells) MiB | recurrent state MiB | peak RSS MiB "
              "| RSS - file - KV MiB | RSS - file - KV - state MiB |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for shape in args.shapes.split(","):
            model = model_file(shape)
            row = ours(model, 2, ["-c", "4096", "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on"])[0]
            file_mb, kv_mb = model.stat().st_size / 2**20, kv_q8_bytes(model, 4096) / 2**20  # MiB, as bench
            state_mb = recurrent_state_bytes(model) / 2**20
            print(f"| {shape} | {file_mb:.0f} | {kv_mb:.0f} | {state_mb:.0f} | {row['peak_rss_mb']:.0f} | "
                  f"{row['peak_rss_mb'] - file_mb - kv_mb:.0f} | {row['peak_rss_mb'] - file_mb - kv_mb - state_mb:.0f} |",
                  flush=True)
            results.append(dict(shape=shape, file_mb=file_mb, kv_mb=kv_mb, state_mb=state_mb,
                                peak_rss_mb=row["peak_rss_mb"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
