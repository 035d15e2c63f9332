#!/usr/bin/env bash
# Build unpatched upstream llama.cpp (the pinned commit) with llama-bench, once, cached under
# build/upstream/. Prints the path of llama-bench. Same CPU flags as our native build.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/build/upstream/src"
out="$root/build/upstream/build"
bench="$out/bin/llama-bench"
if [ ! -x "$bench" ]; then
  python3 "$root/vendor/fetch_llama_cpp.py" --dest "$src" --no-patches >&2
  cmake -S "$src" -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_OPENSSL=OFF >&2
  cmake --build "$out" --target llama-bench -j "$(nproc)" >&2
fi
echo "$bench"
