"""The GGUF fuzzer on the family seeds (the qwen35 hybrid, ternary Q2_0): a small fixed-seed
subset of their own mutation classes, and regressions for the aborts it found.

The long runs: `python tests/fuzz/run_fuzz.py --model hybrid|ternary --cases 2000 --workers 2`."""
from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import family_doc  # noqa: E402
import mutations  # noqa: E402
import run_fuzz  # noqa: E402
from gguf_doc import base_document, serialize  # noqa: E402

QUICK_SEED = 20261207
QUICK = {"hybrid": 60, "ternary": 40}  # cases of the model's own classes (12 and 20 per class)


@pytest.mark.parametrize("model", sorted(QUICK))
def test_quick_family_subset(tmp_path, model):
    """No crash, no hang, every failure a clean exception naming the file."""
    n = QUICK[model]
    results = run_fuzz.run(QUICK_SEED, n, workers=1, timeout=60, out=tmp_path / "bad", model=model,
                           specific_only=True)
    assert len(results) == n
    per_class = collections.Counter(r.cls for r in results)
    assert set(per_class) == set(mutations.SPECIFIC[model]) and min(per_class.values()) == n // len(per_class)
    bad = [f"#{r.index} {r.outcome} {r.what}: {r.detail}" for r in results
           if r.outcome in ("crash", "hang", "unclean")]
    assert not bad, "\n".join(bad[:10])
    outcomes = collections.Counter(r.outcome for r in results)
    assert outcomes["clean_error"] > n // 2, outcomes


def test_family_seeds_are_valid_models(tmp_path):
    import worker

    for model in family_doc.MODELS:
        path = tmp_path / f"{model}.gguf"
        path.write_bytes(serialize(family_doc.family_document(model))[0])
        steps = worker.run_case(str(path), lambda stage: None)
        assert {k: s["status"] for k, s in steps.items()} == dict.fromkeys(steps, "ok"), (model, steps)


def _hybrid(edit) -> bytes:
    doc = family_doc.family_document("hybrid")
    edit(doc)
    return serialize(doc)[0]


def _key(doc, key):
    return next(k for k in doc.kvs if k.key == key)


def _f16(doc, name):
    t = next(t for t in doc.tensors if t.name == name)
    t.ttype, t.data = 1, np.frombuffer(t.data, "<f4").astype("<f2").tobytes()


def _qwen3_f16_norm() -> bytes:
    doc = base_document()
    _f16(doc, "blk.0.attn_norm.weight")
    return serialize(doc)[0]


ABORTS = {  # fuzzer finds (--model hybrid, seed 11): each aborted the process in ggml before
    "inner_size": (lambda: _hybrid(lambda d: setattr(_key(d, "qwen35.ssm.inner_size"), "value", 63)),
                   "ssm.inner_size = 63 must be"),
    "sections_zero": (lambda: _hybrid(lambda d: setattr(_key(d, "qwen35.rope.dimension_sections"), "value",
                                                        [0, 0, 0, 0])), "no positive section"),
    "sections_wide": (lambda: _hybrid(lambda d: setattr(_key(d, "qwen35.rope.dimension_sections"), "value",
                                                        [100, 0, 0, 0])), "more than the head size 64"),
    "f16_bias": (lambda: _hybrid(lambda d: _f16(d, "blk.0.ssm_dt.bias")), "'blk.0.ssm_dt.bias' is F16"),
    "qwen3_f16_norm": (_qwen3_f16_norm, "'blk.0.attn_norm.weight' is F16"),
}


def test_aborts_found_by_the_fuzzer_are_clean_errors(tmp_path):
    """Each file in a child process (a regression would abort it): Llama raises a ValueError
    naming the file and the cause, before llama.cpp loads anything."""
    paths = {}
    for name, (make, _) in ABORTS.items():
        paths[name] = tmp_path / f"{name}.gguf"
        paths[name].write_bytes(make())
    code = ("import json, sys\nfrom pybonsai import Llama\nout = {}\n"
            "for name, path in json.loads(sys.argv[1]).items():\n"
            "    try:\n        Llama(path, n_ctx=32, n_threads=1).eval([0, 1]); out[name] = 'loaded'\n"
            "    except Exception as exc:\n        out[name] = [isinstance(exc, ValueError), str(exc)]\n"
            "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps({k: str(p) for k, p in paths.items()})],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (_, message) in ABORTS.items():
        is_value_error, text = got[name]
        assert is_value_error and message in text and str(paths[name]) in text, (name, got[name])
