"""GPU discovery without a GPU: every reason pybonsai.gpu gives for "no GPU offload", checked with a
fake plugin package, a fake site-packages `nvidia/` layout and a simulated driver (replacing
pybonsai.gpu's own helpers, never ctypes). Plus the CUDA plugin's packaging and CMake configure."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import pybonsai
from pybonsai import Llama, gpu

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "wheels" / "plugin"  # the plugin project: cuda12/, cuda13/, vulkan/ wheels
RUNTIME = [("cuda_runtime/lib", "libcudart.so.12"), ("cublas/lib", "libcublasLt.so.12"),
           ("cublas/lib", "libcublas.so.12")]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """Linux, no GPU device and no plugin loaded yet, whatever machine runs this; the fake plugin
    module is forgotten afterwards."""
    monkeypatch.setattr(gpu, "_platform", lambda: "linux")
    monkeypatch.setattr(gpu, "_gpu_devices", lambda: [])
    monkeypatch.setattr(gpu, "_loaded_backend", None)
    monkeypatch.setattr(gpu, "_preloaded", {})
    monkeypatch.setattr(gpu, "_last_failure", None)
    monkeypatch.delenv("PYBONSAI_CUDA_Q1", raising=False)
    for name in gpu.PLUGIN_PACKAGES:
        sys.modules.pop(name, None)
    yield
    for name in gpu.PLUGIN_PACKAGES:
        sys.modules.pop(name, None)


def _forbidden(what):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} must not be called here")
    return fail


def make_site(root: Path, *, version=pybonsai.__version__, library=b"garbage, not an ELF file\n",
              min_driver=12000, runtime=True, commit=None) -> Path:
    """A fake site-packages: pybonsai_cuda12/ (its library garbage) and NVIDIA's lib layout."""
    pkg = root / gpu.PLUGIN_PACKAGE
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        f"__version__ = {version!r}\nCUDA_MAJOR = 12\nMIN_DRIVER_VERSION = {min_driver}\n"
        'LIBRARY = "libggml-cuda.so"\n' + (f"LLAMA_CPP_COMMIT = {commit!r}\n" if commit else ""))
    if library is not None:
        (pkg / "libggml-cuda.so").write_bytes(library)
    if runtime:
        for subdir, name in RUNTIME:
            (root / "nvidia" / subdir).mkdir(parents=True, exist_ok=True)
            (root / "nvidia" / subdir / name).write_bytes(b"not really a library")
    return root


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = make_site(tmp_path / "site-packages")
    monkeypatch.syspath_prepend(str(root))
    return root


@pytest.fixture
def dlopened(monkeypatch):
    """Record what gpu preloads (in order) instead of loading it."""
    calls: list[str] = []
    monkeypatch.setattr(gpu, "_dlopen", calls.append)
    return calls


def fake_driver(monkeypatch, version):
    monkeypatch.setattr(gpu, "_load_driver", lambda: object())
    monkeypatch.setattr(gpu, "_query_driver_version", lambda driver: version)


def reason_of(n_gpu_layers=-1) -> gpu.GPUUnavailableError:
    with pytest.raises(gpu.GPUUnavailableError) as info:
        gpu.ensure_gpu(n_gpu_layers)
    assert isinstance(info.value, RuntimeError)
    assert f"n_gpu_layers={n_gpu_layers}" in str(info.value)
    return info.value


# --- Llama(...) wiring -------------------------------------------------------------------------

def test_llama_with_gpu_layers_and_no_plugin_says_how_to_install(tiny_model_path, monkeypatch):
    monkeypatch.setattr(gpu, "_find_plugin", lambda: None)
    with pytest.raises(gpu.GPUUnavailableError) as info:
        Llama(tiny_model_path, n_gpu_layers=3)
    assert info.value.reason == gpu.PLUGIN_MISSING
    assert 'pip install "pybonsai[cuda]"' in str(info.value)


# --- the n_gpu_layers rule (README, "GPU offload") ----------------------------------------------

