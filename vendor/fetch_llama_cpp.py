#!/usr/bin/env python3
"""Fill vendor/llama.cpp/ with the pinned upstream tree and apply our patch queue.

Sources, in order:
  1. the tree already at the destination (kept; only the patch queue is brought up to date);
  2. a local checkout named by PYBONSAI_LLAMA_CPP_DIR (copied);
  3. the PyPI sdist named in LLAMA_CPP_LOCK, downloaded once into a cache, sha256 verified,
     of which only vendor/llama.cpp/ is extracted.

Then vendor/patches/*.patch are applied in name order. The set of applied patches is
recorded in the tree, so running this again is a no-op, and a changed queue is re-applied
from scratch (the old patches are reversed first). A patch that does not apply is an error.

Standard library only: CMake runs this at configure time, before anything is installed.

    python vendor/fetch_llama_cpp.py                    # vendor/llama.cpp, patched
    python vendor/fetch_llama_cpp.py --dest D --no-patches   # a pristine copy (benchmarks)
"""
from __future__ import annotations

import argparse
import hashlib
import html.parser
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

VENDOR = Path(__file__).resolve().parent
LOCK = VENDOR / "LLAMA_CPP_LOCK"
PATCHES = VENDOR / "patches"
STAMP = ".pybonsai-patches.json"
SOURCE_STAMP = ".pybonsai-source.json"  # which pin the tree was made from
APPLIED_DIR = ".pybonsai-applied"
MARKERS = ("include/llama.h", "ggml/include/ggml.h", "CMakeLists.txt")


class FetchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[fetch_llama_cpp] {msg}", file=sys.stderr, flush=True)


def read_lock() -> dict[str, str]:
    lock = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            lock[key.strip()] = value.strip()
    return lock


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_tree(path: Path) -> bool:
    return all((path / m).is_file() for m in MARKERS)


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


def _index_urls() -> list[str]:
    urls = [os.environ.get("PIP_INDEX_URL", "").strip()]
    urls.append("https://pypi.org/simple")
    return [u.rstrip("/") for u in urls if u]


def _find_sdist_url(name: str, filename: str) -> str:
    errors = []
    for index in _index_urls():
        page = f"{index}/{name}/"
        try:
            with urllib.request.urlopen(page, timeout=60) as r:
                parser = _Links()
                parser.feed(r.read().decode("utf-8", "replace"))
        except OSError as e:
            errors.append(f"{page}: {e}")
            continue
        for href in parser.hrefs:
            url = urllib.parse.urljoin(page, href)
            if urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1] == filename:
                return url.split("#", 1)[0]
        errors.append(f"{page}: no link to {filename}")
    raise FetchError("could not locate the sdist on any index:\n  " + "\n  ".join(errors))


def download_sdist(lock: dict[str, str], cache: Path) -> Path:
    name, _, version = lock["sdist"].partition("==")
    filename = f"{name.replace('-', '_')}-{version}.tar.gz"
    target = cache / filename
    want = lock["sdist_sha256"]
    if target.is_file() and sha256_of(target) == want:
        log(f"using cached {target}")
        return target
    cache.mkdir(parents=True, exist_ok=True)
    url = _find_sdist_url(name, filename)
    log(f"downloading {url}")
    tmp = target.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=300) as r, open(tmp, "wb") as f:
        shutil.copyfileobj(r, f, 1 << 20)
    got = sha256_of(tmp)
    if got != want:
        tmp.unlink()
        raise FetchError(f"sha256 mismatch for {filename}: expected {want}, got {got}")
    tmp.replace(target)
    return target


