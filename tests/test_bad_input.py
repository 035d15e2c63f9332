"""Bad files and arguments become Python exceptions naming the cause, never a crash. The cases
that reach llama.cpp's loader run in a subprocess, so a crash would show as its exit status."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import gguf
import pytest

from pybonsai import Llama

CHILD = textwrap.dedent("""
    import sys
    from pybonsai import Llama
    try:
        Llama(sys.argv[1], n_ctx=32)
    except Exception as e:
        print("RAISED", type(e).__name__, str(e).replace("\\n", " | "))
        sys.exit(0)
    print("LOADED")
""")


def load_in_subprocess(path):
    """Load `path` in a fresh interpreter; return (exit status, what it printed)."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        Llama(tmp_path / "nope.gguf")


def test_directory(tmp_path):
    with pytest.raises(IsADirectoryError):
        Llama(tmp_path)


def test_not_a_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("just some text, long enough to hold a header")
    with pytest.raises(ValueError, match="not a GGUF file"):
        Llama(path)


def test_wrong_argument_types(tiny_model_path):
    with pytest.raises(TypeError):
        Llama(12345)
    with pytest.raises(TypeError):
        Llama(tiny_model_path, n_ctx="big")


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.999])
def test_truncated_gguf(tmp_path, tiny_model_path, fraction):
    data = tiny_model_path.read_bytes()
    path = tmp_path / "truncated.gguf"
    path.write_bytes(data[: max(24, int(len(data) * fraction))])
    status, out = load_in_subprocess(path)
    assert status == 0, f"interpreter died ({status}): {out[-2000:]}"
    assert "RAISED" in out and str(path) in out, out[-2000:]


def test_unknown_tensor_type(tmp_path, tiny_model_path):
    path = tmp_path / "unknown-type.gguf"
    shutil.copy(tiny_model_path, path)
    reader = gguf.GGUFReader(path, "r+")
    tensor = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    type_part = tensor.field.parts[-2]  # name length, name, n_dims, dims, type, offset
    assert int(type_part[0]) == 41  # Q1_0, as written
    type_part[0] = 97  # no such ggml type
    reader.data.flush()
    del reader
    status, out = load_in_subprocess(path)
    assert status == 0, f"interpreter died ({status}): {out[-2000:]}"
    assert "RAISED" in out, out[-2000:]


def test_hostile_header_counts(tmp_path, tiny_model_path):
    data = bytearray(tiny_model_path.read_bytes())
    data[16:24] = (2**62).to_bytes(8, "little")  # absurd number of key/value pairs
    path = tmp_path / "hostile.gguf"
    path.write_bytes(bytes(data))
    status, out = load_in_subprocess(path)
    assert status == 0, f"interpreter died ({status}): {out[-2000:]}"
    assert "RAISED" in out, out[-2000:]


def test_decode_rejects_out_of_range_tokens(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=32) as llm:
        with pytest.raises(ValueError, match="out of range"):
            llm.eval([llm.n_vocab() + 5])
        with pytest.raises(ValueError, match="out of range"):
            llm.create_completion([-1], max_tokens=2)


def test_progress_callback_can_cancel_and_errors_propagate(tiny_model_path):
    seen = []
    with pytest.raises(RuntimeError, match="cancelled"):
        Llama(tiny_model_path, progress_callback=lambda p: seen.append(p) or False)
    assert seen

    def boom(p):
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        Llama(tiny_model_path, progress_callback=boom)


CORE_MISUSE = textwrap.dedent("""
    import sys, threading
    import numpy as np
    from pybonsai import _core, backends
    backends.ensure_loaded()
    path = sys.argv[1]
    m = _core.Model(path)
    ctx = _core.Context(m, n_ctx=64, n_batch=16, n_ubatch=16, n_threads=1, n_threads_batch=1)

    def expect(exc, fn):
        try:
            fn()
        except exc as e:
            print("ok", type(e).__name__)
        else:
            print("NO EXCEPTION"); sys.exit(3)

    ctx.decode([1, 2, 3], 0, False)
    expect(IndexError, lambda: _core.Sampler().sample(ctx, 0))   # position 0 has no logits
    s = _core.Sampler(); s.add_greedy(); s.sample(ctx, 2); s.sample(ctx, -1)
    first = ctx.logits()
    ctx.decode(list(range(4, 20)), 3, True)                      # bigger output buffer now
    assert first.shape == (1, m.n_vocab) and np.isfinite(first).all()
    expect(ValueError, lambda: ctx.logits(out=np.zeros((2, 2), np.float32)))
    vocab_ctx = _core.Context(_core.Model(path, vocab_only=True))  # allowed (as llama.cpp), but it
    expect(ValueError, lambda: vocab_ctx.decode([1], 0, False))    # has no weights to evaluate
    expect(ValueError, lambda: vocab_ctx.memory_clear())
    vocab_ctx.close()
    expect(ValueError, lambda: _core.Sampler().add_penalties(m, 2**25, 1.1))
    s.accept(10**9)                                               # any int32 token: no crash
    ctx.close()
    expect(RuntimeError, lambda: ctx.logits())
    expect(RuntimeError, lambda: ctx.decode([1], 0, False))

    # Closing a context while another thread decodes must neither hang nor crash.
    ctx2 = _core.Context(m, n_ctx=256, n_batch=16, n_ubatch=16, n_threads=1, n_threads_batch=1)
    def worker():
        try:
            for i in range(200):
                ctx2.memory_clear(); ctx2.decode(list(range(1, 17)), 0, True)
        except RuntimeError:
            pass
    t = threading.Thread(target=worker); t.start()
    ctx2.close(); t.join(60)
    print("joined", not t.is_alive())
""")


def test_core_misuse_raises_instead_of_crashing(tiny_model_path):
    proc = subprocess.run([sys.executable, "-c", CORE_MISUSE, str(tiny_model_path)], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stdout[-1500:]} {proc.stderr[-1500:]}"
    assert proc.stdout.count("ok ") == 7 and "joined True" in proc.stdout, proc.stdout


def test_failed_eval_leaves_a_usable_context(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=256, n_batch=8) as llm:
        good = llm.tokenize(b"a b c d e f g h i j k")
        with pytest.raises(ValueError, match="out of range"):
            llm.eval(good + [llm.n_vocab() + 1])   # the first chunk decodes, a later one fails
        assert llm.n_tokens in (0, 8)
        expected = llm.create_completion(good, max_tokens=4, temperature=0)["choices"][0]["text"]
        llm.reset()
        assert llm.create_completion(good, max_tokens=4, temperature=0)["choices"][0]["text"] == expected