def _no_driver(monkeypatch):
    def no_driver():
        raise OSError("libcuda.so.1: cannot open shared object file: No such file or directory")
    monkeypatch.setattr(gpu, "_load_driver", no_driver)
    monkeypatch.setattr(gpu, "_load_backend", _forbidden("_load_backend"))


def _fallback_warnings(record) -> list:
    return [w for w in record if issubclass(w.category, gpu.GPUFallbackWarning)]


@pytest.mark.parametrize("setup", ["no_plugin", "plugin_without_driver"])
def test_minus_one_without_a_gpu_runs_on_the_cpu_with_one_warning(tiny_model_path, monkeypatch, tmp_path,
                                                                  dlopened, setup):
    if setup == "no_plugin":
        monkeypatch.setattr(gpu, "_find_plugin", lambda: None)
        why = 'pip install "pybonsai[cuda]"'
    else:
        monkeypatch.syspath_prepend(str(make_site(tmp_path / "site-packages")))
        _no_driver(monkeypatch)
        why = "libcuda.so.1"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with Llama(tiny_model_path, n_gpu_layers=-1) as llm:
            out = llm.create_completion("Hello", max_tokens=3, temperature=0.0)
    assert out["choices"][0]["text"] is not None
    fallback = _fallback_warnings(record)
    assert len(fallback) == 1, [str(w.message) for w in record]
    msg = str(fallback[0].message)
    assert "n_gpu_layers=-1" in msg and "running on the CPU" in msg and why in msg
    assert "n_gpu_layers=0" in msg  # how to ask for the CPU without the warning
    assert fallback[0].filename == __file__  # points at the caller's Llama(...) line
    if setup == "plugin_without_driver":  # the runtime libraries were preloaded from the wheels first
        assert dlopened == [str(tmp_path / "site-packages" / "nvidia" / d / n) for d, n in RUNTIME]


def test_explicit_layers_that_cannot_be_offloaded_raise(tiny_model_path, site, dlopened, monkeypatch):
    _no_driver(monkeypatch)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(gpu.GPUUnavailableError) as info:
            Llama(tiny_model_path, n_gpu_layers=8)
    assert info.value.reason == gpu.DRIVER_MISSING
    assert "n_gpu_layers=8" in str(info.value) and "libcuda.so.1" in str(info.value)
    assert _fallback_warnings(record) == []


def test_resolve_n_gpu_layers(monkeypatch):
    monkeypatch.setattr(gpu, "load", _forbidden("gpu.load"))
    assert gpu.resolve_n_gpu_layers(0) == 0
    monkeypatch.setattr(gpu, "load", lambda: {"available": True})
    assert gpu.resolve_n_gpu_layers(-1) == -1 and gpu.resolve_n_gpu_layers(12) == 12
    monkeypatch.setattr(gpu, "load", lambda: {"available": False, "reason": gpu.NO_DEVICE, "message": "none."})
    with pytest.warns(gpu.GPUFallbackWarning):
        assert gpu.resolve_n_gpu_layers(-1) == 0
    with pytest.warns(gpu.GPUFallbackWarning):
        assert gpu.resolve_n_gpu_layers(-5) == 0  # any negative is "all layers", as in llama.cpp
    with pytest.raises(gpu.GPUUnavailableError):
        gpu.resolve_n_gpu_layers(1)


def test_q1_0_cuda_path_is_upstream_unless_opted_in():
    assert gpu.q1_0_cuda_path({})["active"] == "upstream"
    assert gpu.q1_0_cuda_path({"PYBONSAI_CUDA_Q1": "ours"})["active"] == "ours"
    assert gpu.q1_0_cuda_path({"PYBONSAI_CUDA_Q1": "f32"})["active"] == "ours-f32"
    odd = gpu.q1_0_cuda_path({"PYBONSAI_CUDA_Q1": "fast"})
    assert odd["active"] == "upstream" and "unknown" in odd["warning"]
    assert pybonsai.system_info()["gpu"]["q1_0_kernels"]["active"] == "upstream"


