"""Shared fixtures: the llama.cpp tree and a tiny synthetic Q1_0 Qwen3 model."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# With --import-mode=importlib the tests directory is not on sys.path; put it there so that
# test modules can import helpers that live next to them (qwen3_reference).
_TESTS_DIR = str(Path(__file__).resolve().parent)
for _dir in (_TESTS_DIR, str(Path(_TESTS_DIR) / "fuzz")):  # fuzz/: the GGUF document writer
    if _dir not in sys.path:
        sys.path.insert(0, _dir)

from pybonsai import synth  # noqa: E402

TINY_SEED = 0


@pytest.fixture(scope="session")
def llama_cpp_dir() -> Path:
    """The pinned llama.cpp tree; its absence is a broken checkout, so fail (never skip)."""
    beside_tests = Path(__file__).resolve().parents[1] / "vendor" / "llama.cpp"
    if (beside_tests / synth.VOCAB_GGUF).is_file():  # the checkout these tests belong to,
        return beside_tests                          # wherever pytest runs from (cibuildwheel)
    try:
        return synth.find_llama_cpp_dir()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory, llama_cpp_dir: Path) -> Path:
    """The "tiny" synthetic model (seed 0), written once per session."""
    path = tmp_path_factory.mktemp("models") / "tiny-q1_0.gguf"
    return synth.write_model(path, "tiny", seed=TINY_SEED,
                             vocab_gguf=llama_cpp_dir / synth.VOCAB_GGUF,
                             chat_template=(llama_cpp_dir / synth.CHAT_TEMPLATE).read_text("utf-8"))


@pytest.fixture(scope="session")
def tiny_weights(tiny_model_path: Path) -> dict:
    """Dequantized float32 weights (and "hparams") of the tiny model."""
    return synth.read_weights(tiny_model_path)



@pytest.fixture(scope="session")
def mid_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mid-sized model (4 layers of 1024, ~50M Q1_0 weights, ~7 MB) with a ~260-token byte-level
    vocabulary: its prefills take seconds (cancellation can land mid-decode; leaks would show in
    RSS) while a load takes milliseconds (no 152k-token vocabulary), so lifecycle and thread tests
    can load it many times. Token ids must be below MID_VOCAB."""
    from gguf_doc import MID_SHAPE, base_document, serialize

    path = tmp_path_factory.mktemp("models") / "mid-q1_0.gguf"
    path.write_bytes(serialize(base_document(seed=1, shape=MID_SHAPE))[0])
    return path
