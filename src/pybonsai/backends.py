"""Loading ggml's backend modules (CPU variants, later CUDA) from the package directory."""
from __future__ import annotations

import threading
from pathlib import Path

from . import _core

PACKAGE_DIR = Path(__file__).resolve().parent
_lock = threading.Lock()
_loaded = False


def ensure_loaded() -> None:
    """Load every backend module shipped in the package, once; fail clearly if none is usable."""
    global _loaded
    with _lock:
        if _loaded:
            return
        _core.load_backends(str(PACKAGE_DIR))
        if not any(d["type"] == "cpu" for d in _core.devices()):
            shipped = sorted(p.name for p in PACKAGE_DIR.glob("*ggml-cpu*"))
            raise RuntimeError(
                f"no CPU backend could be loaded from {PACKAGE_DIR} (found: {shipped or 'none'}); "
                "the installation is incomplete or this CPU is not supported. "
                + (_core.take_log() or "")
            )
        _loaded = True


def devices() -> list[dict]:
    """Every device of every loaded backend: name, description, type, backend, memory."""
    ensure_loaded()
    return list(_core.devices())
