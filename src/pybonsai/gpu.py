"""GPU offload: finding, checking and loading a GPU plugin (CUDA or Vulkan); Metal on macOS.

The base wheel ships CPU backends only. `pip install "pybonsai[cuda]"` adds the `pybonsai_cuda13`
package (ggml's CUDA backend, libggml-cuda.so) and NVIDIA's CUDA 13 runtime wheels (which unpack
into nvidia/cu13/lib in site-packages; NVIDIA driver R580+); `pybonsai[cuda12]` the same for CUDA 12
(`pybonsai_cuda12`, `nvidia-cuda-runtime-cu12`, `nvidia-cublas-cu12`; driver R525+);
`pybonsai[vulkan]` adds `pybonsai_vulkan` (libggml-vulkan.so), which needs only the system's Vulkan
loader (libvulkan.so.1) and a Vulkan driver: step 2 is skipped and step 3 checks the loader. When
several plugins are installed, the first of PLUGIN_PACKAGES is used. Loading the plugin is
lazy: only a model created with n_gpu_layers != 0 (or an explicit load()) does it:

  1. find the plugin (importlib; importing it loads no library) and check it matches this pybonsai;
  2. preload NVIDIA's runtime libraries from site-packages (RTLD_GLOBAL, dependency order), so the
     plugin's NEEDED entries resolve by SONAME whatever its RPATH (they need no driver to load);
  3. check the NVIDIA driver: libcuda.so.1 loadable, cuDriverGetVersion() >= the plugin's minimum;
  4. hand libggml-cuda.so to ggml (_core.load_backend) and check that a CUDA device appeared.

Every failure has its own reason and message. What Llama(n_gpu_layers=...) does with it
(resolve_n_gpu_layers): 0 -> never looks for a GPU; -1 (or any negative: "all layers", as in
llama-cpp-python) -> the GPU when there is one, else the CPU with ONE GPUFallbackWarning naming the
reason and the fix; N > 0 (an explicit request) -> GPUUnavailableError with the reason. On macOS,
Metal is built into the base wheel: a registered Metal device is all n_gpu_layers needs. Windows
(and other platforms) have no plugin yet.
"""
from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Optional

from . import _core

PLUGIN_PACKAGES = ("pybonsai_cuda12", "pybonsai_cuda13", "pybonsai_vulkan")  # the first installed is used
PLUGIN_PACKAGE = PLUGIN_PACKAGES[0]
INSTALL_HINT = 'pip install "pybonsai[cuda]"'
INSTALL_CHOICES = ('pip install "pybonsai[cuda]" (NVIDIA, CUDA 13, driver R580+), "pybonsai[cuda12]" '
                   '(NVIDIA, driver R525+) or "pybonsai[vulkan]" (AMD, Intel or NVIDIA through Vulkan)')
DRIVER_LIBRARY = "libcuda.so.1"
VULKAN_LOADER = "libvulkan.so.1"
# The first NVIDIA driver branch of each CUDA major (the plugins run on any driver of that major on).
DRIVER_BRANCH = {12: "R525", 13: "R580"}
GPU_DEVICE_TYPES = ("gpu", "igpu")

# Reasons, as GPUUnavailableError.reason and status()["reason"].
UNSUPPORTED_PLATFORM = "unsupported_platform"
PLUGIN_MISSING = "plugin_missing"
PLUGIN_MISMATCH = "plugin_mismatch"
DRIVER_MISSING = "driver_missing"
DRIVER_TOO_OLD = "driver_too_old"
RUNTIME_MISSING = "runtime_missing"
PLUGIN_LOAD_FAILED = "plugin_load_failed"
NO_DEVICE = "no_device"


class GPUUnavailableError(RuntimeError):
    """GPU offload was requested (n_gpu_layers != 0) but no GPU backend device is usable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class GPUFallbackWarning(RuntimeWarning):
    """n_gpu_layers=-1 (offload everything if there is a GPU) found no usable GPU: running on the CPU."""


class _Unavailable(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_lock = threading.Lock()
_loaded_backend: Optional[str] = None  # the backend name once the plugin is loaded (never twice)
_preloaded: dict[str, str] = {}        # runtime library name -> the path (or name) it was loaded from
_last_failure: Optional[dict] = None   # reason and message of the last load() that found no GPU


# --- the pieces, each replaceable in tests ---------------------------------------------------

def _dlopen(path: str) -> Any:
    """Load a shared library into the global namespace (so later libraries resolve against it)."""
    return ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


def _load_driver() -> Any:
    """The NVIDIA driver's CUDA library; raises OSError where it cannot be loaded."""
    return ctypes.CDLL(DRIVER_LIBRARY)