def test_plugin_is_not_installed_here():
    # The real discovery path on this machine (no GPU plugin on sys.path).
    installed = [n for n in gpu.PLUGIN_PACKAGES if gpu.importlib.util.find_spec(n) is not None]
    if installed:
        pytest.skip(f"a GPU plugin is installed in this environment: {installed}")
    assert reason_of(5).reason == gpu.PLUGIN_MISSING


def test_zero_gpu_layers_never_touches_the_gpu_path(tiny_model_path, monkeypatch):
    for name in ("load", "_find_plugin", "_load_driver", "_dlopen", "_load_backend"):
        monkeypatch.setattr(gpu, name, _forbidden(f"gpu.{name}"))
    assert gpu.ensure_gpu(0) is None
    with Llama(tiny_model_path, n_gpu_layers=0) as llm:
        assert llm.n_vocab() > 0


# --- each reason -------------------------------------------------------------------------------

def test_driver_not_found(site, dlopened, monkeypatch):
    def no_driver():
        raise OSError("libcuda.so.1: cannot open shared object file: No such file or directory")
    monkeypatch.setattr(gpu, "_load_driver", no_driver)
    monkeypatch.setattr(gpu, "_load_backend", _forbidden("_load_backend"))
    err = reason_of()
    assert err.reason == gpu.DRIVER_MISSING
    assert "NVIDIA driver was not found" in str(err)
    assert "libcuda.so.1: cannot open shared object file" in str(err)
    # the runtime libraries (which need no driver) were preloaded from the wheels first
    assert dlopened == [str(site / "nvidia" / subdir / name) for subdir, name in RUNTIME]
    st = gpu.status()
    assert st["unavailable"]["reason"] == gpu.DRIVER_MISSING
    assert [lib["preloaded_from"] for lib in st["runtime"]] == dlopened


def test_driver_too_old_names_both_versions(site, dlopened, monkeypatch):
    fake_driver(monkeypatch, 11080)
    monkeypatch.setattr(gpu, "_load_backend", _forbidden("_load_backend"))
    err = reason_of()
    assert err.reason == gpu.DRIVER_TOO_OLD
    assert "CUDA 11.8" in str(err) and "11080" in str(err)
    assert ">= 12.0" in str(err) and "12000" in str(err)


def test_driver_minimum_comes_from_the_plugin(tmp_path, dlopened, monkeypatch):
    monkeypatch.syspath_prepend(str(make_site(tmp_path, min_driver=12080)))
    fake_driver(monkeypatch, 12040)
    err = reason_of()
    assert err.reason == gpu.DRIVER_TOO_OLD
    assert "CUDA 12.4" in str(err) and ">= 12.8" in str(err)


def test_garbage_plugin_fails_to_load_quoting_the_loader(site, dlopened, monkeypatch):
    # The real ggml loader on a non-ELF file: dlopen rejects it before mapping anything, so this
    # runs in-process (checked below: no backend got registered).
    from pybonsai import _core

    fake_driver(monkeypatch, 12080)
    before = list(_core.backends())
    err = reason_of()
    assert err.reason == gpu.PLUGIN_LOAD_FAILED
    library = str(site / gpu.PLUGIN_PACKAGE / "libggml-cuda.so")
    assert f"the CUDA plugin {library} failed to load" in str(err)
    assert "file too short" in str(err) or "invalid ELF header" in str(err)  # dlerror(), quoted
    assert list(_core.backends()) == before
    assert gpu._loaded_backend is None
    # ...after preloading NVIDIA's libraries from the wheels, in dependency order.
    assert dlopened == [str(site / "nvidia" / subdir / name) for subdir, name in RUNTIME]


def test_plugin_package_without_its_library(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(make_site(tmp_path, library=None)))
    err = reason_of()
    assert err.reason == gpu.PLUGIN_MISSING and "is missing" in str(err)


