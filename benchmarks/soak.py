"""Soak under load and faults (issue 24, item 6): `pybonsai serve` on the tiny synthetic model,
driven by ~8 client workers with a mix of valid and hostile requests for a long time.

    python benchmarks/soak.py [--requests 2000] [--duration 600] [--workers 8] [--stall 60]

Valid requests go through the real `openai` client: chat and completions, streamed or not, tool
calls (tools + tool_choice), JSON schema (response_format), small 4-token probes. Hostile ones go
through httpx or raw sockets: streams dropped mid-way, cancelled requests (client time-outs),
malformed bodies (bad JSON, wrong types), oversized bodies (Content-Length and chunked), bursts
past --max-queue (429 back-pressure), and a stalled reader (a raw socket with a 4 KiB receive
buffer that stops reading a long stream for --stall seconds; small probes run meanwhile).

The mixed workers take request tickets paced evenly over --duration and stop once both
--requests tickets were taken and --duration passed; worker 0 instead alternates a stall, a
stretch of mixed requests, and a burst. Classification: a valid request fails if it raises or its
answer is malformed; a 429 to any request (valid or not: types are checked after admission) that
overlapped a burst is back-pressure (counted apart); any other 429 is a failure. A hostile
request is right when it gets its expected status (400 invalid_json / invalid_type, 413, 429 with
Retry-After; a dropped or cancelled stream: 200 before the client went away, or the client's own
time-out). RSS and open fds of the server are read from /proc after a warm-up (every kind once,
then --warmup s of the soak, then idle) and at the end (idle again). Exit status 1 when a valid
request failed, fds grew, a hostile request got a wrong answer, or the server still held requests
at the end."""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
NO_EOS = {"151643": -100, "151645": -100}  # the Qwen end-of-text tokens: generate max_tokens
ADD_TOOL = [{"type": "function", "function": {
    "name": "add", "description": "Add two small integers",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                                    "b": {"type": "integer", "minimum": 0, "maximum": 99}},
                   "required": ["a", "b"], "additionalProperties": False}}}]
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99},
                                           "tag": {"enum": ["x", "y"]}},
          "required": ["n", "tag"], "additionalProperties": False}
# kind -> (weight in the mix, valid?)
MIX = {"small": (4, True), "completion": (3, True), "completion_stream": (3, True), "chat": (3, True),
       "chat_stream": (3, True), "tool": (.5, True), "tool_stream": (.5, True), "json_schema": (.5, True),
       "disconnect": (1.5, False), "cancel": (1.5, False), "bad_json": (1, False), "wrong_type": (1, False),
       "oversized": (1, False)}
VALID = {k for k, (_, v) in MIX.items() if v}


@dataclass
class Config:
    requests: int = 2000
    duration: float = 600.0
    workers: int = 8
    stall_s: float = 60.0
    parallel: int = 4
    max_queue: int = 16
    max_body: int = 65536
    warmup_s: float = 30.0
    threads: int = 1
    seed: int = 0
    model: Optional[Path] = None
    log: Optional[Path] = None
    cache_ram: Optional[int] = None  # the server's --cache-ram MiB (None: serve's default)


@dataclass
class Record:
    kind: str
    valid: bool
    start: float
    end: float
    outcome: str  # "ok", "failed", "wrong", "429" (then classified: "back-pressure" in a burst, else a failure)
    detail: str = ""


@dataclass
class Report:
    records: list
    bursts: list  # (start, end, n_429)
    stalls: list  # (start, end, bytes before, bytes after, end of the grace)
    rss: tuple  # (warm, end) bytes
    ram_cache: tuple  # (warm, end) bytes of the host-RAM prompt cache (part of the RSS)
    fds: tuple  # (warm, end)
    idle_at_end: dict
    exit_status: Optional[int]
    log_errors: list
    elapsed: float
    load: tuple  # the machine's 1-minute load average at the start and at the end
    warm_problems: list  # records of the warm-up that were not ok
    rss_samples: list  # bytes, every duration / 20 s during the soak
    failures: list = field(default_factory=list)
    backpressure: int = 0
    hostile_right: int = 0
    hostile_total: int = 0
    small_stalled: list = field(default_factory=list)
    small_free: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.warm_problems and self.fds[1] <= self.fds[0] \
            and self.hostile_right == self.hostile_total \
            and self.idle_at_end.get("active") == 0 and self.idle_at_end.get("queued") == 0


