"""Fixtures for tests that talk to a (local) Hugging Face Hub: import them into a test module
with `from hub_fixtures import hub, hub_env, run_py, split_model_dir  # noqa: F401`.

huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE when it is imported, so everything that
uses it runs in a subprocess with an environment from `hub_env`.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional

import pytest

from hub_server import HubServer
from pybonsai.gguf_file import scan_gguf

TINY_REPO = "pybonsai-test/tiny"
TWO_REPO = "pybonsai-test/two"          # two GGUFs on main, one on revision v2
SPLIT_REPO = "pybonsai-test/split"      # a 3-part split GGUF
ALIAS = "bonsai-1.7b"                   # served under its real catalog repo and file name
SPLIT_NAMES = [f"tiny-Q1_0-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]


# --- split GGUFs -------------------------------------------------------------------------

def _gguf_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _split_kv(no: int, count: int, n_tensors: int) -> bytes:
    # llama.cpp's split keys and types (llama-arch.cpp, gguf-split): u16, u16, i32
    return (_gguf_str("split.no") + struct.pack("<IH", 2, no)
            + _gguf_str("split.count") + struct.pack("<IH", 2, count)
            + _gguf_str("split.tensors.count") + struct.pack("<Ii", 5, n_tensors))


def write_split(src: Path, out_dir: Path, names: list[str]) -> list[Path]:
    """Split the GGUF `src` into len(names) parts the way llama.cpp's gguf-split does: every part
    a GGUF with split.no / split.count / split.tensors.count, the metadata in the first part,
    the tensors spread over the parts in order."""
    info = scan_gguf(src)
    tensors = info.tensors
    align = info.alignment
    raw = src.read_bytes()
    kv_raw = raw[info.kv_range[0]:info.kv_range[1]]
    n = len(names)
    per = -(-len(tensors) // n)
    paths = []
    for i, name in enumerate(names):
        chunk = tensors[i * per:(i + 1) * per]
        kv = (kv_raw if i == 0 else b"") + _split_kv(i, n, len(tensors))
        n_kv = (info.n_kv if i == 0 else 0) + 3
        infos, data = b"", bytearray()
        for t in chunk:
            start = info.data_offset + t.offset
            data += b"\0" * (-len(data) % align)
            infos += (_gguf_str(t.name) + struct.pack("<I", len(t.shape))
                      + b"".join(struct.pack("<Q", d) for d in t.shape) + struct.pack("<IQ", t.type, len(data)))
            data += raw[start:start + t.n_bytes]
        head = b"GGUF" + struct.pack("<IQQ", 3, len(chunk), n_kv) + kv + infos
        head += b"\0" * (-len(head) % align)
        path = out_dir / name
        path.write_bytes(head + bytes(data))
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def split_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Path:
    out = tmp_path_factory.mktemp("split")
    write_split(tiny_model_path, out, SPLIT_NAMES)
    return out


# --- the server and the environment ------------------------------------------------------

@pytest.fixture
def hub(tiny_model_path: Path, split_model_dir: Path) -> Iterator[HubServer]:
    """A running local Hub with the test repositories (stopped at the end; tests may stop it
    earlier with hub.stop())."""
    server = HubServer()
    server.add_repo(TINY_REPO, {"tiny-Q1_0.gguf": tiny_model_path, "README.md": b"# tiny\n"})
    server.add_repo(TWO_REPO, {"a-Q1_0.gguf": tiny_model_path, "b-Q1_0.gguf": tiny_model_path,
                               "README.md": b"# two\n"})
    server.add_repo(TWO_REPO, {"b-Q1_0.gguf": tiny_model_path}, revision="v2")
    server.add_repo(SPLIT_REPO, {name: split_model_dir / name for name in SPLIT_NAMES})
    server.add_repo("prism-ml/Bonsai-1.7B-gguf", {"Bonsai-1.7B-Q1_0.gguf": tiny_model_path})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hub_env(hub: HubServer, tmp_path: Path) -> dict[str, str]:
    """Environment for subprocesses: the local Hub as HF_ENDPOINT, a private HF_HOME / cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_CACHE=str(tmp_path / "hf-cache"),
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_XET="1",
               HF_HUB_ETAG_TIMEOUT="5", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               PYTHONIOENCODING="utf-8")
    return env


# Run Python code in a subprocess. The code reports through `report(value)` (JSON on the last
# line of stdout). `fast_retries` makes huggingface_hub's back-off sleeps instant, for tests
# that talk to a stopped server.
_PRELUDE = """\
import json, sys
def report(value):
    print("\\nREPORT " + json.dumps(value), flush=True)
def error(fn, *a, **k):
    try:
        fn(*a, **k)
    except Exception as exc:
        return {"type": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__],
                "msg": str(exc), "cause": exc.__cause__ is not None or
                (exc.__context__ is not None and not exc.__suppress_context__)}
    return None
"""
_FAST_RETRIES = "import time\ntime.sleep = lambda s: None\n"


def run_py(code: str, env: dict[str, str], fast_retries: bool = False, timeout: float = 120,
           extra_env: Optional[dict[str, str]] = None):
    """Run `code` (with the prelude) in a fresh interpreter; return (report, completed process)."""
    full = (_FAST_RETRIES if fast_retries else "") + _PRELUDE + code
    proc = subprocess.run([sys.executable, "-c", full], env={**env, **(extra_env or {})},
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout)
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    assert lines, f"no report:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("REPORT "):]), proc
