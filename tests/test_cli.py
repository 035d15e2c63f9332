"""The `pybonsai` command line, run as `python -m pybonsai` in subprocesses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub_fixtures import TINY_REPO, hub, hub_env, split_model_dir  # noqa: F401
from pybonsai import catalog
from pybonsai.gguf_file import scan_gguf


def pybonsai(*args: str, env=None, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(env or os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "pybonsai", *args], input=stdin, capture_output=True,
                          text=True, encoding="utf-8", env=env, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pybonsai: error: "), proc.stderr
    return lines[0]


def test_run_prints_the_completion(tiny_model_path):
    proc = pybonsai("run", "Hello", "-m", str(tiny_model_path), "-n", "6", "--temp", "0", "--ctx", "64")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    # greedy: the same text as the API
    from pybonsai import Llama
    with Llama(tiny_model_path, n_ctx=64) as llm:
        text = llm.create_completion("Hello", max_tokens=6, temperature=0)["choices"][0]["text"]
    assert proc.stdout == text + "\n"


def test_info(tiny_model_path):
    proc = pybonsai("info", str(tiny_model_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines()) if v}
    assert fields["architecture"] == "qwen3"
    assert fields["chat template"] == "yes"
    assert fields["context length"] == "4096"
    bpw = float(fields["bits per weight"])
    assert 1.125 < bpw < 1.2                      # Q1_0 is 1.125; the F32 norms add a little
    hist = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.startswith("  ") and ln.split()[0] in
            ("Q1_0", "F32")}
    assert set(hist) == {"Q1_0", "F32"}
    assert "devices:" in out and "cpu" in out.lower()


def test_scan_gguf_matches_gguf_reader(tmp_path: Path):
    """The header scanner behind `info` agrees with the gguf package's reader."""
    import gguf
    import numpy as np

    path = tmp_path / "small.gguf"
    w = gguf.GGUFWriter(str(path), "qwen3")
    w.add_context_length(128)
    w.add_token_list(["a", "bb", "ccc"])
    w.add_array("test.ints", [1, 2, 3])
    w.add_tensor("t.f32", np.ones((3, 8), np.float32))
    w.add_tensor("t.f16", np.ones((16,), np.float16))
    w.add_tensor("t.q1", np.zeros((2, 18), np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q1_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    mine = scan_gguf(path)
    reader = gguf.GGUFReader(str(path))
    assert mine.metadata["general.architecture"] == "qwen3" and mine.metadata["qwen3.context_length"] == 128
    assert mine.metadata["tokenizer.ggml.tokens"] == ("array", 3)
    assert [(t.name, t.type_name, t.n_elements, t.n_bytes, mine.data_offset + t.offset) for t in mine.tensors] == \
        [(t.name, t.tensor_type.name, int(t.n_elements), int(t.n_bytes), int(t.data_offset)) for t in reader.tensors]


def test_info_of_a_split_model(split_model_dir, tiny_model_path):
    proc = pybonsai("info", str(split_model_dir / "tiny-Q1_0-00001-of-00003.gguf"))
    whole = pybonsai("info", str(tiny_model_path))
    assert proc.returncode == 0, proc.stderr
    assert "split in 3 parts" in proc.stdout
    pick = lambda out: [ln for ln in out.splitlines() if ln.startswith(("parameters", "bits per", "  Q1_0"))]
    assert pick(proc.stdout) == pick(whole.stdout) and len(pick(proc.stdout)) == 3


def test_chat_with_piped_input(tiny_model_path):
    proc = pybonsai("chat", "-m", str(tiny_model_path), "-n", "4", "--seed", "1", "--ctx", "512",
                    stdin="hello\n/no_think\nhi\n/reset\n/exit\nnever sent\n")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2     # two answers, one line each
    assert "[thinking off]" in proc.stderr and "[conversation cleared]" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_chat_ends_at_end_of_input(tiny_model_path):
    proc = pybonsai("chat", "-m", str(tiny_model_path), "-n", "2", "--ctx", "256", stdin="hello\n")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1


@pytest.mark.parametrize("args, expected", [
    (["run", "hi", "-m", "no-such-model"], "bonsai-1.7b, bonsai-4b, bonsai-8b"),
    (["info", "no-such-model"], "bonsai-1.7b, bonsai-4b, bonsai-8b"),
    (["run", "hi", "-m", "/nonexistent/model.gguf"], "model file not found"),
    (["info", "missing.gguf"], "model file not found"),
])
def test_friendly_errors(args, expected):
    assert expected in one_line_error(pybonsai(*args))


def test_not_a_gguf(tmp_path: Path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all, just text\n" * 4)
    for cmd in (["info", str(bad)], ["run", "hi", "-m", str(bad)]):
        assert "is not a GGUF file" in one_line_error(pybonsai(*cmd))


def test_download_prints_the_path(hub, hub_env):
    proc = pybonsai("download", TINY_REPO, "--filename", "*.gguf", env=hub_env)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path.is_file() and path.name == "tiny-Q1_0.gguf"
    alias = pybonsai("download", "bonsai-1.7b", env=hub_env)
    assert alias.returncode == 0, alias.stderr
    assert Path(alias.stdout.strip()).name == catalog.MODELS["bonsai-1.7b"].filename
    # with the Hub gone: the cache answers --offline, and an uncached repository is a one-line error
    hub.stop()
    offline = pybonsai("download", TINY_REPO, "--offline", env=hub_env)
    assert offline.returncode == 0 and offline.stdout.strip() == str(path), offline.stderr
    msg = one_line_error(pybonsai("info", "pybonsai-test/two", "--offline", env=hub_env))
    assert "not in the Hugging Face cache" in msg and "local .gguf" in msg


def test_unreachable_hub_is_one_line(hub, hub_env):
    hub.stop()
    code = ("import sys, time; time.sleep = lambda s: None\n"   # skip huggingface_hub's back-off waits
            "from pybonsai.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "run", "hi", "-m", "pybonsai-test/tiny"], env=hub_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()[-1]  # huggingface_hub logs its retries above
    assert err.startswith("pybonsai: error: cannot reach the Hugging Face Hub")
    assert "HF_HUB_OFFLINE=1" in err and "Traceback" not in proc.stderr


def test_help_lists_known_models():
    proc = pybonsai("--help")
    assert proc.returncode == 0
    for alias, entry in catalog.MODELS.items():
        assert alias in proc.stdout and entry.repo_id in proc.stdout
    assert "approximate" in proc.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_chat_ctrl_c_stops_the_answer_not_the_program(tiny_model_path):
    import signal
    import threading
    import time

    got = {"out": b"", "err": b""}

    def pump(name, stream):
        while chunk := stream.read1(4096):
            got[name] += chunk

    with subprocess.Popen([sys.executable, "-m", "pybonsai", "chat", "-m", str(tiny_model_path), "--ctx", "2048",
                           "--seed", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=dict(os.environ, PYTHONIOENCODING="utf-8"),
                          # a runner started as a background job passes SIGINT on ignored, and Python
                          # then installs no KeyboardInterrupt handler: give the child the default
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as proc:
        threads = [threading.Thread(target=pump, args=(n, s), daemon=True)
                   for n, s in (("out", proc.stdout), ("err", proc.stderr))]
        for t in threads:
            t.start()

        def wait_for(cond, what):
            deadline = time.monotonic() + 60
            while not cond():
                assert time.monotonic() < deadline and proc.poll() is None, (what, got)
                time.sleep(0.02)

        try:
            for n, line in enumerate((b"hello\n", b"hi\n"), start=1):
                before = len(got["out"])
                proc.stdin.write(line)
                proc.stdin.flush()
                wait_for(lambda: len(got["out"]) > before + 8, "an answer streaming")  # no -n: a long answer
                proc.send_signal(signal.SIGINT)
                wait_for(lambda: got["err"].count(b"[answer stopped]") == n, "the answer stopped")
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)                                      # at the prompt: quit
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            for t in threads:
                t.join(timeout=10)
    assert b"Traceback" not in got["err"]


def test_bench_reports_pp_and_tg_as_json(tiny_model_path):
    proc = subprocess.run([sys.executable, "-m", "pybonsai", "bench", str(tiny_model_path), "-p", "16", "-n", "4",
                           "-r", "2", "-t", "1", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {r["test"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {"pp16", "tg4"}
    for r in rows.values():
        assert r["tokens_per_s"] > 0 and len(r["samples"]) == 2 and r["peak_rss_mb"] > 0
        assert r["q1_0_kernel"] in ("avx512", "avx2", "scalar", "upstream")