def _query_driver_version(driver: Any) -> int:
    """cuDriverGetVersion(): 1000*major + 10*minor of the newest CUDA the driver supports (needs
    no cuInit and no device)."""
    version = ctypes.c_int(0)
    rc = driver.cuDriverGetVersion(ctypes.byref(version))
    if rc != 0:
        raise OSError(f"cuDriverGetVersion failed (CUresult {rc})")
    return version.value


def _load_backend(path: str) -> str:
    return _core.load_backend(path)


def _platform() -> str:
    return sys.platform


def _gpu_devices() -> list:
    return [d for d in _core.devices() if d["type"] in GPU_DEVICE_TYPES]


def _nvidia_dirs() -> list[Path]:
    """The `nvidia` namespace package directories NVIDIA's wheels install into (every sys.path
    entry that has one, in sys.path order)."""
    out: list[Path] = []
    for entry in sys.path:
        candidate = Path(entry or os.getcwd()) / "nvidia"
        if candidate.is_dir() and candidate not in out:
            out.append(candidate)
    return out


def _backend(plugin: Any) -> str:
    """'cuda' or 'vulkan': what a plugin package ships (CUDA plugins built before BACKEND existed: cuda)."""
    return getattr(plugin, "BACKEND", "cuda")


def _label(plugin: Any) -> str:
    return "Vulkan" if _backend(plugin) == "vulkan" else "CUDA"


def _load_vulkan_loader() -> Any:
    """The system's Vulkan loader; raises OSError where it cannot be loaded."""
    return ctypes.CDLL(VULKAN_LOADER)


def _version_str(v: Optional[int]) -> Optional[str]:
    return None if v is None else f"{v // 1000}.{(v % 1000) // 10}"


# --- discovery ---------------------------------------------------------------------------------

def _find_plugin() -> Optional[Any]:
    """The plugin module (imported: it only defines constants), or None if not installed."""
    name = next((n for n in PLUGIN_PACKAGES if importlib.util.find_spec(n) is not None), None)
    if name is None:
        return None
    try:
        return importlib.import_module(name)
    except Exception as exc:  # a broken installation: say so rather than fail with an ImportError
        raise _Unavailable(PLUGIN_MISSING, f"the CUDA plugin package {name} is installed but "
                           f"cannot be imported ({type(exc).__name__}: {exc}); reinstall it with "
                           f"{INSTALL_HINT}.") from None


def _plugin_info(plugin: Any) -> dict:
    library = Path(plugin.__file__).resolve().parent / getattr(plugin, "LIBRARY", "libggml-cuda.so")
    return {
        "package": getattr(plugin, "__name__", PLUGIN_PACKAGE),
        "backend": _backend(plugin),
        "version": getattr(plugin, "__version__", None),
        "library": str(library),
        "library_exists": library.is_file(),
        "cuda_major": getattr(plugin, "CUDA_MAJOR", None),
        "min_driver_version": _version_str(getattr(plugin, "MIN_DRIVER_VERSION", None)),
        "cuda_toolkit": getattr(plugin, "CUDA_TOOLKIT_VERSION", None),
        "cuda_architectures": getattr(plugin, "CUDA_ARCHITECTURES", None),
        "llama_cpp_commit": getattr(plugin, "LLAMA_CPP_COMMIT", None),
    }


def _runtime_libraries(plugin: Any) -> list[tuple[str, str, str]]:
    """(subdirectory of nvidia/, file name, wheel) for each library to preload, in load order."""
    default = (("cuda_runtime/lib", "libcudart.so.12", "nvidia-cuda-runtime-cu12"),
               ("cublas/lib", "libcublasLt.so.12", "nvidia-cublas-cu12"),
               ("cublas/lib", "libcublas.so.12", "nvidia-cublas-cu12"))
    if _backend(plugin) != "cuda":
        return []  # Vulkan: nothing but the system's loader, checked by _check_driver
    return [tuple(x) for x in getattr(plugin, "RUNTIME_LIBRARIES", default)]


def _locate_runtime(plugin: Any) -> list[dict]:
    """Where each runtime library is: a path under site-packages/nvidia, or None (then only a
    system-wide install can provide it)."""
    roots = _nvidia_dirs()
    found = []
    for subdir, name, wheel in _runtime_libraries(plugin):
        path = next((root / subdir / name for root in roots if (root / subdir / name).is_file()), None)
        found.append({"name": name, "wheel": wheel, "path": str(path) if path else None,
                      "preloaded_from": _preloaded.get(name)})
    return found


