"""GGUF files from the Hugging Face Hub, through `huggingface_hub` and its cache.

    from pybonsai.hub import from_pretrained
    path = from_pretrained("prism-ml/Bonsai-8B-gguf", filename="*Q1_0.gguf")

`filename` may be a glob (matched against the repository's file list, or against the cached
snapshot when offline); without it the repository must hold a single GGUF model. Split models
(`NAME-00001-of-0000N.gguf`) are fetched whole and the first part is returned: llama.cpp loads
the other parts from the same directory. Downloads go to the Hugging Face cache
(`HF_HUB_CACHE`, or `cache_dir`); `HF_HUB_OFFLINE=1` or `local_files_only=True` resolve from the
cache only. Network and Hub failures raise `HubError` with a one-line explanation.

Downloads: an interrupted download resumes where it stopped. huggingface_hub itself resumes
after a dropped connection within one call, but (since 1.x) throws the partial file away when the
call fails or the process dies; so a GGUF (an LFS file, named by its sha256) is fetched by us
into `blobs/<sha256>.pybonsai-partial` in the Hugging Face cache, which survives Ctrl-C, crashes
and network failures, and the next call asks only for the rest (HTTP Range). Every GGUF taken from the cache is
checked against the sha256 the Hub published for it (the LFS object id, which names the cached
blob): in full after each download and whenever the file's size, modification time or inode
changed since its last check (recorded under the pybonsai cache, `PYBONSAI_CACHE_DIR`). A file
that no longer matches is fetched again, or, offline, reported as corrupted; it is never loaded.

`huggingface_hub` is imported on first use, so that importing this module costs nothing and
`HF_ENDPOINT` / `HF_HUB_OFFLINE` set before the first call are honoured.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional, Sequence, Union

__all__ = ["HubError", "from_pretrained", "split_parts", "choose_model_file"]

PathLike = Union[str, "os.PathLike[str]"]

_SPLIT_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_GLOB_CHARS = set("*?[")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_HINT_OFFLINE = ("pass a local .gguf path instead, or use a file already in the Hugging Face cache "
                 "(HF_HUB_OFFLINE=1 or local_files_only=True)")


class HubError(OSError):
    """The Hugging Face Hub could not give us the file: unreachable, repository or revision not
    found, or (offline) not in the cache. The message says what to do instead."""


# --- choosing files (pure: no network) -----------------------------------------------------

def split_parts(filename: str) -> list[str]:
    """Every part of a llama.cpp split GGUF (`NAME-0000K-of-0000N.gguf`), first one first;
    `[filename]` for an ordinary file."""
    m = _SPLIT_RE.match(PurePosixPath(filename).name)
    if not m:
        return [filename]
    count = int(m["count"])
    if count < 1:
        return [filename]
    parent = PurePosixPath(filename).parent
    names = [f"{m['prefix']}-{i:05d}-of-{m['count']}.gguf" for i in range(1, count + 1)]
    return [n if str(parent) == "." else f"{parent}/{n}" for n in names]


def _models(files: Iterable[str]) -> list[str]:
    """GGUF models among `files`: ordinary .gguf files and, for each split set, its first part."""
    out: list[str] = []
    for f in files:
        if not f.lower().endswith(".gguf"):
            continue
        first = split_parts(f)[0]
        if first not in out:
            out.append(first)
    return out


def _glob(pattern: str, files: Sequence[str]) -> list[str]:
    """Files matching `pattern` (the whole path, or the base name when the pattern has no "/");
    case-sensitive first, case-insensitive if nothing matched."""
    def match(f: str, fold: bool) -> bool:
        name = f if "/" in pattern else PurePosixPath(f).name
        if fold:
            return fnmatch.fnmatchcase(name.lower(), pattern.lower()) or fnmatch.fnmatchcase(f.lower(), pattern.lower())
        return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(f, pattern)

    hits = [f for f in files if match(f, False)]
    return hits or [f for f in files if match(f, True)]


def _list(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def choose_model_file(repo_id: str, files: Sequence[str], filename: Optional[str]) -> str:
    """The file to load from a repository holding `files` (the first part for a split model).

    `filename`: an exact name, a glob, or None for "the only GGUF model". Raises
    FileNotFoundError when nothing matches, ValueError when several models do."""
    files = sorted(files)
    candidates = _models(files)
    if filename is None:
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise FileNotFoundError(f"{repo_id} has no .gguf file (files: {_list(files)})")
        raise ValueError(f"{repo_id} has {len(candidates)} GGUF models; choose one with filename= "
                         f"(a name or a glob such as '*Q1_0.gguf'): {_list(candidates)}")
    if filename in files:
        return split_parts(filename)[0]
    hits = _glob(filename, files) if _GLOB_CHARS & set(filename) else []
    if not hits:
        raise FileNotFoundError(f"no file matching {filename!r} in {repo_id}; "
                                f"GGUF files there: {_list(candidates)}")
    models = _models(hits) or hits
    if len(models) > 1:
        raise ValueError(f"{filename!r} matches {len(models)} files in {repo_id}; "
                         f"use a more specific name or glob: {_list(models)}")
    return split_parts(models[0])[0]


# --- huggingface_hub glue ------------------------------------------------------------------

def _hf():
    try:
        import huggingface_hub
        import huggingface_hub.constants  # noqa: F401 - submodules, not always loaded by the package
        import huggingface_hub.utils  # noqa: F401
    except ImportError as exc:  # declared as a dependency; a broken install still gets a clear message
        raise ImportError("downloading models needs huggingface_hub: pip install 'huggingface_hub>=0.24'") from exc
    return huggingface_hub


def _offline() -> bool:
    constants = _hf().constants
    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if callable(check) else constants.HF_HUB_OFFLINE)


def _endpoint() -> str:
    return _hf().constants.ENDPOINT


def _is_network_error(exc: BaseException) -> bool:
    """A connection/timeout/protocol failure from any HTTP stack huggingface_hub has used."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        module = type(exc).__module__.split(".")[0]
        if module in ("requests", "urllib3", "httpx", "httpx2", "httpcore", "httpcore2", "h11", "ssl", "socket"):
            return True
        if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__name__ == "OfflineModeIsEnabled":
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _transient(exc: BaseException) -> bool:
    """The Hub could not be reached or failed on its side (worth falling back to the cache)."""
    if _is_network_error(exc):
        return True
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return isinstance(exc, _hf().utils.HfHubHTTPError) and status is not None and status >= 500


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _hub_error(exc: BaseException, repo_id: str, what: str, revision: Optional[str],
               local_only: bool) -> Exception:
    """Translate a huggingface_hub / HTTP exception into a friendly one (or return it as is)."""
    u = _hf().utils
    rev = f" at revision {revision!r}" if revision else ""
    if isinstance(exc, u.RevisionNotFoundError):
        return HubError(f"revision {revision!r} not found in {repo_id} on {_endpoint()}")
    if isinstance(exc, u.RepositoryNotFoundError):
        return HubError(f"repository {repo_id!r} not found on {_endpoint()} (or it is private or gated: "
                        "log in with `hf auth login` or set HF_TOKEN)")
    if isinstance(exc, u.LocalEntryNotFoundError) or type(exc).__name__ == "OfflineModeIsEnabled":
        if local_only:
            return HubError(f"{what} from {repo_id}{rev} is not in the Hugging Face cache and downloads are "
                            "disabled (HF_HUB_OFFLINE=1 or local_files_only=True); download it once online, "
                            "or pass a local .gguf path")
        return HubError(f"cannot reach the Hugging Face Hub ({_endpoint()}) to fetch {what} from {repo_id}{rev}, "
                        f"and it is not in the cache; check the connection, or {_HINT_OFFLINE}")
    if isinstance(exc, u.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None and status >= 500:
            return HubError(f"the Hugging Face Hub ({_endpoint()}) failed with HTTP {status} while fetching {what} "
                            f"from {repo_id}; try again later, or {_HINT_OFFLINE}")
        return HubError(f"the Hugging Face Hub refused {what} from {repo_id}{rev}: {_short(exc)}")
    if _is_network_error(exc):
        return HubError(f"cannot reach the Hugging Face Hub ({_endpoint()}) for {repo_id} ({_short(exc)}); "
                        f"check the connection, or {_HINT_OFFLINE}")
    return exc


def _cached_files(repo_id: str, revision: Optional[str], cache_dir: Optional[PathLike]) -> Optional[list[str]]:
    """Files of the cached snapshot of `repo_id` at `revision` (None when nothing is cached)."""
    root = Path(cache_dir if cache_dir is not None else _hf().constants.HF_HUB_CACHE).expanduser()
    repo_dir = root / ("models--" + repo_id.replace("/", "--"))
    revision = revision or "main"
    commit = revision if _COMMIT_RE.match(revision) else None
    if commit is None:
        ref = repo_dir / "refs" / revision
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
    snapshot = repo_dir / "snapshots" / commit
    if not snapshot.is_dir():
        return None
    return sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if not p.is_dir())


