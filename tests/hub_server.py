"""A local stand-in for the Hugging Face Hub, enough for huggingface_hub's list_repo_files,
model_info and hf_hub_download, so that the tests never touch the network.

Endpoints (repo types other than "model" are not served):

    GET       /api/models/{owner}/{name}                       model info (sha, siblings)
    GET       /api/models/{owner}/{name}/revision/{rev}         model info at a revision
    GET       /api/models/{owner}/{name}/tree/{rev}[/{path}]    tree listing (?recursive=)
    HEAD/GET  /{owner}/{name}/resolve/{rev}/{path}              file metadata / content (Range)

Resolve answers carry X-Repo-Commit, ETag / X-Linked-Etag (the sha256, as for LFS files),
X-Linked-Size, Content-Length and Accept-Ranges, with the content served directly (no redirect).
Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound) as the Hub does.
Every request is recorded in `server.requests` as (method, path), the Range header of every
resolve GET in `server.ranges` as (path, header or None). `server.interrupt(path, budgets)`
makes the next GETs of `path` stop after budgets[0], budgets[1], ... bytes of the body and drop
the connection (an interrupted download); `server.stall(path, n)` makes the next GET send n
bytes and then hang until `server.release()` (a client that dies mid-download).
"""
from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional, Union
from urllib.parse import parse_qs, unquote, urlsplit

Content = Union[bytes, Path]
_CHUNK = 1 << 20


@dataclass
class _Revision:
    commit: str
    files: dict[str, Content]


@dataclass
class _Repo:
    revisions: dict[str, _Revision] = field(default_factory=dict)

    def find(self, rev: str) -> Optional[_Revision]:
        if rev in self.revisions:
            return self.revisions[rev]
        return next((r for r in self.revisions.values() if r.commit == rev), None)


