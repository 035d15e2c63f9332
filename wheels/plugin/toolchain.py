#!/usr/bin/env python3
"""Assemble a CUDA toolkit that CMake's FindCUDAToolkit accepts, without a system install.

    python wheels/plugin/toolchain.py --cuda 13 DEST     # prints the toolkit root on its last line

CUDA 13: everything from NVIDIA's wheels on PyPI (nvidia-cuda-nvcc, -crt, nvidia-nvvm, -cuda-runtime,
-cuda-cccl, -cublas), installed with `pip install --target DEST/site`. They all unpack into
`nvidia/cu13/` (bin/nvcc, nvvm/bin/cicc, include/, lib/), which is then a toolkit root once it has
what a wheel cannot carry: the link names (`libcudart.so` -> `libcudart.so.13`, ...), the
`targets/x86_64-linux` view nvcc.profile expects, and `lib/stubs/libcuda.so` (a stub of the driver
API, SONAME libcuda.so.1, generated from cuda.h: ggml-cuda links the driver for its VMM pool, and
NVIDIA ships the driver outside any wheel).

CUDA 12: PyPI has no CUDA 12 compiler driver (`nvidia-cuda-nvcc-cu12`, every version 12.0-12.9,
holds only ptxas, libnvvm and headers: no nvcc, cicc, cudafe++, fatbinary or nvlink), so the
toolkit comes from NVIDIA's redistributable archives (developer.download.nvidia.com/compute/cuda/
redist, checked against the sha256 in that release's redistrib_<version>.json): cuda_nvcc,
cuda_cudart, cuda_cccl, libcublas, unpacked into DEST/cuda-<version>. Plus the same stub and links.

Either way the user's machine still gets the runtime libraries from the nvidia-* wheels (the
plugin wheel depends on them); the toolkit here is for building only.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

# The toolkit release each plugin major is built with. 13.0: the oldest 13.x (driver R580+ runs it
# all, PTX included). 12.9: the newest 12.x (sm_120 needs >= 12.8); any 12.x driver runs its SASS.
PYPI_PACKAGES = {
    13: ["nvidia-cuda-nvcc==13.0.*", "nvidia-cuda-crt==13.0.*", "nvidia-nvvm==13.0.*",
         "nvidia-cuda-runtime==13.0.*", "nvidia-cuda-cccl==13.0.*", "nvidia-cublas==13.0.*"],
}
REDIST = {
    12: ("12.9.1", ["cuda_nvcc", "cuda_cudart", "cuda_cccl", "libcublas"]),
}
REDIST_URL = "https://developer.download.nvidia.com/compute/cuda/redist/"
PLATFORM = "linux-x86_64"
TARGET_DIR = "targets/x86_64-linux"


def log(msg: str) -> None:
    print(f"toolchain: {msg}", file=sys.stderr, flush=True)


def pip_install(packages: list[str], site: Path) -> None:
    if site.exists():
        shutil.rmtree(site)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary=:all:", "--target", str(site),
           *packages]
    log(" ".join(cmd))
    subprocess.run(cmd, check=True)


def fetch_redist(version: str, components: list[str], root: Path, cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(f"{REDIST_URL}redistrib_{version}.json", timeout=60) as r:
        manifest = json.load(r)
    root.mkdir(parents=True, exist_ok=True)
    for comp in components:
        entry = manifest[comp][PLATFORM]
        archive = cache / Path(entry["relative_path"]).name
        if not archive.is_file() or hashlib.sha256(archive.read_bytes()).hexdigest() != entry["sha256"]:
            log(f"downloading {entry['relative_path']}")
            urllib.request.urlretrieve(REDIST_URL + entry["relative_path"], archive)
        if hashlib.sha256(archive.read_bytes()).hexdigest() != entry["sha256"]:
            raise SystemExit(f"toolchain: sha256 mismatch for {archive}")
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts[1:]  # strip the archive's top directory
                if not parts or parts[0] in ("LICENSE",):
                    continue
                member.name = str(Path(*parts))
                tar.extract(member, root, filter="tar" if hasattr(tarfile, "data_filter") else None)


def link_names(lib: Path) -> None:
    """libfoo.so -> libfoo.so.N for every versioned library (wheels hold only the SONAME files)."""
    for f in sorted(lib.glob("lib*.so.*")):
        m = re.match(r"(lib.+\.so)\.\d+$", f.name)
        if m and not (lib / m.group(1)).exists():
            (lib / m.group(1)).symlink_to(f.name)


def driver_stub(root: Path, lib: Path) -> Path:
    """lib/stubs/libcuda.so: every driver API entry point declared in cuda.h, SONAME libcuda.so.1.
    Only for linking; the real driver is loaded at run time."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise SystemExit("toolchain: a C compiler is needed to make the libcuda.so link stub")
    pre = subprocess.run([cc, "-E", "-P", "-I", str(root / "include"), str(root / "include" / "cuda.h")],
                         check=True, capture_output=True, text=True).stdout
    names = sorted(set(re.findall(r"\bCUresult\s+(cu[A-Z]\w*)\s*\(", pre)))
    if len(names) < 100:
        raise SystemExit(f"toolchain: only {len(names)} driver functions found in cuda.h")
    stubs = lib / "stubs"
    stubs.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "libcuda_stub.c"
        src.write_text("".join(f"int {n}(void) {{ return 34; }}\n" for n in names))  # CUDA_ERROR_STUB_LIBRARY
        out = stubs / "libcuda.so"
        subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(src), "-Wl,-soname,libcuda.so.1"], check=True)
    log(f"driver stub: {len(names)} functions -> {out}")
    return out


def finish(root: Path) -> Path:
    lib = root / "lib"
    if (root / "lib64").is_dir() and not (root / "lib64").is_symlink() and not lib.exists():
        lib = root / "lib64"
    link_names(lib)
    driver_stub(root, lib)
    for alias in ("lib64", "lib"):
        if not (root / alias).exists():
            (root / alias).symlink_to(lib.name)
    target = root / TARGET_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name in ("include", "lib", "lib64"):
        if not (target / name).exists():
            (target / name).symlink_to(Path("../..") / name)
    nvcc = root / "bin" / "nvcc"
    out = subprocess.run([str(nvcc), "--version"], check=True, capture_output=True, text=True).stdout
    log(out.strip().splitlines()[-1])
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cuda", type=int, choices=sorted({*PYPI_PACKAGES, *REDIST}), default=13)
    ap.add_argument("dest", type=Path, help="directory to assemble the toolkit in (reused if complete)")
    args = ap.parse_args()
    dest = args.dest.resolve()
    stamp = dest / f"cuda{args.cuda}.ready"
    if stamp.is_file():
        print(stamp.read_text().strip())
        return 0
    if args.cuda in PYPI_PACKAGES:
        pip_install(PYPI_PACKAGES[args.cuda], dest / "site")
        root = finish(dest / "site" / "nvidia" / f"cu{args.cuda}")
    else:
        version, components = REDIST[args.cuda]
        root = dest / f"cuda-{version}"
        if root.exists():
            shutil.rmtree(root)
        fetch_redist(version, components, root, dest / "archives")
        root = finish(root)
    stamp.write_text(f"{root}\n")
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
