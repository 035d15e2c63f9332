#!/bin/sh
# Q2_0 vs Q1_0 decode GEMV (one token, one thread, weights from DRAM) against the read meter, in one
# run: ROUNDS times, alternating, a bandwidth.c reading (1 thread), then q1_0_kernel_bench.c for
# Q1_0 and for Q2_0 (Q1K_BENCH_TYPE=q2_0) on the table and the multiply path. Compare medians.
#   sh benchmarks/q2_0_kernel_bench.sh [K] [ROWS] [ROUNDS]      (default: the 8B ffn_up, 4096 12288 3)
# Q1K_BENCH_KERNEL=avx2 for the AVX2 kernels (default avx512); Q1K_BENCH_GHZ for the cycle figures.
set -e
K=${1:-4096}
ROWS=${2:-12288}
ROUNDS=${3:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/build/bench"
SRC="$ROOT/csrc/kernels/cpu"
mkdir -p "$OUT"
cc -O3 -march=native -pthread "$ROOT/benchmarks/bandwidth.c" -o "$OUT/bandwidth"
cc -O2 -march=native -I"$SRC" "$ROOT/benchmarks/q1_0_kernel_bench.c" "$SRC/q1_0_scalar.c" "$SRC/q1_0_dispatch.c" \
    "$SRC/q2_0_kernels.c" -x c++ "$SRC/q1_0_avx2.cpp" "$SRC/q1_0_avx512.cpp" "$SRC/q1_0_lut_avx512.cpp" \
    "$SRC/q1_0_lut_avx2.cpp" -x none -lstdc++ -lm -o "$OUT/q1k_bench" 2>/dev/null
# enough copies of the matrix, used in turn, to exceed a 32 MiB last-level cache several times
for r in $(seq "$ROUNDS"); do
    echo "round $r meter: $("$OUT/bandwidth" 1 1024 3)"
    for path in 1 0; do
        Q1K_BENCH_TYPE=q1_0 "$OUT/q1k_bench" "$K" "$ROWS" 1 40 "$path" 16
        Q1K_BENCH_TYPE=q2_0 "$OUT/q1k_bench" "$K" "$ROWS" 1 40 "$path" 8
    done
done
echo "final meter: $("$OUT/bandwidth" 1 1024 3)"
