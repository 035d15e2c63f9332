"""GGUF files from the Hugging Face Hub, through `huggingface_hub` and its cache.

    from pybonsai.hub import from_pretrained
    path = from_pretrained("prism-ml/Bonsai-8B-gguf", filename="*Q1_0.gguf")

`filename` may be a glob (matched against the repository's file list, or against the cached
snapshot when offline); without it the repository must hold a single GGUF model. Split models
(`NAME-00001-of-0000N.gguf`) are fetched whole and the first part is returned: llama.cpp loads
the other parts from the same directory. Downloads go to the Hugging Face cache
(`HF_HUB_CACHE`, or `cache_dir`); `HF_HUB_OFFLINE=1` or `local_files_only=True` resolve from the
cache only. Network and Hub failures raise `HubError` with a one-line explanation.

`huggingface_hub` is imported on first use, so that importing this module costs nothing and
`HF_ENDPOINT` / `HF_HUB_OFFLINE` set before the first call are honoured.
"""
from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional, Sequence, Union

__all__ = ["HubError", "from_pretrained", "split_parts", "choose_model_file"]

PathLike = Union[str, "os.PathLike[str]"]

_SPLIT_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_GLOB_CHARS = set("*?[")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
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
    try:
        path = _hf().hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                     local_files_only=local_only)
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
