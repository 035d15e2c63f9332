"""Downloads that break: an interrupted download resumes (HTTP Range) instead of starting over,
and a cached GGUF whose content no longer matches the Hub's sha256 is refetched (online) or
reported (offline), never loaded. Real huggingface_hub client against tests/hub_server.py."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from hub_fixtures import TINY_REPO, hub, hub_env, run_py, split_model_dir  # noqa: F401 - fixtures

FILE = "tiny-Q1_0.gguf"
URL_PATH = f"/{TINY_REPO}/resolve/main/{FILE}"
LOAD = f"""
from pybonsai import Llama
llm = Llama.from_pretrained({TINY_REPO!r}, filename={FILE!r}, vocab_only=True)
report(llm.model_path)
"""
TRY_LOAD = f"""
from pybonsai import Llama
report(error(Llama.from_pretrained, {TINY_REPO!r}, filename={FILE!r}, vocab_only=True))
"""


def _env(hub_env, tmp_path):
    return {**hub_env, "PYBONSAI_CACHE_DIR": str(tmp_path / "pybonsai-cache")}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _resumed(hub) -> list[int]:
    """Start offsets of the Range requests made for the file."""
    return [int(r.split("=")[1].split("-")[0]) for p, r in hub.ranges if p == URL_PATH and r]


# huggingface_hub writes the body in 10 MiB chunks: cut past the first one so that part is kept.
CUT = 12_000_000


def test_interrupted_download_resumes_within_one_call(hub, hub_env, tmp_path, tiny_model_path):
    assert tiny_model_path.stat().st_size > CUT
    hub.interrupt(URL_PATH, [CUT])  # the connection drops after 12 MB
    path, _ = run_py(LOAD, _env(hub_env, tmp_path), fast_retries=True)
    assert _sha256(Path(path)) == _sha256(tiny_model_path)
    starts = _resumed(hub)  # the rest was asked for, not the whole file again
    assert len(starts) == 1 and 0 < starts[0] <= CUT, hub.ranges


def test_download_of_a_killed_process_resumes_in_the_next_one(hub, hub_env, tmp_path, tiny_model_path):
    env = _env(hub_env, tmp_path)
    hub.stall(URL_PATH, CUT)  # 12 MB, then the server goes quiet; the client is killed meanwhile
    proc = subprocess.Popen([sys.executable, "-c", LOAD.replace("report(", "print(")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        partial: list[Path] = []
        while time.monotonic() < deadline and not (partial and partial[0].stat().st_size > 0):
            time.sleep(0.2)
            partial = list(Path(env["HF_HUB_CACHE"]).rglob("*.pybonsai-partial"))
        assert partial, "the download never started"
    finally:
        proc.kill()
        proc.wait()
        hub.release()
    kept = partial[0].stat().st_size
    assert 0 < kept <= CUT

    hub.ranges.clear()
    path, _ = run_py(LOAD, env)
    assert _sha256(Path(path)) == _sha256(tiny_model_path)
    assert _resumed(hub) == [kept]  # asked for the rest only
    assert not list(Path(env["HF_HUB_CACHE"]).rglob("*.pybonsai-partial"))


def _corrupt(path: Path) -> None:
    blob = path.resolve()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte deep in the tensor data: still a loadable GGUF
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))


def test_corrupted_cache_is_refetched_online_and_reported_offline(hub, hub_env, tmp_path, tiny_model_path):
    env = _env(hub_env, tmp_path)
    path = Path(run_py(LOAD, env)[0])
    n_gets = len(hub.fetched("GET"))
    assert run_py(LOAD, env)[0] == str(path) and len(hub.fetched("GET")) == n_gets  # cached, checked, reused

    _corrupt(path)
    offline, _ = run_py(TRY_LOAD, env, extra_env={"HF_HUB_OFFLINE": "1"})
    assert offline is not None and "HubError" in offline["mro"]
    assert "corrupted" in offline["msg"] and "sha256" in offline["msg"], offline

    again = run_py(LOAD, env)[0]  # online: detected, downloaded again, loaded
    assert again == str(path) and len(hub.fetched("GET")) == n_gets + 1
    assert _sha256(path) == _sha256(tiny_model_path)