def test_plugin_package_that_cannot_be_imported(tmp_path, monkeypatch):
    root = make_site(tmp_path)
    (root / gpu.PLUGIN_PACKAGE / "__init__.py").write_text("raise ImportError('half-installed')\n")
    monkeypatch.syspath_prepend(str(root))
    err = reason_of()
    assert err.reason == gpu.PLUGIN_MISSING and "half-installed" in str(err)
    assert "error" in gpu.status()  # the report says what went wrong instead of failing


def test_plugin_for_another_pybonsai_version(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(make_site(tmp_path, version="0.0.1")))
    monkeypatch.setattr(gpu, "_load_driver", _forbidden("_load_driver"))
    err = reason_of()
    assert err.reason == gpu.PLUGIN_MISMATCH
    assert "0.0.1" in str(err) and pybonsai.__version__ in str(err)


def test_plugin_from_another_llama_cpp_commit(tmp_path, monkeypatch):
    from pybonsai import _core

    if not hasattr(_core, "LLAMA_CPP_COMMIT"):
        pytest.skip("this _core does not report its llama.cpp commit")
    monkeypatch.syspath_prepend(str(make_site(tmp_path, commit="0" * 40)))
    err = reason_of()
    assert err.reason == gpu.PLUGIN_MISMATCH and "0" * 40 in str(err)


def test_missing_runtime_library_names_it_and_its_wheel(tmp_path, monkeypatch):
    root = make_site(tmp_path)
    (root / "nvidia" / "cublas" / "lib" / "libcublasLt.so.12").unlink()
    monkeypatch.syspath_prepend(str(root))
    fake_driver(monkeypatch, 12080)
    loaded: list[str] = []

    def dlopen(path):
        if not os.path.isabs(path):  # by name from the system: not there either
            raise OSError(f"{path}: cannot open shared object file: No such file or directory")
        loaded.append(path)
    monkeypatch.setattr(gpu, "_dlopen", dlopen)
    monkeypatch.setattr(gpu, "_load_backend", _forbidden("_load_backend"))
    err = reason_of()
    assert err.reason == gpu.RUNTIME_MISSING
    assert "libcublasLt.so.12" in str(err) and "nvidia-cublas-cu12" in str(err)
    assert loaded == [str(root / "nvidia" / "cuda_runtime" / "lib" / "libcudart.so.12")]


def test_preload_order_and_first_site_packages_wins(tmp_path, dlopened, monkeypatch):
    first, second = make_site(tmp_path / "a"), make_site(tmp_path / "b")
    monkeypatch.syspath_prepend(str(second))
    monkeypatch.syspath_prepend(str(first))
    assert gpu._nvidia_dirs()[:2] == [first / "nvidia", second / "nvidia"]
    located = gpu._preload_runtime(gpu._find_plugin())
    assert dlopened == [str(first / "nvidia" / subdir / name) for subdir, name in RUNTIME]
    assert [lib["wheel"] for lib in located] == ["nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12",
                                                 "nvidia-cublas-cu12"]
    assert all(lib["loaded_from"] == "wheel" for lib in located)


def test_loaded_but_no_device_mentions_cuda_visible_devices(site, dlopened, monkeypatch):
    fake_driver(monkeypatch, 12080)
    monkeypatch.setattr(gpu, "_load_backend", lambda path: "CUDA")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    err = reason_of()
    assert err.reason == gpu.NO_DEVICE
    assert "CUDA_VISIBLE_DEVICES=''" in str(err)