def _preload_runtime(plugin: Any) -> list[dict]:
    """Load NVIDIA's runtime libraries in dependency order; each from its wheel when installed,
    else by name from the system's library path. Raises _Unavailable naming the missing one."""
    located = _locate_runtime(plugin)
    for lib in located:
        target = lib["path"] or lib["name"]
        try:
            _dlopen(target)
        except OSError as exc:
            if lib["path"]:
                raise _Unavailable(RUNTIME_MISSING, f"the CUDA runtime library {lib['path']} (from the "
                                   f"wheel {lib['wheel']}) could not be loaded: {exc}.") from None
            searched = ", ".join(str(d) for d in _nvidia_dirs()) or "no nvidia/ directory on sys.path"
            raise _Unavailable(RUNTIME_MISSING, f"the CUDA runtime library {lib['name']} was not found: it "
                               f"comes with the wheel {lib['wheel']} (pip install {lib['wheel']}, or "
                               f"reinstall with {INSTALL_HINT}); searched site-packages ({searched}) and "
                               f"the system library path ({exc}).") from None
        lib["loaded_from"] = "wheel" if lib["path"] else "system"
        lib["preloaded_from"] = _preloaded[lib["name"]] = target
    return located


def _driver_info() -> dict:
    try:
        driver = _load_driver()
    except OSError as exc:
        return {"found": False, "version": None, "error": str(exc)}
    try:
        version = _query_driver_version(driver)
    except (OSError, AttributeError) as exc:
        return {"found": False, "version": None, "error": str(exc)}
    return {"found": True, "version": version, "cuda": _version_str(version), "error": None}


def _check_plugin(plugin: Any) -> dict:
    from . import __version__

    info = _plugin_info(plugin)
    label, package = _label(plugin), info["package"]
    if not info["library_exists"]:
        raise _Unavailable(PLUGIN_MISSING, f"the {label} plugin package {package} is installed but its "
                           f"library {info['library']} is missing; reinstall it with {INSTALL_HINT}.")
    if info["version"] != __version__:
        raise _Unavailable(PLUGIN_MISMATCH, f"the {label} plugin {package} {info['version']} does not match "
                           f"pybonsai {__version__} (both are built from one llama.cpp tree); install the "
                           f'matching one: pip install "pybonsai[cuda]=={__version__}".')
    ours = getattr(_core, "LLAMA_CPP_COMMIT", None)
    if info["llama_cpp_commit"] and ours and info["llama_cpp_commit"] != ours:
        raise _Unavailable(PLUGIN_MISMATCH, f"the {label} plugin was built from llama.cpp {info['llama_cpp_commit']}, "
                           f"this pybonsai from {ours}; rebuild or reinstall the plugin from the same tree.")
    return info


def _vulkan_loader_info() -> dict:
    try:
        _load_vulkan_loader()
    except OSError as exc:
        return {"found": False, "library": VULKAN_LOADER, "error": str(exc)}
    return {"found": True, "library": VULKAN_LOADER, "error": None}


def _too_old_message(plugin: Any, info: dict) -> Optional[str]:
    """Why the found NVIDIA driver cannot run this CUDA plugin, or None when it can."""
    need = getattr(plugin, "MIN_DRIVER_VERSION", 12000)
    major = getattr(plugin, "CUDA_MAJOR", 12)
    if info["version"] >= need and info["version"] // 1000 >= major:
        return None
    branch = DRIVER_BRANCH.get(major)
    hint = ('; or install "pybonsai[cuda12]" (driver R525+)' if major > 12 else "")
    return (f"the NVIDIA driver is too old: it supports CUDA {info['cuda']} (cuDriverGetVersion "
            f"{info['version']}), the CUDA {major} plugin needs CUDA >= {_version_str(need)} ({need})"
            + (f", i.e. driver {branch} or newer" if branch else "") + f"; update the NVIDIA driver{hint}.")


def _check_driver(plugin: Any) -> dict:
    if _backend(plugin) == "vulkan":
        info = _vulkan_loader_info()
        if not info["found"]:
            raise _Unavailable(DRIVER_MISSING, f"the Vulkan loader was not found: {VULKAN_LOADER} could not be "
                               f"loaded ({info['error']}). Install your GPU's Vulkan driver and loader "
                               "(Debian/Ubuntu: libvulkan1 and mesa-vulkan-drivers for AMD/Intel, the NVIDIA "
                               "driver for NVIDIA).")
        return info
    info = _driver_info()
    if not info["found"]:
        raise _Unavailable(DRIVER_MISSING, f"the NVIDIA driver was not found: {DRIVER_LIBRARY} could not be "
                           f"loaded ({info['error']}). Install the NVIDIA driver; in a container, run it "
                           "with GPU access (e.g. docker run --gpus all, the NVIDIA container toolkit).")
    too_old = _too_old_message(plugin, info)
    if too_old:
        raise _Unavailable(DRIVER_TOO_OLD, too_old)
    return info


