"""The Qwen2 tokenizer (Bonsai 1.7B-8B) and the Qwen3.5 one (Bonsai 27B) against upstream's reference
tokenizations (the .inp/.out files next to each vocabulary GGUF in the pinned llama.cpp)."""
from __future__ import annotations

import pytest

from pybonsai import Llama

SEPARATOR = "\n__ggml_vocab_test__\n"


def _reference_cases(vocab_path):
    """Pairs (text, token ids) from upstream's .inp/.out files, split as test-tokenizer-0 does."""
    raw = vocab_path.with_name(vocab_path.name + ".inp").read_bytes().decode("utf-8")
    texts = raw.split(SEPARATOR)
    if raw.endswith(SEPARATOR):  # upstream's reader stops at the end, yielding no empty last case
        texts.pop()
    lines = vocab_path.with_name(vocab_path.name + ".out").read_text(encoding="utf-8").splitlines()
    assert len(texts) == len(lines), "reference files disagree on the number of cases"
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, lines)]


@pytest.fixture(scope="module", params=["qwen2", "qwen35"])
def vocab_path(llama_cpp_dir, request):
    return llama_cpp_dir / "models" / f"ggml-vocab-{request.param}.gguf"


@pytest.fixture(scope="module")
def vocab(vocab_path):
    with Llama(vocab_path, vocab_only=True) as llm:
        yield llm


def test_reference_files_have_many_cases(vocab_path):
    assert len(_reference_cases(vocab_path)) >= 30


def test_every_reference_case_tokenizes_exactly(vocab, vocab_path):
    failures = []
    for text, expected in _reference_cases(vocab_path):
        got = vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if got != expected:
            failures.append((text, expected, got))
    assert not failures, f"{len(failures)} mismatches, first: {failures[0]!r}"


def test_every_reference_case_detokenizes_back(vocab, vocab_path):
    for text, expected in _reference_cases(vocab_path):
        assert vocab.detokenize(expected).decode("utf-8") == text


def test_special_tokens_parse_only_when_asked(vocab):
    marker = b"<|im_start|>"
    parsed = vocab.tokenize(marker, add_bos=False, special=True)
    literal = vocab.tokenize(marker, add_bos=False, special=False)
    assert len(parsed) == 1 and len(literal) > 1
    assert vocab.detokenize(parsed, special=True) == marker
    assert vocab.detokenize(parsed, special=False) == b""


def test_str_and_bytes_agree_and_other_types_fail(vocab):
    assert vocab.tokenize("héllo 🦙", add_bos=False) == vocab.tokenize("héllo 🦙".encode(), add_bos=False)
    with pytest.raises(TypeError):
        vocab.tokenize(123)


def test_out_of_range_token_is_a_value_error(vocab):
    with pytest.raises(ValueError, match="out of range"):
        vocab.detokenize([vocab.n_vocab()])
    with pytest.raises(ValueError, match="out of range"):
        vocab.token_to_piece(-1)


def test_qwen35_pre_tokenizer_keeps_marks_with_letters(llama_cpp_dir):
    """The two vocabulary files differ only in tokenizer.ggml.pre; Qwen3.5's split pattern keeps
    combining marks (\\p{M}) inside words where Qwen2's cuts before them, so Arabic with harakat
    tokenizes differently (and into fewer tokens): the loader must honour "qwen35"."""
    text = "ضَرَبَ".encode()
    models = llama_cpp_dir / "models"
    with Llama(models / "ggml-vocab-qwen2.gguf", vocab_only=True) as qwen2, \
            Llama(models / "ggml-vocab-qwen35.gguf", vocab_only=True) as qwen35:
        old, new = (v.tokenize(text, add_bos=False) for v in (qwen2, qwen35))
        assert len(new) < len(old)
        assert qwen35.detokenize(new) == text