def test_success_loads_the_plugin_once(site, dlopened, monkeypatch):
    fake_driver(monkeypatch, 12080)
    devices: list[dict] = []
    loads: list[str] = []

    def load_backend(path):
        loads.append(path)
        devices.append({"name": "CUDA0", "type": "gpu", "backend": "CUDA"})
        return "CUDA"
    monkeypatch.setattr(gpu, "_load_backend", load_backend)
    monkeypatch.setattr(gpu, "_gpu_devices", lambda: list(devices))
    st = gpu.ensure_gpu(-1)
    assert st["available"] and st["reason"] is None and st["plugin_loaded"] == "CUDA"
    assert st["devices"][0]["name"] == "CUDA0"
    assert st["driver"]["cuda"] == "12.8"
    assert loads == [str(site / gpu.PLUGIN_PACKAGE / "libggml-cuda.so")]
    gpu.ensure_gpu(10)
    assert len(loads) == 1


# --- other platforms ---------------------------------------------------------------------------

def test_macos_metal_device_needs_no_plugin(monkeypatch):
    monkeypatch.setattr(gpu, "_platform", lambda: "darwin")
    monkeypatch.setattr(gpu, "_gpu_devices", lambda: [{"name": "MTL0", "type": "gpu", "backend": "MTL"}])
    monkeypatch.setattr(gpu, "_find_plugin", _forbidden("_find_plugin"))
    assert gpu.ensure_gpu(-1)["available"]


def test_macos_without_metal_device(monkeypatch):
    monkeypatch.setattr(gpu, "_platform", lambda: "darwin")
    err = reason_of()
    assert err.reason == gpu.NO_DEVICE and "Metal" in str(err)


def test_windows_is_unsupported_for_now(monkeypatch):
    monkeypatch.setattr(gpu, "_platform", lambda: "win32")
    err = reason_of()
    assert err.reason == gpu.UNSUPPORTED_PLATFORM
    assert "Windows" in str(err) and "cudart64_12.dll" in str(err)


# --- reporting -------------------------------------------------------------------------------

def test_system_info_reports_gpu_status_without_loading(site, monkeypatch):
    fake_driver(monkeypatch, 12080)
    monkeypatch.setattr(gpu, "_dlopen", _forbidden("_dlopen"))
    monkeypatch.setattr(gpu, "_load_backend", _forbidden("_load_backend"))
    info = pybonsai.system_info()["gpu"]
    assert info["platform"] == "linux" and info["plugin_loaded"] is None
    assert info["plugin"]["version"] == pybonsai.__version__
    assert info["plugin"]["library"] == str(site / gpu.PLUGIN_PACKAGE / "libggml-cuda.so")
    assert info["driver"] == {"found": True, "version": 12080, "cuda": "12.8", "error": None}
    assert [lib["path"] for lib in info["runtime"]] == [
        str(site / "nvidia" / subdir / name) for subdir, name in RUNTIME]
    assert [lib["preloaded_from"] for lib in info["runtime"]] == [None] * 3  # nothing loaded
    assert info["q1_0_kernels"]["active"] == "upstream"


def test_system_info_says_why_without_a_driver(site, monkeypatch):
    _no_driver(monkeypatch)
    monkeypatch.setattr(gpu, "_dlopen", _forbidden("_dlopen"))
    info = pybonsai.system_info()["gpu"]
    assert info["unavailable"]["reason"] == gpu.DRIVER_MISSING
    assert "libcuda.so.1" in info["unavailable"]["message"]



def test_system_info_says_the_driver_is_too_old_before_any_load(tmp_path, monkeypatch):
    """A CUDA 13 plugin ([cuda]) on an R550 driver (CUDA 12.4): system_info() names the reason, both
    versions, the driver branch needed and the CUDA 12 plugin as the alternative, loading nothing."""
    root = make_site(tmp_path / "site-packages", min_driver=13000)
    init = root / gpu.PLUGIN_PACKAGE / "__init__.py"
    init.write_text(init.read_text().replace("CUDA_MAJOR = 12", "CUDA_MAJOR = 13"))
    monkeypatch.syspath_prepend(str(root))
    fake_driver(monkeypatch, 12040)
    monkeypatch.setattr(gpu, "_dlopen", _forbidden("_dlopen"))
    monkeypatch.setattr(gpu, "_load_backend", _forbidden("_load_backend"))
    info = pybonsai.system_info()["gpu"]
    assert info["unavailable"]["reason"] == gpu.DRIVER_TOO_OLD
    message = info["unavailable"]["message"]
    for part in ("CUDA 12.4", "12040", ">= 13.0", "R580", 'pybonsai[cuda12]'):
        assert part in message, (part, message)
    assert info["driver"]["version"] == 12040 and info["plugin"]["cuda_major"] == 13
    monkeypatch.setattr(gpu, "_dlopen", lambda path: None)  # a load attempt preloads the runtime first
    err = reason_of()  # and a model asking for layers gets the same reason
    assert err.reason == gpu.DRIVER_TOO_OLD and "R580" in str(err)


