"""The GGUF fuzzer's quick, fixed-seed subset, and regressions for what the fuzzer found.

The long run is `python tests/fuzz/run_fuzz.py --cases 10000` (see run_fuzz.py)."""
from __future__ import annotations

import collections
import struct
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import gguf_doc  # noqa: E402
import mutations  # noqa: E402
import run_fuzz  # noqa: E402
import worker  # noqa: E402

from pybonsai.gguf_file import GGUFError, scan_gguf  # noqa: E402

QUICK_SEED, QUICK_CASES = 20261123, 512


def test_seed_document_is_a_valid_model(tmp_path):
    path = tmp_path / "seed.gguf"
    path.write_bytes(mutations.valid_file())
    steps = worker.run_case(str(path), lambda stage: None)
    assert {name: s["status"] for name, s in steps.items()} == dict.fromkeys(steps, "ok"), steps
    assert len(scan_gguf(path).tensors) == 14


def test_cases_are_reproducible():
    assert mutations.make_case(7, 123) == mutations.make_case(7, 123)
    assert mutations.make_case(7, 123)[2] != mutations.make_case(7, 124)[2]


def test_quick_fuzz_subset(tmp_path):
    """512 fixed-seed cases (32 per mutation class): no crash, no hang, and every failure is a
    clean Python exception naming the file."""
    results = run_fuzz.run(QUICK_SEED, QUICK_CASES, workers=1, timeout=60, out=tmp_path / "bad")
    assert len(results) == QUICK_CASES
    per_class = collections.Counter(r.cls for r in results)
    assert set(per_class) == set(mutations.CLASSES) and min(per_class.values()) == QUICK_CASES // len(per_class)
    outcomes = collections.Counter(r.outcome for r in results)
    bad = [f"#{r.index} {r.outcome} {r.what}: {r.detail}" for r in results
           if r.outcome in ("crash", "hang", "unclean")]
    assert not bad, "\n".join(bad[:10])
    # not degenerate: some mutations are harmless, most are refused
    assert outcomes["loaded"] > 0 and outcomes["clean_error"] > QUICK_CASES // 2, outcomes


def _alignment_doc(alignment: int) -> gguf_doc.Document:
    doc = gguf_doc.base_document()
    next(k for k in doc.kvs if k.key == "general.alignment").value = alignment
    doc.alignment = alignment
    return doc


@pytest.mark.parametrize("alignment", [2, 8, 16])
def test_small_alignment_loads_without_mmap_instead_of_aborting(tmp_path, alignment):
    """Fuzzer find: general.alignment < 32 made llama.cpp abort (GGML_ASSERT, buffer pointer
    must be aligned) when it mapped the tensor data; now such a file loads without mmap."""
    data, layout = gguf_doc.serialize(_alignment_doc(alignment))
    path = tmp_path / f"align{alignment}.gguf"
    path.write_bytes(data)
    code = ("import sys, warnings; from pybonsai import Llama\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    llm = Llama(sys.argv[1], n_ctx=16, n_threads=1)\n"
            "llm.eval([1, 2]); print('ok', [str(x.message) for x in w])\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1500:]
    misaligned = layout.boundaries["data"] % 32 != 0
    assert proc.stdout.startswith("ok")
    assert ("not 32-byte aligned" in proc.stdout) == misaligned, proc.stdout


def _corrupt(field: str, value: int) -> bytes:
    data, layout = gguf_doc.serialize(gguf_doc.base_document())
    off, size = layout.fields[field]
    out = bytearray(data)
    out[off:off + size] = value.to_bytes(size, "little")
    return bytes(out)


@pytest.mark.parametrize("field,value,message", [
    ("header.n_kv", 2**62, "the header claims"),
    ("header.n_tensors", 2**64 - 1, "the header claims"),
    ("kv[15].value.count", 2**40, "claims 1099511627776 elements"),
    ("kv[15].value[3].len", 2**63, "claims a length"),
    ("kv[1].type", 99, "invalid value type 99"),
    ("ti[2].n_dims", 7, "7 dimensions"),
    ("ti[2].type", 2**31, "unknown ggml type"),
    ("ti[2].offset", 12345, "data offset 12345"),
])
def test_info_scanner_names_the_defect(tmp_path, field, value, message):
    """The header scanner behind `pybonsai info` raised struct.error / OverflowError /
    MemoryError on such files before; now a GGUFError naming the file and the cause."""
    path = tmp_path / "bad.gguf"
    path.write_bytes(_corrupt(field, value))
    with pytest.raises(GGUFError, match=message) as info:
        scan_gguf(path)
    assert str(path) in str(info.value)


def test_info_scanner_truncation_at_every_section(tmp_path):
    data, layout = gguf_doc.serialize(gguf_doc.base_document())
    path = tmp_path / "cut.gguf"
    for name, cut in layout.boundaries.items():
        if name == "end":
            continue
        for c in (cut - 1, cut, cut + 1):
            path.write_bytes(data[:max(c, 0)])
            with pytest.raises(ValueError, match=str(path)):
                scan_gguf(path)
    path.write_bytes(data)
    assert struct.unpack_from("<Q", data, 8)[0] == len(scan_gguf(path).tensors)


def test_error_messages_with_non_utf8_names_stay_readable(tmp_path):
    """Fuzzer find (long run): llama.cpp's error named a tensor whose name is not UTF-8, and
    turning that message into a Python str raised UnicodeDecodeError instead of the error."""
    from pybonsai import Llama

    doc = gguf_doc.base_document()
    doc.tensors[-1].name = b"output\xff\xfe.weight"
    doc.tensors[-1].offset = 12345  # makes llama.cpp's parser name the tensor in its error
    path = tmp_path / "non-utf8.gguf"
    path.write_bytes(gguf_doc.serialize(doc)[0])
    with pytest.raises(RuntimeError) as info:
        Llama(path, vocab_only=True)
    assert str(path) in str(info.value) and "output\ufffd\ufffd.weight" in str(info.value)