def _list_repo(repo_id: str, revision: Optional[str], cache_dir: Optional[PathLike], local_only: bool) -> list[str]:
    """The repository's file list: from the Hub, or from the cached snapshot when offline or
    when the Hub cannot be reached."""
    if not local_only:
        try:
            return list(_hf().HfApi().list_repo_files(repo_id, revision=revision))
        except Exception as exc:  # noqa: BLE001 - translated below
            err = _hub_error(exc, repo_id, "the file list", revision, local_only)
            if not _transient(exc):
                raise err from None
            cached = _cached_files(repo_id, revision, cache_dir)
            if cached is None:
                raise err from None
            return cached
    cached = _cached_files(repo_id, revision, cache_dir)
    if cached is None:
        rev = f" at revision {revision!r}" if revision else ""
        raise HubError(f"{repo_id}{rev} is not in the Hugging Face cache and downloads are disabled "
                       "(HF_HUB_OFFLINE=1 or local_files_only=True); download it once online, "
                       "or pass a local .gguf path")
    return cached


def _download(repo_id: str, filename: str, revision: Optional[str], cache_dir: Optional[PathLike],
              local_only: bool) -> Path:
    path = _fetch(repo_id, filename, revision, cache_dir, local_only)
    if _content_matches(path):
        return path
    if local_only:
        raise HubError(f"the cached {filename} from {repo_id} ({path.resolve()}) is corrupted: its content no "
                       "longer matches the sha256 the Hub published for it; download it again online "
                       "(it is refetched automatically) or delete it")
    path = _fetch(repo_id, filename, revision, cache_dir, local_only, force=True)
    if not _content_matches(path):
        raise HubError(f"{filename} from {repo_id} does not match the sha256 the Hub published for it, even after "
                       f"downloading it again ({path.resolve()}); the file on the Hub or the connection is broken")
    return path