def make_vulkan_site(root: Path) -> Path:
    pkg = root / "pybonsai_vulkan"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"__version__ = {pybonsai.__version__!r}\nBACKEND = 'vulkan'\n"
                                     "LIBRARY = 'libggml-vulkan.so'\n")
    (pkg / "libggml-vulkan.so").write_bytes(b"not a library")
    return root


def test_vulkan_plugin_without_a_loader_says_so(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(make_vulkan_site(tmp_path)))
    monkeypatch.setattr(gpu, "_load_vulkan_loader", lambda: (_ for _ in ()).throw(OSError("libvulkan.so.1: nope")))
    monkeypatch.setattr(gpu, "_load_driver", _forbidden("_load_driver"))  # no NVIDIA check for Vulkan
    monkeypatch.setattr(gpu, "_dlopen", _forbidden("_dlopen"))            # and no runtime preload
    monkeypatch.setattr(gpu, "_load_backend", _forbidden("_load_backend"))
    info = pybonsai.system_info()["gpu"]
    assert info["plugin"]["backend"] == "vulkan" and info["runtime"] == []
    assert info["unavailable"]["reason"] == gpu.DRIVER_MISSING and "libvulkan.so.1" in info["unavailable"]["message"]
    err = reason_of(4)
    assert err.reason == gpu.DRIVER_MISSING and "Vulkan loader" in str(err)


def test_vulkan_plugin_with_a_loader_is_loaded_then_needs_a_device(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(make_vulkan_site(tmp_path)))
    monkeypatch.setattr(gpu, "_load_vulkan_loader", lambda: object())
    loads: list[str] = []
    monkeypatch.setattr(gpu, "_load_backend", lambda path: loads.append(path) or "Vulkan")
    err = reason_of(4)
    assert loads == [str(tmp_path / "pybonsai_vulkan" / "libggml-vulkan.so")]
    assert err.reason == gpu.NO_DEVICE and "no Vulkan GPU" in str(err)


# --- the plugin wheel's configuration ------------------------------------------------------------

def _toml_string(text: str, key: str) -> str:
    match = re.search(rf'^{key} = "([^"]+)"', text, re.M)
    assert match, key
    return match.group(1)


