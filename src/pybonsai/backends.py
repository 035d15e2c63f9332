"""Loading ggml's backend modules (CPU variants, later CUDA) from the package directory."""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Optional

from . import _core

# The compiled libraries sit next to the extension (not next to this file in editable installs).
LIB_DIR = Path(_core.__file__).resolve().parent
_lock = threading.Lock()
_loaded = False


def ensure_loaded() -> None:
    """Load every backend module shipped in the package, once; fail clearly if none is usable."""
    global _loaded
    with _lock:
        if _loaded:
            return
        _core.load_backends(str(LIB_DIR))
        if not any(d["type"] == "cpu" for d in _core.devices()):
            shipped = sorted(p.name for p in LIB_DIR.glob("*ggml-cpu*"))
            raise RuntimeError(
                f"no CPU backend could be loaded from {LIB_DIR} (found: {shipped or 'none'}); "
                "the installation is incomplete or this CPU is not supported. "
                + (_core.take_log() or "")
            )
        _loaded = True


def devices() -> list[dict]:
    """Every device of every loaded backend: name, description, type, backend, memory."""
    ensure_loaded()
    return list(_core.devices())


def _loaded_cpu_library() -> Optional[str]:
    """Path of the CPU backend library mapped into this process (Linux), else None."""
    ensure_loaded()
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(None, 5)[-1].strip() for line in maps if "ggml-cpu" in line}
    except OSError:
        return None
    return min(paths) if paths else None


def loaded_cpu_variant() -> str:
    """Which CPU backend library this process loaded: a variant name such as 'icelake' in the
    distributable build, 'native' in a developer build, 'unknown' where it cannot be told."""
    path = _loaded_cpu_library()
    if path is None:
        return "unknown"
    stem = Path(path).name.split(".", 1)[0]  # libggml-cpu-icelake.so -> libggml-cpu-icelake
    return stem[len("libggml-cpu-"):] if stem.startswith("libggml-cpu-") else "native"


def _kernel_name(symbol: str) -> str:
    path = _loaded_cpu_library()
    if path is None:
        return "unknown"
    name_fn = getattr(ctypes.CDLL(path), symbol, None)
    if name_fn is None:
        return "upstream"  # a build without our kernels
    name_fn.restype = ctypes.c_char_p
    return name_fn().decode()


def q1_0_kernel_path() -> str:
    """The Q1_0 matmul path in use: 'avx512', 'avx2', 'scalar' (ours) or 'upstream'."""
    return _kernel_name("pybonsai_q1_0_kernel_name")


def q2_0_kernel_path() -> str:
    """The path Q2_0 matmuls run on: Q1_0's (ours, csrc/kernels/cpu/q2_0_kernels.h) or 'upstream'."""
    return _kernel_name("pybonsai_q2_0_kernel_name")


def q1_0_table_path_max_tokens() -> int:
    """Most tokens per matrix product that take the Q1_0 table-lookup path (0: multiply path only)."""
    path = _loaded_cpu_library()
    fn = getattr(ctypes.CDLL(path), "pybonsai_q1_0_lut_max_tokens", None) if path is not None else None
    return int(fn()) if fn is not None else 0


def system_info() -> dict:
    """What a bug report needs: versions, the llama.cpp pin, the CPU variant, backends, devices, GPU."""
    from . import __version__, gpu

    ensure_loaded()
    return {
        "pybonsai": __version__,
        "llama_cpp_commit": getattr(_core, "LLAMA_CPP_COMMIT", "unknown"),
        "cpu_variant": loaded_cpu_variant(),
        "q1_0_kernel": q1_0_kernel_path(),
        "q1_0_table_path_max_tokens": q1_0_table_path_max_tokens(),
        "q2_0_kernel": q2_0_kernel_path(),
        "cpu_features": _core.system_info().strip(),
        "backends": list(_core.backends()),
        "devices": devices(),
        "lib_dir": str(LIB_DIR),
        "gpu": gpu.status(),  # plugin, driver, runtime libraries; loads nothing
    }
