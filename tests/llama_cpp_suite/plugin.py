"""pytest plugin that runs llama-cpp-python's own tests against pybonsai (driven by
tests/test_llama_cpp_python_suite.py, which loads it with `-p plugin` and puts the `llama_cpp`
import shim from shim/ on the path).

- `huggingface_hub.hf_hub_download` answers the suite's model downloads with synthetic models of
  the same kind (pybonsai.synth; random weights, real tokenizers), written once per run into
  $PYBONSAI_SUITE_MODELS.
- Tests that cannot pass here are classified, and each must fail for exactly its class's reason,
  else it counts as a plain failure: "ctypes" (it calls llama-cpp-python's ctypes layer, which
  pybonsai does not provide: the shim raises CtypesLayerNotProvided) and "trained weights" (it
  asserts a trained model's text: the AssertionError must quote that text). They are reported as
  xfailed with the class as the reason.
"""
from __future__ import annotations

import os
from pathlib import Path

import huggingface_hub
import pytest

from pybonsai import synth

# (repo_id, filename) the suite downloads -> the synthetic shape that stands in for it.
STAND_INS = {
    ("lmstudio-community/Qwen3.5-0.8B-GGUF", "Qwen3.5-0.8B-Q8_0.gguf"): "tiny-hybrid",    # qwen35 hybrid
    ("ggml-org/models", "tinyllamas/stories15M-q4_0.gguf"): "tiny",                       # a transformer
    ("CompendiumLabs/bge-small-en-v1.5-gguf", "bge-small-en-v1.5-q4_k_m.gguf"): "tiny-embed",  # pooled
    ("QuantFactory/mamba-130m-hf-GGUF", "mamba-130m-hf.Q2_K.gguf"): "tiny-mamba",         # recurrent
    ("tiiuae/Falcon-H1-Tiny-90M-Instruct-GGUF", "Falcon-H1-Tiny-90M-Instruct-Q2_K.gguf"): "tiny-hybrid",
}
MODELS_DIR = Path(os.environ.get("PYBONSAI_SUITE_MODELS", "."))

CTYPES = "needs llama-cpp-python's ctypes layer"
TRAINED = "needs trained weights"
# test id -> (class, for "trained weights": the trained model's text its failing assertion quotes)
CLASSIFIED = {
    "test_llama.py::test_real_model": (CTYPES, None),
    "test_llama.py::test_real_llama": (TRAINED, " jumps over the lazy dog."),
    "test_llama.py::test_real_llama_repeated_prompt_cache": (TRAINED, " jumps over the lazy dog."),
}


def fake_hf_hub_download(repo_id: str, filename: str, *args, **kwargs) -> str:
    shape = STAND_INS.get((repo_id, filename))
    if shape is None:
        raise LookupError(f"no synthetic stand-in for {repo_id}/{filename}")
    path = MODELS_DIR / f"{shape}.gguf"
    if not path.exists():
        synth.write_model(path, shape, seed=0)
    return str(path)


huggingface_hub.hf_hub_download = fake_hf_hub_download


def _classified(item) -> tuple:
    key = item.nodeid.split("/")[-1]
    return CLASSIFIED.get(key, (None, None))


def _fails_for_its_class(kind: str, quote, excinfo) -> bool:
    if kind == CTYPES:
        return type(excinfo.value).__name__ == "CtypesLayerNotProvided"
    return excinfo.errisinstance(AssertionError) and repr(quote) in str(excinfo.value)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    kind, quote = _classified(item)
    if kind is None or report.when != "call":
        return
    if report.failed and _fails_for_its_class(kind, quote, call.excinfo):
        report.outcome = "skipped"
        report.wasxfail = kind
    elif report.passed:  # a classified test that passes: the classification is wrong
        report.outcome = "failed"
        report.longrepr = f"classified as '{kind}' but passed: remove it from CLASSIFIED"
