#!/usr/bin/env bash
# Build unpatched upstream llama.cpp (the pinned commit) once, cached under build/upstream/, and
# print the path of the tool asked for: llama-bench (default) or llama-server
# (`build_upstream.sh llama-server`, no web UI). Same CPU flags as our native build.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${1:-llama-bench}"
case "$target" in llama-bench|llama-server) ;; *) echo "usage: $0 [llama-bench|llama-server]" >&2; exit 2;; esac
src="$root/build/upstream/src"
out="$root/build/upstream/build"
tool="$out/bin/$target"
if [ ! -x "$tool" ]; then
  [ -f "$src/CMakeLists.txt" ] || python3 "$root/vendor/fetch_llama_cpp.py" --dest "$src" --no-patches >&2
  cmake -S "$src" -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_OPENSSL=OFF >&2
  cmake --build "$out" --target "$target" -j "$(nproc)" >&2
fi
echo "$tool"
