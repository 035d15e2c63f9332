"""llama-cpp-python's own test suite (tests/*.py of the pinned, hash-checked sdist, taken unchanged
at test time) run against pybonsai through the `llama_cpp` import shim in llama_cpp_suite/, with
its model downloads answered by synthetic models (llama_cpp_suite/plugin.py).

Every test must pass, except those classified in the plugin as needing llama-cpp-python's ctypes
layer or trained weights, and each of those must fail for exactly that reason. Prints the counts
per file."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import lcp_sdist

SUITE_DIR = Path(__file__).resolve().parent / "llama_cpp_suite"
# What the classification in plugin.py amounts to; a change there shows up here.
EXPECTED_XFAIL = {"needs llama-cpp-python's ctypes layer": 1, "needs trained weights": 2}


def _outcomes(junit: Path) -> dict[str, Counter]:
    per_file: dict[str, Counter] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        file = case.get("classname", "").split(".")[-1] + ".py"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif (skipped := case.find("skipped")) is not None:
            outcome = skipped.get("message", "skipped").removeprefix("expected failure: ")
        else:
            outcome = "passed"
        per_file.setdefault(file, Counter())[outcome] += 1
    return per_file


def test_llama_cpp_python_suite_passes_through_the_shim(tmp_path, llama_cpp_dir):
    tests = lcp_sdist.extract_tests(tmp_path / "tests")
    assert {p.name for p in tests} >= {"test_llama.py", "test_llama_chat_format.py", "test_llama_grammar.py",
                                       "test_llama_speculative.py"}
    # The suite opens ./vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf relative to its checkout.
    (tmp_path / "vendor" / "llama.cpp").mkdir(parents=True)
    (tmp_path / "vendor" / "llama.cpp" / "models").symlink_to(llama_cpp_dir / "models")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # none of this repository's settings
    models = tmp_path / "models"
    models.mkdir()
    env = dict(os.environ, PYBONSAI_SUITE_MODELS=str(models),
               PYTHONPATH=os.pathsep.join([str(SUITE_DIR / "shim"), str(SUITE_DIR), os.environ.get("PYTHONPATH", "")]))
    junit = tmp_path / "junit.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "plugin", "-p", "no:cacheprovider", "-q", "-rfE",
                           f"--junitxml={junit}", "tests"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1200)
    per_file = _outcomes(junit) if junit.exists() else {}
    total = sum(per_file.values(), Counter())
    for file, counts in sorted(per_file.items()):
        print(f"{file}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    print("all: " + ", ".join(f"{n} {k}" for k, n in sorted(total.items())))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert total["failed"] == 0 and total["passed"] > 0
    assert {k: total[k] for k in EXPECTED_XFAIL} == EXPECTED_XFAIL, total
