"""`pybonsai info` and loading for the rest of the Bonsai family: the qwen35 hybrid's layer split,
Q2_0's bits per weight, and vision-language files (only the text part loads; one warning)."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from family_doc import family_document
from gguf_doc import BOOL, GGML_F32, KV, STRING, Tensor, serialize
from pybonsai import Llama, TextOnlyWarning
from pybonsai.cli import main as cli_main
from pybonsai.model_info import describe_layers, layer_split, vision_markers


def _info(capsys, path) -> str:
    assert cli_main(["info", str(path)]) == 0
    return capsys.readouterr().out


def test_info_hybrid(capsys, tiny_hybrid_model_path):
    out = _info(capsys, tiny_hybrid_model_path)
    assert "architecture:     qwen35\n" in out
    assert "layers:           4 (hybrid: 3 linear-attention (Gated DeltaNet, recurrent state) + " \
           "1 full-attention, every 4th)\n" in out
    assert "vision:           none in this file" in out and "mmproj" in out
    q1 = next(line for line in out.splitlines() if line.strip().startswith("Q1_0"))
    assert q1.split()[1] == "1.125"


def test_info_ternary(capsys, ternary_tiny_model_path):
    out = _info(capsys, ternary_tiny_model_path)
    assert "architecture:     qwen3\nlayers:           2 (all full attention)\n" in out
    q2 = next(line for line in out.splitlines() if line.strip().startswith("Q2_0"))
    assert q2.split()[1] == "2.250"
    assert "bits per weight:  2.25" in out and "vision" not in out


def test_layer_split_rule():
    meta = {"general.architecture": "qwen35", "qwen35.block_count": 64, "qwen35.ssm.conv_kernel": 4,
            "qwen35.full_attention_interval": 4}
    split = layer_split(meta)
    assert (split.linear, split.full, split.interval) == (48, 16, 4)            # Bonsai 27B
    assert layer_split({**meta, "qwen35.full_attention_interval": 0}) is None   # unusable: no division by 0
    assert "split is unreadable" in describe_layers({**meta, "qwen35.full_attention_interval": 0})
    no_key = dict(meta)
    del no_key["qwen35.full_attention_interval"]
    assert layer_split(no_key).full == 16                                        # the loader's default: 4
    assert layer_split({"general.architecture": "qwen3", "qwen3.block_count": 36}) is None


def test_vision_markers():
    assert vision_markers({"general.architecture": "qwen35", "tokenizer.ggml.tokens": ("array", 9),
                           "qwen35.rope.dimension_sections": ("array", 4)}, ["token_embd.weight"]) == []
    found = vision_markers({"clip.has_vision_encoder": True, "qwen35.vision.projector": "mlp"},
                           ["blk.0.attn_norm.weight", "v.blk.0.attn_q.weight", "mm.0.weight"])
    assert found == ["metadata 'clip.has_vision_encoder', 'qwen35.vision.projector'",
                     "2 vision tensors ('v.blk.0.attn_q.weight', ...)"]


@pytest.fixture(scope="module")
def vision_files(tmp_path_factory) -> tuple[Path, Path]:
    """The hybrid seed with vision metadata (as a VLM's text GGUF may carry), and with a vision
    tensor bundled in."""
    out = tmp_path_factory.mktemp("vision")
    doc = family_document("hybrid")
    doc.kvs += [KV("clip.has_vision_encoder", BOOL, True), KV("qwen35.vision.mmproj", STRING, "separate")]
    keys = out / "vlm-text.gguf"
    keys.write_bytes(serialize(doc)[0])
    doc.tensors.append(Tensor("v.blk.0.attn_q.weight", [64, 64], GGML_F32, np.zeros(64 * 64, "<f4").tobytes()))
    bundled = out / "vlm-bundled.gguf"
    bundled.write_bytes(serialize(doc)[0])
    return keys, bundled


def test_vision_language_file_loads_text_and_warns_once(vision_files, capsys):
    keys, _ = vision_files
    out = _info(capsys, keys)
    assert "vision:           a vision-language model (metadata 'clip.has_vision_encoder', " \
           "'qwen35.vision.mmproj'): only the text part loads" in out
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with Llama(keys, n_ctx=32, n_threads=1) as llm:
            llm.eval([1, 2])
            assert llm.last_logits.shape == (llm.n_vocab(),)
    assert [w.category for w in seen] == [TextOnlyWarning], [str(w.message) for w in seen]
    assert str(keys) in str(seen[0].message) and "mmproj" in str(seen[0].message)
    assert seen[0].filename == __file__                              # points at the caller's line
    assert issubclass(TextOnlyWarning, UserWarning)


def test_bundled_vision_tensors(vision_files, capsys):
    """A GGUF that carries vision tensors with the text model: `info` says so; the pinned loader
    refuses it (no partial loads), as a clean error naming the file, after the warning."""
    _, bundled = vision_files
    assert "1 vision tensors ('v.blk.0.attn_q.weight')" in _info(capsys, bundled)
    with pytest.warns(TextOnlyWarning), pytest.raises(RuntimeError, match="wrong number of tensors") as info:
        Llama(bundled, n_ctx=32, n_threads=1)
    assert str(bundled) in str(info.value)
    assert sys.modules["pybonsai"].TextOnlyWarning is TextOnlyWarning