def test_plugin_wheel_matches_this_version():
    v = pybonsai.__version__
    plugin_toml = (PLUGIN_DIR / "cuda12" / "pyproject.toml").read_text("utf-8")
    assert _toml_string(plugin_toml, "name") == "pybonsai-cuda12"
    assert _toml_string(plugin_toml, "version") == v
    for dep in (f'"pybonsai=={v}"', '"nvidia-cuda-runtime-cu12>=', '"nvidia-cublas-cu12>='):
        assert dep in plugin_toml
    assert 'PYBONSAI_PLUGIN_BACKEND = "cuda"' in plugin_toml and 'PYBONSAI_CUDA_MAJOR = "12"' in plugin_toml
    assert f'cuda12 = ["pybonsai-cuda12=={v}"]' in (REPO / "pyproject.toml").read_text("utf-8")
    # the plugin's __init__.py is configured by CMake: version from pip, major from the project
    init = (PLUGIN_DIR / "backends" / "cuda_init.py.in").read_text("utf-8")
    assert '__version__ = "@SKBUILD_PROJECT_VERSION@"' in init and "CUDA_MAJOR = @PYBONSAI_CUDA_MAJOR@" in init
    for subdir, name in RUNTIME:  # the preload order gpu.py falls back on is the plugin's
        assert f'("{subdir}", "{name}"' in init
    # the CUDA 13 variant: same CMake project, its own name, runtime wheels and SONAMEs
    toml13 = (PLUGIN_DIR / "cuda13" / "pyproject.toml").read_text("utf-8")
    assert _toml_string(toml13, "name") == "pybonsai-cuda13" and _toml_string(toml13, "version") == v
    for dep in (f'"pybonsai=={v}"', '"nvidia-cuda-runtime>=13', '"nvidia-cublas>=13', 'PYBONSAI_CUDA_MAJOR = "13"'):
        assert dep in toml13
    # pybonsai[cuda] is CUDA 13: the CUDA version whose whole compiler PyPI carries (README, GPU offload)
    assert f'cuda = ["pybonsai-cuda13=={v}"]' in (REPO / "pyproject.toml").read_text("utf-8")
    assert '("cu13/lib", "libcudart.so.13", "nvidia-cuda-runtime")' in init


def _nvcc():
    return shutil.which("nvcc") or next(
        (p for p in ("/usr/local/cuda/bin/nvcc",) if os.access(p, os.X_OK)), None)


def test_plugin_cmake_configure(tmp_path, llama_cpp_dir):
    """Configure (only) the plugin build with the real nvcc: CUDA language, upstream's ggml-cuda
    target, our architecture list. cuBLAS and the driver are stood in for by empty files: nothing
    is linked at configure time."""
    nvcc, cmake = _nvcc(), shutil.which("cmake")
    if nvcc is None:
        pytest.skip("nvcc is absent: the CUDA plugin's CMake configuration cannot be checked here")
    if cmake is None:
        pytest.skip("cmake is absent")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for lib in ("cublas", "cublasLt", "cuda"):
        (stubs / f"lib{lib}.so").write_bytes(b"")
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    build = tmp_path / "build"
    cmd = [cmake, "-S", str(PLUGIN_DIR), "-B", str(build), "-DPYBONSAI_PLUGIN_BACKEND=cuda",
           f"-DCMAKE_CUDA_COMPILER={nvcc}",
           f"-DCUDAToolkit_ROOT={Path(nvcc).resolve().parents[1]}",
           f"-DCUDA_cublas_LIBRARY={stubs / 'libcublas.so'}",
           f"-DCUDA_cublasLt_LIBRARY={stubs / 'libcublasLt.so'}",
           f"-DCUDA_cuda_driver_LIBRARY={stubs / 'libcuda.so'}"]
    major = re.search(r"release (\d+)\.", version).group(1)
    if major in ("12", "13"):
        cmd.append(f"-DPYBONSAI_CUDA_MAJOR={major}")  # the plugin for that toolkit, no override needed
    else:
        cmd.append("-DPYBONSAI_CUDA_ANY_TOOLKIT=ON")  # a check of the configuration only
    if shutil.which("ninja"):
        cmd += ["-G", "Ninja"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    log = result.stdout
    assert "Using CMAKE_CUDA_ARCHITECTURES=75-real;80-real;90-real;120a-real" in log
    rules = next(p for p in (build / "build.ninja", build / "Makefile") if p.exists())
    assert "ggml-cuda" in rules.read_text(errors="replace")
    info = (build / "plugin" / "__init__.py").read_text()
    assert re.search(r'LLAMA_CPP_COMMIT = "[0-9a-f]{40}"', info)
    namespace: dict = {}
    exec(compile(info, "__init__.py", "exec"), namespace)  # the configured package is valid Python
    assert namespace["CUDA_MAJOR"] == int(major) if major in ("12", "13") else True
    assert namespace["MIN_DRIVER_VERSION"] == namespace["CUDA_MAJOR"] * 1000
