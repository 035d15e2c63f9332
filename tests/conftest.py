"""Shared fixtures: the llama.cpp tree and the tiny synthetic models (Qwen3 and the qwen35 hybrid,
Q1_0 and ternary Q2_0)."""
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


def _write_synthetic(tmp_path_factory: pytest.TempPathFactory, llama_cpp_dir: Path, shape: str) -> Path:
    """A synthetic model of `shape` (seed TINY_SEED) with its architecture's tokenizer and template."""
    vocab, template = synth.ARCH_FILES[synth.SHAPES[shape].arch]
    path = tmp_path_factory.mktemp("models") / f"{shape}.gguf"
    return synth.write_model(path, shape, seed=TINY_SEED, vocab_gguf=llama_cpp_dir / vocab,
                             chat_template=(llama_cpp_dir / template).read_text("utf-8"))


def _synthetic_fixtures(shape: str, what: str) -> tuple:
    """Session fixtures (model path, dequantized weights) for a synthetic shape."""
    @pytest.fixture(scope="session")
    def model_path(tmp_path_factory: pytest.TempPathFactory, llama_cpp_dir: Path) -> Path:
        return _write_synthetic(tmp_path_factory, llama_cpp_dir, shape)

    def weights(request: pytest.FixtureRequest) -> dict:
        return synth.read_weights(request.getfixturevalue(fixture_name + "_model_path"))

    fixture_name = shape.replace("-", "_")
    model_path.__doc__ = f'The "{shape}" synthetic model ({what}, seed 0), written once per session.'
    weights.__doc__ = f'Dequantized float32 weights (and "hparams") of the "{shape}" model.'
    return model_path, pytest.fixture(scope="session")(weights)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory, llama_cpp_dir: Path) -> Path:
    """The "tiny" synthetic model (Qwen3, Q1_0, seed 0), written once per session."""
    return _write_synthetic(tmp_path_factory, llama_cpp_dir, "tiny")


@pytest.fixture(scope="session")
def tiny_weights(tiny_model_path: Path) -> dict:
    """Dequantized float32 weights (and "hparams") of the tiny model."""
    return synth.read_weights(tiny_model_path)


ternary_tiny_model_path, ternary_tiny_weights = _synthetic_fixtures("ternary-tiny", "Qwen3, Q2_0")
tiny_hybrid_model_path, tiny_hybrid_weights = _synthetic_fixtures(
    "tiny-hybrid", "qwen35: 3 Gated DeltaNet layers and 1 gated attention layer, Q1_0")
ternary_tiny_hybrid_model_path, ternary_tiny_hybrid_weights = _synthetic_fixtures(
    "ternary-tiny-hybrid", "qwen35 as tiny-hybrid, Q2_0")
tiny_bonsai2_model_path, tiny_bonsai2_weights = _synthetic_fixtures(
    "tiny-bonsai2", "Bonsai 2: qwen35 as tiny-hybrid, PQ2_0 with PTQ1_0 FFN weights, the Hadamard fold")


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


@pytest.fixture(scope="session")
def wide_model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One layer with a wide FFN (3 Q1_0 matrices of 16M weights) and the ~260-token vocabulary of
    mid_model_path (token ids below 250): a prompt's prefill in one ubatch is a few long nodes."""
    from gguf_doc import Shape, base_document, serialize

    shape = Shape(n_embd=1024, n_layer=1, n_head=8, n_head_kv=4, head_dim=128, n_ff=16384)
    path = tmp_path_factory.mktemp("models") / "wide-ffn-q1_0.gguf"
    path.write_bytes(serialize(base_document(seed=3, shape=shape))[0])
    return str(path)
