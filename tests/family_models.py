"""Synthetic models of the rest of the Bonsai family, as session fixtures: import them into a test
module with `from family_models import hybrid_model_path, ternary_model_path  # noqa: F401`.

- `hybrid_model_path`: shape "tiny-hybrid" (qwen35, Q1_0: 3 Gated DeltaNet layers + 1 gated
  attention layer), the Bonsai 27B architecture at test size;
- `ternary_model_path`: shape "ternary-tiny" (qwen3, Q2_0), the ternary Bonsai 1.7B-8B format;
- `ternary_hybrid_model_path`: shape "ternary-tiny-hybrid" (qwen35, Q2_0), Ternary Bonsai 27B.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pybonsai import synth


_written: dict[str, Path] = {}  # shape -> file: one per session, whichever modules import the fixtures


def _write(factory: pytest.TempPathFactory, llama_cpp_dir: Path, shape: str) -> Path:
    if shape not in _written or not _written[shape].is_file():
        vocab, template = synth.ARCH_FILES[synth.SHAPES[shape].arch]
        path = factory.mktemp("family") / f"{shape}.gguf"
        _written[shape] = synth.write_model(path, shape, seed=0, vocab_gguf=llama_cpp_dir / vocab,
                                            chat_template=(llama_cpp_dir / template).read_text("utf-8"))
    return _written[shape]


@pytest.fixture(scope="session")
def hybrid_model_path(tmp_path_factory: pytest.TempPathFactory, llama_cpp_dir: Path) -> Path:
    return _write(tmp_path_factory, llama_cpp_dir, "tiny-hybrid")


@pytest.fixture(scope="session")
def ternary_model_path(tmp_path_factory: pytest.TempPathFactory, llama_cpp_dir: Path) -> Path:
    return _write(tmp_path_factory, llama_cpp_dir, "ternary-tiny")


@pytest.fixture(scope="session")
def ternary_hybrid_model_path(tmp_path_factory: pytest.TempPathFactory, llama_cpp_dir: Path) -> Path:
    return _write(tmp_path_factory, llama_cpp_dir, "ternary-tiny-hybrid")