def extract_vendor_tree(sdist: Path, dest: Path) -> None:
    with tarfile.open(sdist) as tar:
        top = tar.getmembers()[0].name.split("/", 1)[0]
        prefix = f"{top}/vendor/llama.cpp/"
        members = []
        for m in tar.getmembers():
            if m.name.startswith(prefix) and len(m.name) > len(prefix):
                m.name = m.name[len(prefix):]
                if m.name == ".git" or m.name.startswith(".git/"):
                    continue  # the sdist's submodule link: it would make `git apply` look for a repo
                if not _safe_member(m):
                    raise FetchError(f"{sdist}: refusing unsafe archive member {m.name!r}")
                members.append(m)
        if not members:
            raise FetchError(f"{sdist} holds no vendor/llama.cpp/")
        staging = Path(tempfile.mkdtemp(prefix="llama.cpp.", dir=dest.parent))
        try:
            # The "data" filter exists from Python 3.9.17/3.10.12/3.11.4; _safe_member covers older ones.
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(staging, members=members, **extra)
            staging.chmod(0o755)
            staging.replace(dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _safe_member(m: tarfile.TarInfo) -> bool:
    parts = Path(m.name).parts
    if m.name.startswith("/") or ".." in parts:
        return False
    if m.issym() or m.islnk():
        target = Path(m.name).parent / m.linkname
        return not m.linkname.startswith("/") and ".." not in target.parts
    return m.isfile() or m.isdir()


def obtain_tree(dest: Path, cache: Path) -> None:
    if is_tree(dest):
        log(f"using existing tree {dest}")
        gitlink = dest / ".git"
        if gitlink.is_file():  # an sdist submodule link left by an older extraction
            gitlink.unlink()
        source = dest / SOURCE_STAMP
        pinned = read_lock()["commit"]
        if source.is_file() and json.loads(source.read_text()).get("commit") != pinned:
            raise FetchError(f"{dest} was made from another llama.cpp commit than the pin {pinned} "
                             "(vendor/LLAMA_CPP_LOCK); delete it and rerun")
        return
    if dest.exists() and any(dest.iterdir()):
        raise FetchError(f"{dest} exists but is not a llama.cpp tree; remove it and rerun")
    if dest.exists():
        dest.rmdir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    local = os.environ.get("PYBONSAI_LLAMA_CPP_DIR")
    if local:
        src = Path(local).expanduser().resolve()
        if not is_tree(src):
            raise FetchError(f"PYBONSAI_LLAMA_CPP_DIR={src} is not a llama.cpp tree")
        log(f"copying {src}")
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".git", "build*", STAMP, APPLIED_DIR, SOURCE_STAMP))
        return
    lock = read_lock()
    extract_vendor_tree(download_sdist(lock, cache), dest)
    (dest / SOURCE_STAMP).write_text(json.dumps({"commit": lock["commit"], "sdist": lock["sdist"]}))
    log(f"extracted upstream into {dest}")


def _git_apply(tree: Path, patch: Path, *flags: str) -> subprocess.CompletedProcess:
    if shutil.which("git") is None:
        raise FetchError("applying vendor/patches needs `git` on PATH (git apply); install git")
    # Keep git from discovering an enclosing repository: inside one, `git apply` silently
    # skips paths outside its index view.
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(tree.parent))
    return subprocess.run(["git", "apply", "--whitespace=nowarn", *flags, str(patch)],
                          cwd=tree, env=env, capture_output=True, text=True)


def sync_patches(tree: Path, queue: list[Path]) -> None:
    stamp = tree / STAMP
    applied_dir = tree / APPLIED_DIR
    want = [[p.name, sha256_of(p)] for p in queue]
    have = json.loads(stamp.read_text()) if stamp.is_file() else []
    if have == want:
        log(f"patch queue up to date ({len(want)} patches)")
        return
    while have:
        name = have[-1][0]
        res = _git_apply(tree, applied_dir / name, "-R")
        if res.returncode != 0:
            raise FetchError(f"cannot reverse previously applied {name}; delete {tree} and rerun\n{res.stderr}")
        have.pop()
        stamp.write_text(json.dumps(have))
        log(f"reversed {name}")
    shutil.rmtree(applied_dir, ignore_errors=True)
    stamp.write_text("[]")
    applied_dir.mkdir()
    done = []
    for patch, entry in zip(queue, want):
        check = _git_apply(tree, patch, "--check")
        if check.returncode != 0:
            raise FetchError(f"patch {patch.name} does not apply to {tree}:\n{check.stderr}")
        res = _git_apply(tree, patch)
        if res.returncode != 0:
            raise FetchError(f"patch {patch.name} failed:\n{res.stderr}")
        shutil.copy2(patch, applied_dir / patch.name)
        done.append(entry)
        stamp.write_text(json.dumps(done))
        log(f"applied {patch.name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", type=Path, default=VENDOR / "llama.cpp")
    ap.add_argument("--no-patches", action="store_true", help="leave the tree pristine")
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("PYBONSAI_CACHE_DIR", VENDOR / ".cache")))
    args = ap.parse_args(argv)
    dest = args.dest.resolve()
    try:
        obtain_tree(dest, args.cache.resolve())
        if args.no_patches:
            if (dest / STAMP).is_file() and json.loads((dest / STAMP).read_text()):
                raise FetchError(f"{dest} already carries patches; use another --dest for a pristine tree")
        else:
            sync_patches(dest, sorted(PATCHES.glob("*.patch")))
    except (FetchError, OSError, tarfile.TarError) as e:
        log(f"ERROR: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