# --- content checks ----------------------------------------------------------------------

def _verified_dir() -> Path:
    base = os.environ.get("PYBONSAI_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "pybonsai")
    return Path(base) / "verified"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _content_matches(path: Path) -> bool:
    """Whether a cached file still has the sha256 the Hub published for it. The cache stores an
    LFS file as blobs/<sha256>; other layouts (and non-LFS files) have nothing to check against."""
    blob = path.resolve()
    expected = blob.name
    if blob.parent.name != "blobs" or not _SHA256_RE.match(expected):
        return True
    st = blob.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "sha256": expected}
    marker = _verified_dir() / hashlib.sha256(str(blob).encode()).hexdigest()
    try:
        if json.loads(marker.read_text()) == stamp:
            return True  # checked in full since it last changed
    except (OSError, ValueError):
        pass
    if _sha256(blob) != expected:
        return False
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(stamp))
    except OSError:
        pass  # a read-only home: the file is checked in full every time
    return True


def _prefetch_resumable(repo_id: str, filename: str, revision: Optional[str],
                        cache_dir: Optional[PathLike], force: bool) -> None:
    """Download an LFS file into its cache blob through a partial file that outlives failures
    (see the module docstring). Best effort: on any problem, hf_hub_download does the work
    (and reports the errors)."""
    hf = _hf()
    from huggingface_hub.file_download import http_get

    try:
        meta = hf.get_hf_file_metadata(hf.hf_hub_url(repo_id, filename, revision=revision))
    except Exception:  # noqa: BLE001 - hf_hub_download will meet and report the same problem
        return
    etag, size = meta.etag, meta.size
    if not etag or not _SHA256_RE.match(etag) or size is None or not meta.location:
        return  # not an LFS file: nothing to check a partial file against
    root = Path(cache_dir if cache_dir is not None else hf.constants.HF_HUB_CACHE).expanduser()
    blobs = root / ("models--" + repo_id.replace("/", "--")) / "blobs"
    blob, partial = blobs / etag, blobs / f"{etag}.pybonsai-partial"
    if blob.exists() and not force:
        return
    blobs.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(partial) + ".lock"):
        if blob.exists() and not force:
            return
        with open(partial, "ab") as f:
            have = f.tell()
            if have > size:
                f.truncate(0)
                have = 0
            if have < size:
                http_get(meta.location, f, resume_size=have, headers=hf.utils.build_hf_headers(),
                         expected_size=size, displayed_filename=filename)
        if _sha256(partial) != etag:
            partial.unlink()  # wrong bytes: start over (through hf_hub_download)
            return
        os.replace(partial, blob)