def tiny_model() -> Path:
    """The tiny synthetic Qwen3 the tests use (seed 0, Qwen vocabulary and template): noisy_neighbour's file."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # (only here: the tests load this module by path)
    from noisy_neighbour import tiny_model as noisy_tiny

    return noisy_tiny()


class Server:
    def __init__(self, cfg: Config):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = cfg.log or ROOT / "build" / "soak-server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pybonsai.server", "-m", str(cfg.model or tiny_model()), "--port", str(self.port),
             "--alias", "tiny", "--threads", str(cfg.threads), "--parallel", str(cfg.parallel), "--n-ctx",
             str(2048 * cfg.parallel), "--max-queue", str(cfg.max_queue), "--max-body-bytes", str(cfg.max_body),
             "--log-level", "warning", *(["--cache-ram", str(cfg.cache_ram)] if cfg.cache_ram is not None else [])],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start:\n{self.log()}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def ram_cache(self) -> int:
        """Bytes of saved prompt states the server holds in host RAM (--cache-ram), from /metrics."""
        for line in httpx.get(self.base + "/metrics", timeout=10).text.splitlines():
            if line.startswith("pybonsai_prompt_cache_ram_bytes "):
                return int(float(line.split()[1]))
        raise RuntimeError("no pybonsai_prompt_cache_ram_bytes in /metrics")

    def fds(self) -> int:
        return len(list(Path(f"/proc/{self.proc.pid}/fd").iterdir()))

    def health(self) -> dict:
        return httpx.get(self.base + "/health", timeout=10).json()

    def settle(self, timeout: float = 30.0, below: Optional[int] = None) -> dict:
        """Wait until no request is held and the fd count is steady (and <= `below`, if given)."""
        deadline, last, steady = time.monotonic() + timeout, -1, 0
        while time.monotonic() < deadline:
            h, n = self.health(), self.fds()
            steady = steady + 1 if n == last else 0
            last = n
            if h["active"] == 0 and h["queued"] == 0 and steady >= 5 and (below is None or n <= below):
                return h
            time.sleep(0.2)
        return self.health()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text("utf-8", errors="replace")

    def stop(self) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                return None
        self._log.close()
        return self.proc.returncode


def _raw_request(port: int, path: str, body: bytes, rcvbuf: int = 0) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(120)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("ascii") + body)
    return sock


def _read_all(sock: socket.socket, data: bytes = b"") -> bytes:
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


class Driver:
    def __init__(self, cfg: Config, server: Server):
        self.cfg, self.server = cfg, server
        self.records: list[Record] = []
        self.bursts: list[tuple] = []
        self.stalls: list[tuple] = []
        self.lock = threading.Lock()
        self.tickets, self.t0, self.requests, self.duration = 0, time.monotonic(), cfg.requests, cfg.duration
        self.kinds = list(MIX)
        self.weights = [MIX[k][0] for k in self.kinds]

    # -- bookkeeping ----------------------------------------------------------------------------
    def _record(self, kind: str, fn: Callable[[], None]) -> None:
        start = time.monotonic()
        try:
            outcome, detail = fn() or ("ok", "")
        except Exception as exc:  # noqa: BLE001 (every failure is recorded, none stops the soak)
            if isinstance(exc, openai.RateLimitError):
                outcome, detail = "429", str(exc)[:200]
            else:
                outcome = "failed" if MIX.get(kind, (0, True))[1] else "wrong"
                detail = f"{type(exc).__name__}: {exc}"[:300]
        with self.lock:
            self.records.append(Record(kind, MIX.get(kind, (0, True))[1], start, time.monotonic(), outcome, detail))

    def _ticket(self) -> Optional[float]:
        """The time the next paced request is due, or None once the soak is over."""
        with self.lock:
            i = self.tickets
            self.tickets += 1
        due = self.t0 + i * self.duration / self.requests
        if i >= self.requests and time.monotonic() >= self.t0 + self.duration:
            return None
        return due

    def _over(self) -> bool:
        return self.tickets >= self.requests and time.monotonic() >= self.t0 + self.duration

    # -- valid requests (openai client) ------------------------------------------------------------
    def valid(self, client, kind: str, rng: random.Random):
        prompt = f"Story number {rng.randrange(1000)}: once upon a time"
        user = [{"role": "user", "content": prompt}]
        n = rng.choice((8, 24, 64))
        if kind == "small":
            r = client.completions.create(model="tiny", prompt=prompt, max_tokens=4, temperature=0)
            assert r.usage.completion_tokens >= 1 and isinstance(r.choices[0].text, str)
        elif kind == "completion":
            r = client.completions.create(model="tiny", prompt=prompt, max_tokens=n, seed=rng.randrange(99))
            assert r.choices[0].finish_reason in ("stop", "length") and 1 <= r.usage.completion_tokens <= n
        elif kind == "completion_stream":
            chunks = list(client.completions.create(model="tiny", prompt=prompt, max_tokens=n, stream=True,
                                                    logit_bias=NO_EOS, stream_options={"include_usage": True}))
            assert chunks[-1].usage.completion_tokens == n, chunks[-1]
            assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
        elif kind == "chat":
            r = client.chat.completions.create(model="tiny", messages=user, max_tokens=n, temperature=0.7)
            assert isinstance(r.choices[0].message.content, str) and r.choices[0].finish_reason in ("stop", "length")
        elif kind == "chat_stream":
            chunks = list(client.chat.completions.create(model="tiny", messages=user, max_tokens=n, stream=True))
            assert chunks[-1].choices[0].finish_reason in ("stop", "length"), chunks[-1]
        elif kind in ("tool", "tool_stream"):
            kwargs = dict(model="tiny", messages=[{"role": "user", "content": "add"}], tools=ADD_TOOL, max_tokens=120,
                          tool_choice={"type": "function", "function": {"name": "add"}}, seed=rng.randrange(99),
                          extra_body={"chat_template_kwargs": {"enable_thinking": False}})
            if kind == "tool":
                choice = client.chat.completions.create(**kwargs).choices[0]
                finish, calls = choice.finish_reason, choice.message.tool_calls
                name, args = calls[0].function.name, calls[0].function.arguments
            else:
                chunks = list(client.chat.completions.create(stream=True, **kwargs))
                finish = chunks[-1].choices[0].finish_reason
                calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
                name = "".join(tc.function.name or "" for tc in calls)
                args = "".join(tc.function.arguments or "" for tc in calls)
            parsed = json.loads(args)
            assert finish == "tool_calls" and name == "add" and set(parsed) == {"a", "b"}, (finish, name, args)
        elif kind == "json_schema":
            r = client.chat.completions.create(
                model="tiny", messages=user, max_tokens=200, seed=rng.randrange(99),
                response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA}})
            value = json.loads(r.choices[0].message.content)
            assert r.choices[0].finish_reason == "stop" and set(value) == {"n", "tag"} and value["tag"] in "xy", value
        return None

    # -- hostile requests (httpx, raw sockets) ----------------------------------------------------------
    def _expect(self, r: httpx.Response, status: int, code: Optional[str] = None):
        is_json = r.headers.get("content-type") == "application/json"
        got_code = r.json().get("error", {}).get("code") if is_json else None
        if r.status_code == status and (code is None or got_code == code):
            return None
        if r.status_code == 429:  # types are checked after admission: a full queue answers 429 first
            return "429", r.text[:200]
        return "wrong", f"status {r.status_code} code {got_code}, expected {status} {code}: {r.text[:200]}"

    def hostile(self, http: httpx.Client, client, kind: str, rng: random.Random):
        base, v = self.server.base, rng.randrange(3)
        if kind == "disconnect":
            path, body = [("/v1/completions", {"prompt": "Once", "max_tokens": 1500}),
                          ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                    "max_tokens": 1500})][v % 2]
            with http.stream("POST", base + path, json={**body, "stream": True, "logit_bias": NO_EOS}) as r:
                if r.status_code == 429:
                    return "429", ""
                lines = r.iter_lines()
                got = [next(lines) for _ in range(3)]
                if r.status_code != 200 or not got[0].startswith("data: "):
                    return "wrong", f"{r.status_code} {got[:1]}"
            return None  # leaving the block closes the connection mid-stream
        if kind == "cancel":
            body = {"prompt": "Once", "max_tokens": 1500, "logit_bias": NO_EOS}
            try:
                if v == 0:  # the openai client times out: it closes the connection
                    client.with_options(timeout=0.3).completions.create(model="tiny", **body)
                else:
                    r = http.post(base + "/v1/completions", json={**body, "stream": v == 2},
                                  timeout=httpx.Timeout(30, read=0.3))
                    if r.status_code == 429:
                        return "429", ""
            except (httpx.TimeoutException, openai.APITimeoutError):
                return None
            return None  # answered before the time-out: still fine
        if kind == "bad_json":
            raw = [b'{"prompt": "x", "max_tokens": 4', b'{"prompt": "\xff\xfe"}', b"[1, 2, 3]"][v]
            r = http.post(base + "/v1/completions", content=raw, headers={"Content-Type": "application/json"})
            return self._expect(r, 400, None if v == 2 else "invalid_json")
        if kind == "wrong_type":
            path, body = [("/v1/completions", {"prompt": "x", "max_tokens": "ten"}),
                          ("/v1/chat/completions", {"messages": "hi"}),
                          ("/v1/completions", {"prompt": "x", "stream": "yes"})][v]
            return self._expect(http.post(base + path, json=body), 400, "invalid_type")
        if kind == "oversized":
            big = json.dumps({"prompt": "x" * (self.cfg.max_body + 4096), "max_tokens": 2}).encode("utf-8")
            if v == 0:  # Content-Length declared: refused before the body is read
                with _raw_request(self.server.port, "/v1/completions", big) as sock:
                    head = _read_all(sock)[:200]
                ok = head.startswith(b"HTTP/1.1 413")
                return None if ok else ("wrong", repr(head))
            chunks = (big[i:i + 8192] for i in range(0, len(big), 8192))  # chunked: refused while reading
            return self._expect(http.post(base + "/v1/completions", content=chunks,
                                          headers={"Content-Type": "application/json"}), 413, "request_too_large")
        raise ValueError(kind)

    # -- worker 0: stalls and bursts ---------------------------------------------------------------
    def stall(self, client, stall_s: float) -> None:
        """A raw-socket stream read up to its first bytes, then not read for stall_s (small
        probes run meanwhile), then read to the end: it must end with [DONE]."""
        body = json.dumps({"prompt": "Story number 3: once upon a time", "max_tokens": 800, "stream": True,
                           "stream_options": {"include_usage": True}, "logit_bias": NO_EOS}).encode("utf-8")
        start = time.monotonic()
        with _raw_request(self.server.port, "/v1/completions", body, rcvbuf=4096) as sock:
            head = sock.recv(4096)
            t_stall = time.monotonic()
            while time.monotonic() < t_stall + stall_s:
                self._record("small", lambda: self.valid(client, "small", random.Random(0)))
                time.sleep(min(0.5, max(0.0, t_stall + stall_s - time.monotonic())))
            t_resume = time.monotonic()
            data = _read_all(sock, head)
        frames = [piece.split(b"\n\n")[0] for piece in data.split(b"data: ")[1:]]
        try:
            usage = json.loads(frames[-2])["usage"]["completion_tokens"]
        except (ValueError, KeyError, IndexError, TypeError):
            usage = -1
        ok = data.startswith(b"HTTP/1.1 200") and frames[-1:] == [b"[DONE]"] and usage == 800
        # The stalled request's own 800 tokens are generated during the first moments: the
        # "a reader is stalled" latencies start after a grace of min(3 s, stall / 2).
        grace = min(3.0, stall_s / 2)
        with self.lock:
            self.stalls.append((t_stall, t_resume, len(head), len(data) - len(head), t_stall + grace))
            self.records.append(Record("stalled_reader", True, start, time.monotonic(), "ok" if ok else "failed",
                                       "" if ok else repr(data[:200] + b" ... " + data[-200:])))

    def burst(self) -> None:
        """parallel + max_queue + 12 requests at once: some must get 429 with Retry-After."""
        n = self.cfg.parallel + self.cfg.max_queue + 12
        gate = threading.Barrier(n)
        statuses: list = []

        def one() -> None:
            gate.wait()
            start = time.monotonic()
            try:
                with httpx.Client(timeout=120) as http:
                    r = http.post(self.server.base + "/v1/completions",
                                  json={"prompt": "Burst", "max_tokens": 32, "logit_bias": NO_EOS})
            except httpx.HTTPError as exc:
                r = httpx.Response(599, text=f"{type(exc).__name__}: {exc}")
            right = r.status_code == 200 or (r.status_code == 429 and r.headers.get("retry-after") is not None)
            with self.lock:
                statuses.append(r.status_code)
                self.records.append(Record("burst", False, start, time.monotonic(), "ok" if right else "wrong",
                                           "" if right else f"{r.status_code} {r.text[:200]}"))

        threads = [threading.Thread(target=one) for _ in range(n)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with self.lock:
            self.bursts.append((start, time.monotonic(), statuses.count(429)))

    # -- workers ---------------------------------------------------------------------------------------
    def _guarded(self, kind: str, valid: bool, fn: Callable[[], None]) -> None:
        """A stall or burst that raised (a time-out, a reset) is recorded as a failure."""
        start = time.monotonic()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            with self.lock:
                self.records.append(Record(kind, valid, start, time.monotonic(), "failed" if valid else "wrong",
                                           f"{type(exc).__name__}: {exc}"[:300]))

    def _one(self, kind: str, client, http, rng) -> None:
        if MIX[kind][1]:
            self._record(kind, lambda: self.valid(client, kind, rng))
        else:
            self._record(kind, lambda: self.hostile(http, client, kind, rng))

    def mixed_worker(self, index: int, special: bool) -> None:
        rng = random.Random(self.cfg.seed * 1000 + index)
        with openai.OpenAI(base_url=self.server.base + "/v1", api_key="unused", max_retries=0, timeout=120) as client, \
                httpx.Client(timeout=120) as http:
            next_special = time.monotonic()
            while True:
                if special and time.monotonic() >= next_special:
                    if self._over():
                        return
                    self._guarded("stalled_reader", True, lambda: self.stall(client, self.stall_s))
                    self._guarded("burst", False, self.burst)
                    next_special = time.monotonic() + max(self.stall_s, 5.0)
                    continue
                due = self._ticket()
                if due is None:
                    return
                time.sleep(max(0.0, due - time.monotonic()))
                self._one(rng.choices(self.kinds, self.weights)[0], client, http, rng)

    def warm_up(self, seconds: float) -> None:
        """Every kind once, a short stall, a burst, then `seconds` of the soak itself (stalls of at
        most 5 s) so that allocator arenas and caches reach their working size before the baseline."""
        rng = random.Random(-1)
        with openai.OpenAI(base_url=self.server.base + "/v1", api_key="unused", max_retries=0, timeout=120) as client, \
                httpx.Client(timeout=120) as http:
            for kind in self.kinds:
                self._one(kind, client, http, rng)
            self._guarded("stalled_reader", True, lambda: self.stall(client, 1.0))
        self._guarded("burst", False, self.burst)
        n = max(1, int(seconds * self.cfg.requests / self.cfg.duration))
        self.run(n, seconds, stall_s=min(self.cfg.stall_s, 5))

    def run(self, requests: int, duration: float, stall_s: Optional[float] = None) -> None:
        self.tickets, self.t0, self.requests, self.duration = 0, time.monotonic(), requests, duration
        self.stall_s = self.cfg.stall_s if stall_s is None else stall_s
        threads = [threading.Thread(target=self.mixed_worker, args=(i, i == 0), name=f"soak-{i}")
                   for i in range(self.cfg.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


class RssSampler(threading.Thread):  # the server's RSS every `every` s
    def __init__(self, server: Server, every: float):
        super().__init__(daemon=True)
        self.server, self.every, self.samples, self.stop = server, every, [], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.samples.append(self.server.rss())
            except (OSError, RuntimeError):
                return


def _overlaps(r: Record, windows: list) -> bool:
    return any(r.start <= w[1] and r.end >= w[0] for w in windows)


def classify(rep: Report) -> None:
    """Valid: ok, back-pressure (a 429 while a burst was in flight) or failed; hostile: right or wrong."""
    for r in rep.records:
        if r.outcome == "429" and _overlaps(r, rep.bursts):
            r.outcome = "back-pressure"
            rep.backpressure += 1
        elif r.valid and r.outcome != "ok":
            rep.failures.append(r)
        elif not r.valid:
            rep.hostile_total += 1
            rep.hostile_right += r.outcome == "ok"
        if r.kind == "small" and r.outcome == "ok" and not _overlaps(r, rep.bursts):
            if _overlaps(r, [(s[4], s[1]) for s in rep.stalls]):
                rep.small_stalled.append(r.end - r.start)
            elif not _overlaps(r, rep.stalls):
                rep.small_free.append(r.end - r.start)


def run(cfg: Config, progress: Callable[[str], None] = lambda s: None) -> Report:
    server = Server(cfg)
    try:
        driver = Driver(cfg, server)
        driver.warm_up(cfg.warmup_s)
        warm = [r for r in driver.records if r.outcome not in ("ok", "429")]
        driver.records, driver.bursts, driver.stalls = [], [], []
        server.settle()
        rss0, fds0, cache0 = server.rss(), server.fds(), server.ram_cache()
        progress(f"warm: RSS {rss0 / 2**20:.1f} MiB, {fds0} fds; warm-up problems: {warm}")
        sampler = RssSampler(server, max(1.0, cfg.duration / 20))
        sampler.start()
        t0, load0 = time.monotonic(), os.getloadavg()[0]
        driver.run(cfg.requests, cfg.duration)
        elapsed, load1 = time.monotonic() - t0, os.getloadavg()[0]
        sampler.stop.set()
        idle = server.settle(below=fds0)
        rss1, fds1, cache1 = server.rss(), server.fds(), server.ram_cache()
    finally:
        exit_status = server.stop()
    log = server.log_path.read_text("utf-8", errors="replace")
    errors = [line for line in log.splitlines() if "Traceback" in line or "ERROR" in line or "Exception" in line]
    rep = Report(driver.records, driver.bursts, driver.stalls, (rss0, rss1), (cache0, cache1), (fds0, fds1), idle,
                 exit_status, errors,
                 elapsed, (load0, load1), warm, sampler.samples)
    classify(rep)
    return rep


def _pct(xs: list, q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def table(rep: Report) -> str:
    rows = ["| kind | class | n | right / ok | failed / wrong | 429 back-pressure | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|---|---|"]
    kinds = sorted({r.kind for r in rep.records}, key=lambda k: (k not in VALID and k != "stalled_reader", k))
    for kind in kinds:
        rs = [r for r in rep.records if r.kind == kind]
        lat = [(r.end - r.start) * 1000 for r in rs]
        valid = rs[0].valid
        ok = sum(r.outcome == "ok" for r in rs)
        bp = sum(b[2] for b in rep.bursts) if kind == "burst" else sum(r.outcome == "back-pressure" for r in rs)
        bad = sum(r.outcome not in ("ok", "back-pressure") for r in rs)
        rows.append(f"| {kind} | {'valid' if valid else 'hostile'} | {len(rs)} | {ok} | {bad} | {bp} | "
                    f"{_pct(lat, 0.5):.0f} | {_pct(lat, 0.99):.0f} |")
    n_valid = sum(r.valid for r in rep.records)
    (rss0, rss1), (fds0, fds1) = rep.rss, rep.fds
    stall_bytes = ", ".join(f"{s[3] / 1024:.0f} KiB" for s in rep.stalls)
    rows += ["", "| measure | value |", "|---|---|",
             f"| requests (records) / elapsed | {len(rep.records)} in {rep.elapsed:.0f} s "
             f"(load average {rep.load[0]:.1f} at the start, {rep.load[1]:.1f} at the end) |",
             f"| valid requests failed | {len(rep.failures)} of {n_valid} "
             f"(warm-up problems: {len(rep.warm_problems)}) |",
             f"| requests besides the bursts' own answered 429 during a burst (back-pressure) | {rep.backpressure} |",
             f"| hostile requests answered right | {rep.hostile_right} of {rep.hostile_total} |",
             f"| bursts (429s in each) | {len(rep.bursts)} ({', '.join(str(b[2]) for b in rep.bursts)}) |",
             f"| server RSS warm -> end | {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB "
             f"({(rss1 / rss0 - 1) * 100:+.1f}%) |",
             f"| of which the host-RAM prompt cache (--cache-ram) warm -> end | {rep.ram_cache[0] / 2**20:.1f} -> "
             f"{rep.ram_cache[1] / 2**20:.1f} MiB; RSS without it {(rss0 - rep.ram_cache[0]) / 2**20:.1f} -> "
             f"{(rss1 - rep.ram_cache[1]) / 2**20:.1f} MiB |",
             f"| server RSS during the soak (every {rep.elapsed / 20:.0f} s) | "
             f"{' '.join(f'{x / 2**20:.0f}' for x in rep.rss_samples)} MiB |",
             f"| server open fds warm -> end | {fds0} -> {fds1} |",
             f"| small requests p50 / p99, no reader stalled | {_pct(rep.small_free, .5) * 1000:.0f} / "
             f"{_pct(rep.small_free, .99) * 1000:.0f} ms (n={len(rep.small_free)}) |",
             f"| small requests p50 / p99, a reader stalled (after a grace) | {_pct(rep.small_stalled, .5) * 1000:.0f}"
             f" / {_pct(rep.small_stalled, .99) * 1000:.0f} ms (n={len(rep.small_stalled)}) |",
             f"| stalls: bytes the server still had to send at each resume | {len(rep.stalls)}: {stall_bytes} |",
             f"| server at the end | {rep.idle_at_end}; exit status {rep.exit_status}; "
             f"{len(rep.log_errors)} error lines in its log |"]
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="at least this many paced requests (default 2000)")
    ap.add_argument("--duration", type=float, default=600.0, help="at least this many seconds (default 600)")
    ap.add_argument("--workers", type=int, default=8, help="client workers (default 8)")
    ap.add_argument("--stall", type=float, default=60.0, help="seconds a stalled reader stops reading (default 60)")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--max-queue", type=int, default=16)
    ap.add_argument("--max-body", type=int, default=65536, help="the server's --max-body-bytes (default 64 KiB)")
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds of the mix before the baseline (default 30)")
    ap.add_argument("--threads", type=int, default=1, help="the server's --threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, help="a GGUF (default: the tiny synthetic model)")
    ap.add_argument("--log", type=Path, help="the server's log file (default build/soak-server.log)")
    ap.add_argument("--cache-ram", type=int, default=None, help="the server's --cache-ram MiB (default: serve's)")
    a = ap.parse_args(argv)
    cfg = Config(a.requests, a.duration, a.workers, a.stall, a.parallel, a.max_queue, a.max_body, a.warmup, a.threads,
                 a.seed, a.model, a.log, a.cache_ram)
    rep = run(cfg, progress=lambda s: print(s, file=sys.stderr, flush=True))
    print(table(rep))
    for r in (rep.warm_problems + rep.failures)[:20]:
        print(f"FAILED {r.kind}: {r.outcome} {r.detail}")
    for r in [r for r in rep.records if not r.valid and r.outcome not in ("ok", "back-pressure")][:20]:
        print(f"WRONG {r.kind}: {r.detail}")
    for line in rep.log_errors[:10]:
        print(f"server log: {line}")
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