class HubServer:
    """Serve repositories from memory and files on disk on 127.0.0.1 (a free port)."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.ranges: list[tuple[str, Optional[str]]] = []
        self.interruptions: dict[str, list[int]] = {}
        self.stalls: dict[str, int] = {}
        self._released = threading.Event()
        self._digests: dict[tuple[str, int, int], tuple[str, str]] = {}
        self._lock = threading.Lock()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.port = 0

    # -- content ----------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, Content], revision: str = "main") -> str:
        """Add (or replace) `revision` of `repo_id`; return its commit hash."""
        listing = "\n".join(f"{k}:{self._blob_ids(v)[1]}" for k, v in sorted(files.items()))
        commit = hashlib.sha1(f"{repo_id}@{revision}\n{listing}".encode()).hexdigest()
        self.repos.setdefault(repo_id, _Repo()).revisions[revision] = _Revision(commit, dict(files))
        return commit

    def _blob_ids(self, content: Content) -> tuple[str, str]:
        """(git-style sha1, sha256) of a file's content, cached per file version."""
        if isinstance(content, bytes):
            return hashlib.sha1(content).hexdigest(), hashlib.sha256(content).hexdigest()
        st = content.stat()
        key = (str(content), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key not in self._digests:
                sha1, sha256 = hashlib.sha1(), hashlib.sha256()
                with open(content, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        sha1.update(chunk)
                        sha256.update(chunk)
                self._digests[key] = (sha1.hexdigest(), sha256.hexdigest())
            return self._digests[key]

    @staticmethod
    def _size(content: Content) -> int:
        return len(content) if isinstance(content, bytes) else content.stat().st_size

    def interrupt(self, path: str, budgets: list[int]) -> None:
        """Cut the next len(budgets) GETs of `path` after that many body bytes each."""
        with self._lock:
            self.interruptions[path] = list(budgets)

    def stall(self, path: str, after: int) -> None:
        with self._lock:
            self.stalls[path] = after
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def _take_budget(self, path: str) -> Optional[int]:
        with self._lock:
            budgets = self.interruptions.get(path)
            return budgets.pop(0) if budgets else None

    def fetched(self, method: str = "GET") -> list[str]:
        """Paths of the /resolve/ requests made with `method`, in order."""
        return [p for m, p in self.requests if m == method and "/resolve/" in p]

    # -- lifetime ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HubServer":
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="hub-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=10)
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<kind>revision|tree)/(?P<rev>[^/]+)(?:/(?P<path>.*))?)?$")


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    # -- routing ----------------------------------------------------------------------------
    def _dispatch(self, head: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        self.hub.requests.append((self.command, path))
        m = _RESOLVE.match(path)
        if m:
            return self._resolve(m["repo"], m["rev"], m["path"], head)
        m = _API.match(path)
        if m and not head:
            rev = m["rev"] or "main"
            repo_rev = self._lookup(m["repo"], rev)
            if repo_rev is None:
                return
            if m["kind"] == "tree":
                recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() in ("true", "1")
                return self._json(200, self._tree(repo_rev, m["path"] or "", recursive), repo_rev.commit)
            return self._json(200, self._info(m["repo"], repo_rev), repo_rev.commit)
        self._error(404, None, "not found")

    def _lookup(self, repo_id: str, rev: str) -> Optional[_Revision]:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        found = repo.find(rev)
        if found is None:
            self._error(404, "RevisionNotFound", "Invalid rev id: " + rev)
        return found

    # -- answers ----------------------------------------------------------------------------
    def _info(self, repo_id: str, rev: _Revision) -> dict:
        return {"_id": rev.commit[:24], "id": repo_id, "modelId": repo_id, "sha": rev.commit,
                "private": False, "disabled": False, "gated": False, "tags": ["gguf"], "downloads": 0,
                "likes": 0, "siblings": [{"rfilename": f} for f in sorted(rev.files)]}

    def _tree(self, rev: _Revision, prefix: str, recursive: bool) -> list[dict]:
        prefix = prefix.strip("/")
        base = f"{prefix}/" if prefix else ""
        out, dirs = [], set()
        for name in sorted(rev.files):
            if not name.startswith(base):
                continue
            rest = name[len(base):]
            if "/" in rest and not recursive:
                dirs.add(base + rest.split("/")[0])
                continue
            if recursive:
                parts = rest.split("/")[:-1]
                dirs.update(base + "/".join(parts[:i + 1]) for i in range(len(parts)))
            content = rev.files[name]
            sha1, sha256 = self.hub._blob_ids(content)
            size = self.hub._size(content)
            entry = {"type": "file", "oid": sha1, "size": size, "path": name}
            if name.endswith(".gguf"):
                entry["lfs"] = {"oid": sha256, "size": size, "pointerSize": 134}
            out.append(entry)
        folders = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                   for d in sorted(dirs)]
        return folders + out

    def _resolve(self, repo_id: str, rev_name: str, name: str, head: bool) -> None:
        rev = self._lookup(repo_id, rev_name)
        if rev is None:
            return
        content = rev.files.get(name)
        if content is None:
            return self._error(404, "EntryNotFound", f"{name} does not exist", commit=rev.commit)
        sha1, sha256 = self.hub._blob_ids(content)
        lfs = name.endswith(".gguf")
        etag = sha256 if lfs else sha1
        size = self.hub._size(content)
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng and not head:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if not m or (not m[1] and not m[2]):
                return self._error(416, None, "bad range")
            if m[1]:
                start, end = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1)
            else:  # suffix range: the last N bytes
                start = max(0, size - int(m[2]))
            if start >= size or start > end:
                return self._error(416, None, "range not satisfiable")
            status = 206
        self.send_response(status)
        self.send_header("X-Repo-Commit", rev.commit)
        self.send_header("ETag", f'"{etag}"')
        if lfs:
            self.send_header("X-Linked-Etag", f'"{sha256}"')
            self.send_header("X-Linked-Size", str(size))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        url_path = unquote(urlsplit(self.path).path)
        self.hub.ranges.append((url_path, rng))
        budget = self.hub._take_budget(url_path)
        with self.hub._lock:
            stall = self.hub.stalls.pop(url_path, None)
        if stall is not None:
            budget = stall
        if budget is not None:  # send part of the body, then drop the connection
            end = min(end, start + budget - 1)
        if isinstance(content, bytes):
            self.wfile.write(content[start:end + 1])
        else:
            self._send_file(content, start, end)
        if budget is not None:
            self.wfile.flush()
            if stall is not None:
                self.hub._released.wait(120)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _send_file(self, content: Path, start: int, end: int) -> None:
        with open(content, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    def _json(self, status: int, body, commit: Optional[str] = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, code: Optional[str], message: str, commit: Optional[str] = None) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