def _fetch(repo_id: str, filename: str, revision: Optional[str], cache_dir: Optional[PathLike],
           local_only: bool, force: bool = False) -> Path:
    if not local_only:
        try:
            _prefetch_resumable(repo_id, filename, revision, cache_dir, force)
            force = False  # the blob is in place (or hf_hub_download will fetch it)
        except Exception as exc:  # noqa: BLE001 - the partial file stays for the next call
            err = _hub_error(exc, repo_id, filename, revision, local_only)
            raise (err if err is not exc else exc) from None
    try:
        path = _hf().hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                     local_files_only=local_only, force_download=force)
    except Exception as exc:  # noqa: BLE001 - translated below
        u = _hf().utils
        if isinstance(exc, u.EntryNotFoundError) and not isinstance(exc, u.LocalEntryNotFoundError):
            raise _missing(repo_id, filename, revision, cache_dir, local_only) from None
        err = _hub_error(exc, repo_id, filename, revision, local_only)
        if err is exc:
            raise
        raise err from None
    return Path(path)


def _missing(repo_id: str, filename: str, revision: Optional[str], cache_dir: Optional[PathLike],
             local_only: bool) -> FileNotFoundError:
    try:
        candidates = _list(_models(_list_repo(repo_id, revision, cache_dir, local_only)))
    except Exception:  # noqa: BLE001 - the listing only decorates the message
        candidates = "unknown"
    return FileNotFoundError(f"{filename!r} is not in {repo_id}; GGUF files there: {candidates}")


def from_pretrained(repo_id: str, filename: Optional[str] = None, revision: Optional[str] = None,
                    cache_dir: Optional[PathLike] = None, local_files_only: bool = False) -> Path:
    """The local path of a GGUF from the Hub repository `repo_id` ("owner/name"), downloaded
    into the Hugging Face cache if needed (with the Hub's progress bar).

    `filename`: the file's name, or a glob such as "*Q1_0.gguf"; None picks the repository's
    only GGUF model. For a split model every part is fetched and the first is returned.
    `revision`: branch, tag or commit (default "main"). `local_files_only` (or HF_HUB_OFFLINE=1)
    resolves from the cache without touching the network.

    Raises FileNotFoundError (no matching file; the message lists the GGUF files), ValueError
    (several files match), HubError (Hub unreachable, repository/revision not found, not cached).
    """
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must look like 'owner/name', got {repo_id!r}")
    local_only = bool(local_files_only) or _offline()
    if filename is not None and not (_GLOB_CHARS & set(filename)):
        chosen = split_parts(filename)[0]      # an exact name: no listing needed
    else:
        chosen = choose_model_file(repo_id, _list_repo(repo_id, revision, cache_dir, local_only), filename)
    parts = split_parts(chosen)
    first = _download(repo_id, parts[0], revision, cache_dir, local_only)
    # Pin the other parts to the commit the first came from, so that all land in one snapshot
    # directory (llama.cpp looks for them next to the first).
    pinned = _snapshot_commit(first, parts[0]) or revision
    for part in parts[1:]:
        _download(repo_id, part, pinned, cache_dir, local_only)
    return first


def _snapshot_commit(path: Path, filename: str) -> Optional[str]:
    """The commit of the cache snapshot holding `path` (…/snapshots/COMMIT/FILENAME), if any."""
    snapshot = path.parents[len(PurePosixPath(filename).parts) - 1]
    if snapshot.parent.name == "snapshots" and _COMMIT_RE.match(snapshot.name):
        return snapshot.name
    return None
