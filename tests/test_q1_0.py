"""Q1_0 packing helpers and the synthetic GGUF writer."""
from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from pybonsai import synth
from pybonsai.q1_0 import (BLOCK, BLOCK_BYTES, dequantize_q1_0, pack_q1_0, quantize_q1_0,
                           row_bytes)

Q1_0_TYPE_ID = 41


def _dequantize_block_by_definition(block: bytes) -> list[float]:
    """Scalar reading of the format: fp16 d, then bit j of byte i is weight 8i+j (1 -> +d)."""
    (d,) = struct.unpack("<e", block[:2])
    return [d if (block[2 + w // 8] >> (w % 8)) & 1 else -d for w in range(BLOCK)]


def test_format_constants():
    assert (BLOCK, BLOCK_BYTES) == (128, 18)
    assert gguf.GGMLQuantizationType.Q1_0 == Q1_0_TYPE_ID
    assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q1_0] == (BLOCK, BLOCK_BYTES)
    assert row_bytes(4096) == 32 * 18


def test_hand_built_block_bit_order_and_scale():
    qs = bytearray(16)
    qs[0] = 0b0000_0101    # weights 0 and 2 positive
    qs[1] = 0b1000_0000    # weight 15 positive
    qs[15] = 0xFF          # weights 120..127 positive
    raw = np.frombuffer(struct.pack("<e", 0.75) + bytes(qs), dtype=np.uint8).reshape(1, 18)
    w = dequantize_q1_0(raw, 128)[0]
    positive = {0, 2, 15, *range(120, 128)}
    expected = np.array([0.75 if i in positive else -0.75 for i in range(128)], np.float32)
    np.testing.assert_array_equal(w, expected)


def test_dequantize_matches_scalar_definition():
    rng = np.random.default_rng(1)
    rows, k = 3, 512
    raw = rng.integers(0, 256, size=(rows, row_bytes(k)), dtype=np.uint8)
    scales = rng.uniform(-2, 2, size=(rows, k // BLOCK)).astype(np.float16)  # signs allowed
    raw.reshape(rows, -1, BLOCK_BYTES)[:, :, :2] = scales.view(np.uint8).reshape(rows, -1, 2)
    w = dequantize_q1_0(raw, k)
    assert w.dtype == np.float32 and w.shape == (rows, k)
    for r in range(rows):
        blocks = raw[r].tobytes()
        ref = sum((_dequantize_block_by_definition(blocks[i:i + 18])
                   for i in range(0, len(blocks), 18)), [])
        np.testing.assert_array_equal(w[r], np.array(ref, np.float32))


def test_pack_dequantize_round_trip():
    rng = np.random.default_rng(2)
    rows, k = 5, 384
    signs = rng.integers(0, 2, size=(rows, k)).astype(bool)
    scales = rng.uniform(0.01, 1.0, size=(rows, k // BLOCK)).astype(np.float16)
    raw = pack_q1_0(signs, scales)
    assert raw.dtype == np.uint8 and raw.shape == (rows, k // BLOCK * BLOCK_BYTES)
    blocks = raw.reshape(rows, -1, BLOCK_BYTES)
    np.testing.assert_array_equal(blocks[:, :, :2].copy().view("<f2")[..., 0], scales)
    expected = np.where(signs, 1.0, -1.0) * np.repeat(scales.astype(np.float32), BLOCK, axis=1)
    np.testing.assert_array_equal(dequantize_q1_0(raw, k), expected.astype(np.float32))
    np.testing.assert_array_equal(pack_q1_0(signs.astype(np.uint8), scales), raw)


def test_quantize_known_vector():
    w = np.array([(i % 7 - 3) * 0.25 for i in range(256)], dtype=np.float32).reshape(1, 256)
    raw = quantize_q1_0(w)
    d = np.abs(w.reshape(2, 128)).mean(axis=1)
    signs = np.where(w >= 0, 1.0, -1.0)          # zero counts as positive
    expected = signs * np.repeat(d.astype(np.float16).astype(np.float32), 128)
    np.testing.assert_array_equal(dequantize_q1_0(raw, 256), expected.astype(np.float32))
    assert raw[0, :2].tobytes() == struct.pack("<e", d[0])
    # weight 0 is -0.75 (bit clear), weight 3 is 0 (bit set), weight 6 is +0.75 (bit set)
    assert raw[0, 2] == 0b0111_1000
    # a block that is already +-d survives quantize(dequantize(.)) unchanged
    np.testing.assert_array_equal(quantize_q1_0(dequantize_q1_0(raw, 256)), raw)


@pytest.mark.parametrize("call", [
    lambda: pack_q1_0(np.zeros((2, 100), bool), np.zeros((2, 1), np.float16)),
    lambda: pack_q1_0(np.zeros((2, 128), bool), np.zeros((2, 2), np.float16)),
    lambda: pack_q1_0(np.zeros(128, bool), np.zeros(1, np.float16)),
    lambda: quantize_q1_0(np.zeros((1, 130), np.float32)),
    lambda: dequantize_q1_0(np.zeros((1, 18), np.uint8), 256),
    lambda: dequantize_q1_0(np.zeros((1, 18), np.uint8), 100),
    lambda: dequantize_q1_0(np.zeros((1, 18), np.int8), 128),
])
def test_shape_validation(call):
    with pytest.raises(ValueError):
        call()


# --- the synthetic GGUF --------------------------------------------------------------------

def _value(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


@pytest.fixture(scope="module")
def tiny_reader(tiny_model_path: Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(tiny_model_path)   # parsing the 300k tokenizer strings takes seconds


def test_synthetic_gguf_metadata_and_tensors(tiny_reader: gguf.GGUFReader):
    shape = synth.SHAPES["tiny"]
    reader = tiny_reader
    assert _value(reader, "general.architecture") == "qwen3"
    assert _value(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_Q1_0 == 40
    expected_hparams = {
        "context_length": shape.n_ctx_train, "embedding_length": shape.n_embd,
        "block_count": shape.n_layer, "feed_forward_length": shape.n_ff,
        "attention.head_count": shape.n_head, "attention.head_count_kv": shape.n_head_kv,
        "attention.key_length": shape.head_dim, "attention.value_length": shape.head_dim,
    }
    for key, val in expected_hparams.items():
        assert _value(reader, f"qwen3.{key}") == val, key
    assert _value(reader, "qwen3.rope.freq_base") == pytest.approx(1e6)
    assert _value(reader, "qwen3.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)

    n_vocab = 151936
    e, q, kv, ff = shape.n_embd, shape.n_head * shape.head_dim, \
        shape.n_head_kv * shape.head_dim, shape.n_ff
    expected = {"token_embd.weight": (e, n_vocab), "output.weight": (e, n_vocab),
                "output_norm.weight": (e,)}      # ggml order: ne0 (row length) first
    for i in range(shape.n_layer):
        expected.update({
            f"blk.{i}.attn_norm.weight": (e,), f"blk.{i}.ffn_norm.weight": (e,),
            f"blk.{i}.attn_q_norm.weight": (shape.head_dim,),
            f"blk.{i}.attn_k_norm.weight": (shape.head_dim,),
            f"blk.{i}.attn_q.weight": (e, q), f"blk.{i}.attn_k.weight": (e, kv),
            f"blk.{i}.attn_v.weight": (e, kv), f"blk.{i}.attn_output.weight": (q, e),
            f"blk.{i}.ffn_gate.weight": (e, ff), f"blk.{i}.ffn_up.weight": (e, ff),
            f"blk.{i}.ffn_down.weight": (ff, e),
        })
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(expected)
    for name, dims in expected.items():
        t = got[name]
        assert tuple(int(x) for x in t.shape) == dims, name
        if len(dims) == 2:
            assert int(t.tensor_type) == Q1_0_TYPE_ID, name
            assert t.n_bytes == dims[0] * dims[1] // 128 * 18, name
        else:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32, name
            assert 0.5 < float(np.min(t.data)) and float(np.max(t.data)) < 1.5, name


def test_synthetic_gguf_tokenizer_copied(tiny_reader: gguf.GGUFReader, llama_cpp_dir: Path):
    model = tiny_reader
    vocab = gguf.GGUFReader(llama_cpp_dir / synth.VOCAB_GGUF)
    tok_keys = {k for k in vocab.fields if k.startswith("tokenizer.")} - {"tokenizer.chat_template"}
    assert {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
            "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.bos_token_id"} <= tok_keys
    for key in sorted(tok_keys):
        src, dst = vocab.fields[key], model.fields[key]
        assert list(dst.types) == list(src.types), key
        assert dst.contents() == src.contents(), key
    assert len(model.fields["tokenizer.ggml.tokens"].data) == 151936
    template = (llama_cpp_dir / synth.CHAT_TEMPLATE).read_text("utf-8")
    assert _value(model, "tokenizer.chat_template") == template


def test_weights_are_seeded_and_scaled(tiny_weights: dict):
    hp = tiny_weights["hparams"]
    assert hp["n_vocab"] == 151936 and hp["n_layer"] == 2
    wq = tiny_weights["blk.0.attn_q.weight"]
    assert wq.shape == (256, 256)
    # d = jitter / sqrt(K) with jitter in [0.75, 1.25]
    assert 0.74 <= np.abs(wq).min() * 16 and np.abs(wq).max() * 16 <= 1.26
    assert abs(np.mean(wq > 0) - 0.5) < 0.01


def test_write_model_refuses_to_overwrite(tmp_path: Path, llama_cpp_dir: Path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"precious")
    vocab = llama_cpp_dir / synth.VOCAB_GGUF
    with pytest.raises(FileExistsError):
        synth.write_model(path, "tiny", vocab_gguf=vocab, chat_template="x")
    with pytest.raises(SystemExit) as exc:
        synth.main([str(path), "--shape", "tiny"])
    assert exc.value.code != 0
    assert path.read_bytes() == b"precious"
    synth.write_model(path, "tiny", vocab_gguf=vocab, chat_template="x", overwrite=True)
    assert path.read_bytes()[:4] == b"GGUF" and path.stat().st_size > 10_000_000
    assert not list(tmp_path.glob("*.partial"))


def test_write_model_is_deterministic(tmp_path: Path, tiny_model_path: Path, llama_cpp_dir: Path):
    template = (llama_cpp_dir / synth.CHAT_TEMPLATE).read_text("utf-8")
    again = synth.write_model(tmp_path / "again.gguf", "tiny", seed=0,
                              vocab_gguf=llama_cpp_dir / synth.VOCAB_GGUF, chat_template=template)
    assert again.read_bytes() == tiny_model_path.read_bytes()


def test_find_llama_cpp_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                llama_cpp_dir: Path):
    monkeypatch.setenv("PYBONSAI_LLAMA_CPP_DIR", str(llama_cpp_dir))
    assert synth.find_llama_cpp_dir() == llama_cpp_dir.resolve()
    monkeypatch.setenv("PYBONSAI_LLAMA_CPP_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="PYBONSAI_LLAMA_CPP_DIR"):
        synth.find_llama_cpp_dir()