def _load_plugin(info: dict) -> str:
    global _loaded_backend
    if _loaded_backend is None:
        try:
            _loaded_backend = _load_backend(info["library"])
        except (RuntimeError, OSError) as exc:  # _core.LlamaError is a RuntimeError
            if info.get("backend") == "vulkan" and "ggml_backend_init returned NULL" in str(exc):
                # ggml-vulkan's registration fails when vkCreateInstance does: the loader found no
                # Vulkan driver (ICD) at all. That is "no device", not a broken plugin.
                raise _Unavailable(NO_DEVICE, "no Vulkan GPU: the Vulkan loader found no Vulkan driver "
                                   "(vkCreateInstance failed; vulkaninfo --summary shows what it finds). "
                                   "Install your GPU's Vulkan driver (Mesa: mesa-vulkan-drivers).") from None
            raise _Unavailable(PLUGIN_LOAD_FAILED, f"the {'Vulkan' if info.get('backend') == 'vulkan' else 'CUDA'} "
                               f"plugin {info['library']} failed to load: "
                               f"{str(exc).strip()}") from None
    return _loaded_backend


def _platform_unavailable() -> Optional[_Unavailable]:
    platform = _platform()
    if platform.startswith("linux"):
        return None
    if platform == "darwin":
        return _Unavailable(NO_DEVICE, "no Metal GPU device is registered (macOS uses the Metal backend "
                            "built into pybonsai, no plugin: this build has Metal off or the Mac has no "
                            "Metal device).")
    if platform == "win32":
        return _Unavailable(UNSUPPORTED_PLATFORM, "GPU offload is not supported on Windows yet: the CUDA "
                            "plugin wheel is Linux-only (a Windows one would ship ggml-cuda.dll and need "
                            "cudart64_12.dll, cublas64_12.dll, cublasLt64_12.dll from the NVIDIA wheels' bin/ "
                            "directories and the driver's nvcuda.dll).")
    return _Unavailable(UNSUPPORTED_PLATFORM, f"GPU offload is not supported on {platform}: the CUDA "
                        "plugin wheel is Linux-only.")


# --- public API --------------------------------------------------------------------------------

def load() -> dict:
    """Make a GPU backend available if possible; returns status() plus "available", "reason" and
    "message" (why not). Loads the CUDA plugin at most once per process; never raises for a
    missing GPU."""
    from . import backends

    backends.ensure_loaded()
    with _lock:
        reason = message = None
        try:
            if not _gpu_devices():  # Metal (macOS) or an already loaded plugin needs nothing more
                problem = _platform_unavailable()
                if problem is not None:
                    raise problem
                plugin = _find_plugin()
                if plugin is None:
                    raise _Unavailable(PLUGIN_MISSING, "no GPU plugin is installed: "
                                       f"{INSTALL_CHOICES}.")
                info = _check_plugin(plugin)
                _preload_runtime(plugin)  # before the driver check: proves the wheels' libraries load
                _check_driver(plugin)
                _load_plugin(info)
                if not _gpu_devices() and _backend(plugin) == "vulkan":
                    raise _Unavailable(NO_DEVICE, "the Vulkan backend loaded but sees no Vulkan GPU "
                                       "(vulkaninfo --summary lists what the loader finds; a CPU-type "
                                       "device such as Mesa's lavapipe is used only when "
                                       "GGML_VK_VISIBLE_DEVICES names it, e.g. GGML_VK_VISIBLE_DEVICES=0). "
                                       + (_core.take_log() or "").strip())
                if not _gpu_devices():
                    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
                    raise _Unavailable(NO_DEVICE, "the CUDA backend loaded but sees no CUDA device "
                                       f"(CUDA_VISIBLE_DEVICES={visible!r}"
                                       + ("; unset it or list a device" if visible is not None else "")
                                       + "). " + (_core.take_log() or "").strip())
        except _Unavailable as exc:
            reason, message = exc.reason, str(exc)
        global _last_failure
        _last_failure = None if reason is None else {"reason": reason, "message": message}
    out = status()
    out.update(available=reason is None, reason=reason, message=message)
    return out


