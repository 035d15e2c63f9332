"""The Vulkan plugin executed end to end on whatever Vulkan device the machine has: in CI and on
developers' machines that is Mesa's lavapipe (mesa-vulkan-drivers), a conformant Vulkan device that
runs on the CPU, so ggml-vulkan's shaders, the offload path and the plugin packaging really run.

For the tiny Q1_0 model and the tiny Q2_0 (ternary) one, fully (n_gpu_layers=-1) and partially (2: the
second of 2 blocks + the output layer) offloaded: no CPU fallback, logits over every prompt position within mean KL 1e-3 of the
CPU path's and not bit-identical to them (wheels/check_offload.py). Plus generation and embeddings
on the device, and the CPU fallback with one warning when the loader finds no device.

Each check runs in a subprocess: ggml-vulkan reads GGML_VK_VISIBLE_DEVICES once, when it registers,
and lavapipe is a CPU-type device, which ggml-vulkan uses only when that variable names it.
Skipped, saying why, only where pybonsai-vulkan is not installed or the Vulkan loader finds no device.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "wheels" / "check_offload.py"

# Counts the loader's physical devices through the C API (no vulkaninfo needed): 0 when there is no
# loader, no driver (ICD) or no device.
_COUNT_DEVICES = textwrap.dedent("""
    import ctypes
    try:
        vk = ctypes.CDLL("libvulkan.so.1")
    except OSError:
        print(0); raise SystemExit
    class CreateInfo(ctypes.Structure):  # VkInstanceCreateInfo
        _fields_ = [("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("flags", ctypes.c_uint32),
                    ("pApplicationInfo", ctypes.c_void_p), ("enabledLayerCount", ctypes.c_uint32),
                    ("ppEnabledLayerNames", ctypes.c_void_p), ("enabledExtensionCount", ctypes.c_uint32),
                    ("ppEnabledExtensionNames", ctypes.c_void_p)]
    info, instance, count = CreateInfo(sType=1), ctypes.c_void_p(), ctypes.c_uint32(0)
    if vk.vkCreateInstance(ctypes.byref(info), None, ctypes.byref(instance)) != 0:
        print(0); raise SystemExit
    vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), None)
    vk.vkDestroyInstance(instance, None)
    print(count.value)
""")


def _device_count() -> int:
    res = subprocess.run([sys.executable, "-c", _COUNT_DEVICES], capture_output=True, text=True, timeout=120)
    return int(res.stdout.strip() or 0) if res.returncode == 0 else 0


@pytest.fixture(scope="module")
def vulkan_env():
    if importlib.util.find_spec("pybonsai_vulkan") is None:
        pytest.skip("pybonsai-vulkan is not installed (wheels/plugin/build_and_test_vulkan.sh builds it; "
                    "pip install wheels/plugin/vulkan from a clone)")
    if _device_count() == 0:
        pytest.skip("the Vulkan loader finds no device (for Mesa's lavapipe: apt-get install "
                    "mesa-vulkan-drivers libvulkan1)")
    return {**os.environ, "GGML_VK_VISIBLE_DEVICES": os.environ.get("GGML_VK_VISIBLE_DEVICES", "0")}


@pytest.mark.parametrize("shape", ["tiny", "ternary-tiny"])
@pytest.mark.parametrize("ngl", [-1, 2])  # 2 of the 3 (2 blocks + output): layer 1 + output
def test_logits_agree_with_the_cpu(vulkan_env, shape, ngl):
    res = subprocess.run([sys.executable, str(CHECK), "--backend", "vulkan", "--shape", shape, "--ngl", str(ngl)],
                         capture_output=True, text=True, env=vulkan_env, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(out)
    assert out["mean_kl"] <= 1e-3 and not out["bit_identical"]


_GENERATE_AND_EMBED = textwrap.dedent("""
    import json, subprocess, sys, tempfile, warnings
    import numpy as np
    from pybonsai import Llama, gpu
    warnings.simplefilter("error", gpu.GPUFallbackWarning)
    tmp = tempfile.mkdtemp()
    for shape in ("tiny", "tiny-embed"):
        subprocess.run([sys.executable, "-m", "pybonsai.synth", f"{tmp}/{shape}.gguf", "--shape", shape,
                        "--seed", "0"], check=True, stdout=subprocess.DEVNULL)
    out = {}
    for ngl in (0, -1):
        with Llama(f"{tmp}/tiny.gguf", n_gpu_layers=ngl, n_ctx=256, seed=1) as llm:
            out[f"text{ngl}"] = llm.create_completion("Hello", max_tokens=8, temperature=0.0)["choices"][0]["text"]
        with Llama(f"{tmp}/tiny-embed.gguf", n_gpu_layers=ngl, embedding=True, n_ctx=256) as llm:
            out[f"emb{ngl}"] = np.asarray(llm.embed("a short sentence to embed"), dtype=np.float64).ravel().tolist()
    a, b = np.array(out["emb0"]), np.array(out["emb-1"])
    print(json.dumps({"text_cpu": out["text0"], "text_gpu": out["text-1"],
                      "embedding_cosine": float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)),
                      "status": gpu.status()["devices"]}))
