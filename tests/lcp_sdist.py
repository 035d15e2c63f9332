"""llama-cpp-python's sdist, pinned in vendor/LLAMA_CPP_LOCK: taken from vendor/.cache (or
downloaded there) with its sha256 checked by vendor/fetch_llama_cpp.py. Tests read files out of
it at test time; nothing of it is copied into this repository."""
from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fetch_module():
    spec = importlib.util.spec_from_file_location("_pybonsai_fetch_llama_cpp", ROOT / "vendor" / "fetch_llama_cpp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sdist_path() -> Path:
    """The hash-checked sdist (downloaded into vendor/.cache if it is not there yet)."""
    fetch = _fetch_module()
    return fetch.download_sdist(fetch.read_lock(), ROOT / "vendor" / ".cache")


def read_member(suffix: str) -> str:
    """The text of the sdist's one file whose path ends with `suffix`."""
    with tarfile.open(sdist_path()) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(suffix)), None)
        if member is None:
            raise FileNotFoundError(f"the llama-cpp-python sdist holds no file ending in {suffix}")
        return tar.extractfile(member).read().decode("utf-8")


def extract_tests(dest: Path) -> list[Path]:
    """Its tests/*.py, unchanged, into `dest`; returns their paths."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    with tarfile.open(sdist_path()) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py"):
                path = dest / parts[2]
                path.write_bytes(tar.extractfile(member).read())
                out.append(path)
    return sorted(out)