def ensure_gpu(n_gpu_layers: int) -> Optional[dict]:
    """With n_gpu_layers != 0, make sure a GPU device is there (loading the CUDA plugin if needed)
    or raise GPUUnavailableError saying exactly why. n_gpu_layers == 0 does nothing at all."""
    if n_gpu_layers == 0:
        return None
    st = load()
    if not st["available"]:
        raise GPUUnavailableError(st["reason"], f"n_gpu_layers={n_gpu_layers} asks for GPU offload, but "
                                  f"{st['message']} (n_gpu_layers=0 runs on the CPU.)")
    return st


def resolve_n_gpu_layers(n_gpu_layers: int) -> int:
    """The rule Llama(...) applies (README, "GPU offload"): 0 -> 0, nothing looked up; N > 0 -> N
    if a GPU is usable, else GPUUnavailableError naming the reason (an explicit request is never
    silently dropped); negative (-1: "as many layers as possible", llama-cpp-python's idiom) -> -1
    with a GPU, else 0 with exactly one GPUFallbackWarning saying why and how to fix it."""
    if n_gpu_layers >= 0:
        ensure_gpu(n_gpu_layers)
        return n_gpu_layers
    st = load()
    if st["available"]:
        return n_gpu_layers
    warnings.warn(GPUFallbackWarning(
        f"n_gpu_layers={n_gpu_layers}: no usable GPU, running on the CPU. Why: {st['message']} "
        "(n_gpu_layers=0 asks for the CPU and silences this; an explicit n_gpu_layers=N > 0 raises "
        "GPUUnavailableError instead.)"), stacklevel=3)
    return 0


def q1_0_cuda_path(environ: Optional[dict] = None) -> dict:
    """Which kernels run Q1_0 matrix products on CUDA, from PYBONSAI_CUDA_Q1, parsed exactly as the
    plugin does (pybonsai_q1_0_cuda_parse_mode in csrc/kernels/cuda/q1_0_mmv.cu): upstream's by
    default; ours only when opted in ("ours"/"q8": int8 activations + dp4a, "f32": fp32
    activations) until a GPU run has measured them (KL vs the CPU, speed vs upstream)."""
    value = (os.environ if environ is None else environ).get("PYBONSAI_CUDA_Q1")
    active = {None: "upstream", "": "upstream", "upstream": "upstream", "ours": "ours", "q8": "ours",
              "f32": "ours-f32"}.get(value)
    out = {"env": value, "active": active or "upstream", "default": "upstream"}
    if active is None:
        out["warning"] = f"unknown PYBONSAI_CUDA_Q1={value!r} (expected upstream, ours or f32): upstream is used"
    return out


def status() -> dict:
    """What is known without loading anything new: the plugin, the driver, the runtime libraries,
    whether a GPU backend is loaded and its devices. For system_info() and bug reports."""
    out: dict = {"platform": _platform(), "plugin_loaded": _loaded_backend, "plugin": None,
                 "driver": None, "runtime": None, "q1_0_kernels": q1_0_cuda_path(),
                 "unavailable": _last_failure}
    try:
        out["devices"] = _gpu_devices()
        if out["platform"].startswith("linux"):
            plugin = _find_plugin()
            if plugin is not None:
                out["plugin"] = _plugin_info(plugin)
                out["runtime"] = _locate_runtime(plugin)
            vulkan = plugin is not None and _backend(plugin) == "vulkan"
            out["driver"] = _vulkan_loader_info() if vulkan else _driver_info()
            if out["unavailable"] is None and not out["devices"]:  # why not, as far as known unloaded
                if plugin is None:
                    out["unavailable"] = {"reason": PLUGIN_MISSING, "message": f"no GPU plugin is "
                                          f"installed: {INSTALL_CHOICES}"}
                elif not out["driver"]["found"]:
                    missing = VULKAN_LOADER if vulkan else DRIVER_LIBRARY
                    what = "Vulkan loader" if vulkan else "NVIDIA driver"
                    out["unavailable"] = {"reason": DRIVER_MISSING, "message": f"the {what} was not "
                                          f"found: {missing} could not be loaded ({out['driver']['error']})"}
                elif not vulkan and _too_old_message(plugin, out["driver"]):
                    # reported before any load attempt too: a report names the fix before a model fails
                    out["unavailable"] = {"reason": DRIVER_TOO_OLD,
                                          "message": _too_old_message(plugin, out["driver"])}
    except Exception as exc:  # a report must not fail: say what went wrong instead
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out