""")


def test_generation_and_embeddings_on_the_device(vulkan_env):
    res = subprocess.run([sys.executable, "-c", _GENERATE_AND_EMBED], capture_output=True, text=True,
                         env=vulkan_env, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(out)
    assert any(d["backend"].lower().startswith("vulkan") for d in out["status"]), out["status"]
    assert out["text_gpu"], out
    assert out["embedding_cosine"] > 0.999, out


_NO_DEVICE = textwrap.dedent("""
    import subprocess, sys, tempfile, warnings
    from pybonsai import Llama, gpu
    model = tempfile.mktemp(suffix=".gguf")
    subprocess.run([sys.executable, "-m", "pybonsai.synth", model, "--shape", "tiny"], check=True,
                   stdout=subprocess.DEVNULL)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with Llama(model, n_gpu_layers=-1) as llm:
            llm.create_completion("Hello", max_tokens=2, temperature=0.0)
    fallback = [w for w in record if issubclass(w.category, gpu.GPUFallbackWarning)]
    assert len(fallback) == 1, [str(w.message) for w in record]
    assert gpu.status()["unavailable"]["reason"] == gpu.NO_DEVICE, gpu.status()["unavailable"]
    print(fallback[0].message)
""")


@pytest.mark.parametrize("case", ["no_driver", "cpu_device_only"])
def test_no_vulkan_device_falls_back_with_one_warning(vulkan_env, case):
    """No Vulkan driver at all (the loader finds no ICD), and a machine whose only Vulkan device is
    lavapipe with GGML_VK_VISIBLE_DEVICES unset (ggml-vulkan does not take a CPU-type device for a
    GPU): both are "no_device", with one warning for n_gpu_layers=-1."""
    env = {k: v for k, v in vulkan_env.items() if k != "GGML_VK_VISIBLE_DEVICES"}
    if case == "no_driver":
        env["VK_ICD_FILENAMES"] = "/nonexistent/icd.json"
    else:  # lavapipe alone, whatever GPUs the machine has
        icd = Path("/usr/share/vulkan/icd.d/lvp_icd.x86_64.json")
        if not icd.is_file():
            pytest.skip(f"Mesa's lavapipe is not installed ({icd} is absent)")
        env["VK_ICD_FILENAMES"] = str(icd)
    res = subprocess.run([sys.executable, "-c", _NO_DEVICE], capture_output=True, text=True, env=env,
                         timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "no Vulkan GPU" in res.stdout, res.stdout


def test_server_offloads_to_the_device(vulkan_env, tiny_model_path, tmp_path, monkeypatch):
    """`pybonsai serve -ngl -1` runs the model on the Vulkan device: /v1/models names it, and a
    chat through the real openai client gets its 8 tokens."""
    from server_process import openai_client, running_server

    monkeypatch.setenv("GGML_VK_VISIBLE_DEVICES", vulkan_env["GGML_VK_VISIBLE_DEVICES"])
    with running_server(tiny_model_path, tmp_path / "server.log", "-ngl", "-1", "--parallel", "2") as srv, \
            openai_client(srv) as client:
        meta = client.models.list().data[0].model_extra["meta"]
        assert meta["n_gpu_layers"] == -1 and meta["gpu_devices"], meta
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=8, temperature=0)
        assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 8
        log = srv.log()
    assert "GPUFallbackWarning" not in log and "no Vulkan GPU" not in log, log
