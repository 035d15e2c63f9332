"""The GGUF fuzzer's driver (also the long-run script).

    python tests/fuzz/run_fuzz.py --cases 10000 --seed 1 --workers 2 --out /tmp/fuzz-report
    python tests/fuzz/run_fuzz.py --replay 1234 --seed 1      # one case again, verbosely
    python tests/fuzz/run_fuzz.py --model hybrid --cases 2000 --workers 2   # the qwen35 hybrid seed
    python tests/fuzz/run_fuzz.py --model ternary --specific --cases 200    # Q2_0 seed, its own classes

--model picks the seed document: qwen3 (gguf_doc, Q1_0), hybrid (tiny-hybrid: qwen35, Q1_0) or
ternary (ternary-tiny: Qwen3, Q2_0), from family_doc; the hybrid and ternary seeds get the generic
classes plus their own (family_mutations), --specific their own only.

Cases (tests/fuzz/mutations.py) are written to a scratch directory and handed to long-lived
worker processes (tests/fuzz/worker.py), many cases per worker. A worker that dies on a case
(a signal) makes that case a crash, one that stops answering within --timeout makes it a hang
(the worker is killed); either way a new worker takes the next case. Files of crashes, hangs and
unclean exceptions are kept in --out for replay. Outcome classes per case:

    loaded       the full load succeeded (the mutation was harmless)
    clean_error  every step that failed raised ValueError/OSError/RuntimeError naming the file
    unclean      some step raised another exception type, or a message without the file name
    crash        the worker process died (signal or abnormal exit)
    hang         no answer within the timeout
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from mutations import MODELS, classes_for, make_case  # noqa: E402

OUTCOMES = ("loaded", "clean_error", "unclean", "crash", "hang")


@dataclass
class CaseResult:
    index: int
    cls: str
    what: str
    outcome: str
    detail: dict = field(default_factory=dict)


class Worker:
    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", GGML_NO_BACKTRACE="1")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "worker.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, env=env)
        self.buf = b""
        self.stage = "startup"
        line = self._line(120.0)
        if line != "ready":
            self.kill()
            raise RuntimeError(f"fuzz worker did not start: {line!r}; see {log_path}")

    def _line(self, timeout: float) -> Optional[str]:
        """The next protocol line; None on timeout; '' when the worker exited."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                if not sel.select(left):
                    return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return ""
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def run(self, path: str, timeout: float) -> tuple[str, dict]:
        self.proc.stdin.write(path.encode() + b"\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            line = self._line(max(0.0, deadline - time.monotonic()))
            if line is None:
                stage = self.stage
                self.kill()
                return "hang", {"stage": stage, "timeout_s": timeout}
            if line == "":
                rc = self.proc.wait()
                self.log.flush()
                self._close_files()
                return "crash", {"stage": self.stage, "returncode": rc,
                                 "signal": signal.Signals(-rc).name if rc < 0 else None,
                                 "stderr_tail": self.tail()}
            if line.startswith("stage "):
                self.stage = line[6:]
            elif line.startswith("result "):
                self.stage = "idle"
                return "done", json.loads(line[7:])

    def tail(self, n: int = 600) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close_files()

    def _close_files(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout, self.log):
            try:
                f.close()
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
        self._close_files()


def classify(steps: dict) -> str:
    statuses = [s["status"] for s in steps.values()]
    if "unclean" in statuses:
        return "unclean"
    return "loaded" if steps.get("full", {}).get("status") == "ok" else "clean_error"


def run(seed: int, count: int, start: int = 0, workers: int = 1, timeout: float = 30.0,
        out: Optional[Path] = None, progress: bool = False, model: str = "qwen3",
        specific_only: bool = False) -> list[CaseResult]:
    """Run cases start..start+count-1; keep the files of bad outcomes in `out`."""
    scratch = Path(tempfile.mkdtemp(prefix="pybonsai-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    logs = Path(tempfile.mkdtemp(prefix="pybonsai-fuzz-logs-"))
    results: list[CaseResult] = []
    lock = threading.Lock()
    t0 = time.monotonic()

    def drive(w: int) -> None:
        worker = Worker(logs / f"worker{w}.log")
        try:
            for index in range(start + w, start + count, workers):
                cls, what, data = make_case(seed, index, model, specific_only)
                path = scratch / f"case-{model}-{seed}-{index}.gguf"
                path.write_bytes(data)
                status, detail = worker.run(str(path), timeout)
                if status == "done":
                    outcome = classify(detail)
                else:
                    outcome = status
                    worker.kill()
                    worker = Worker(logs / f"worker{w}.log")
                if outcome in ("unclean", "crash", "hang") and out is not None:
                    out.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, out / path.name)
                path.unlink()
                with lock:
                    results.append(CaseResult(index, cls, what, outcome, detail))
                    if progress and len(results) % 250 == 0:
                        rate = len(results) / (time.monotonic() - t0)
                        print(f"  {len(results)}/{count} cases, {rate:.1f}/s", file=sys.stderr, flush=True)
        finally:
            worker.close()

    threads = [threading.Thread(target=drive, args=(w,)) for w in range(workers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
    return sorted(results, key=lambda r: r.index)


def summary_table(results: list[CaseResult], classes=None) -> str:
    by_class: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in results:
        by_class[r.cls][r.outcome] += 1
    rows = [f"| {'class':<14} | " + " | ".join(f"{o:>11}" for o in OUTCOMES) + " | total |",
            "|" + "-" * 16 + "|" + "|".join("-" * 13 for _ in OUTCOMES) + "|-------|"]
    total: collections.Counter = collections.Counter()
    for cls in classes or classes_for("qwen3"):
        c = by_class.get(cls, collections.Counter())
        total.update(c)
        rows.append(f"| {cls:<14} | " + " | ".join(f"{c[o]:>11}" for o in OUTCOMES) + f" | {sum(c.values()):>5} |")
    rows.append(f"| {'ALL':<14} | " + " | ".join(f"{total[o]:>11}" for o in OUTCOMES) + f" | {sum(total.values()):>5} |")
    return "\n".join(rows)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per case before it counts as a hang")
    p.add_argument("--out", type=Path, help="directory for the files of bad cases and results.jsonl")
    p.add_argument("--replay", type=int, help="run one case index in this process, printing every step")
    p.add_argument("--model", choices=MODELS, default="qwen3", help="the seed document (default: qwen3)")
    p.add_argument("--specific", action="store_true", help="only the seed model's own mutation classes")
    args = p.parse_args(argv)

    if args.replay is not None:
        import worker
        cls, what, data = make_case(args.seed, args.replay, args.model, args.specific)
        path = Path(tempfile.mkdtemp()) / f"case-{args.seed}-{args.replay}.gguf"
        path.write_bytes(data)
        print(f"case {args.replay}: {cls}: {what} ({len(data)} bytes) -> {path}", flush=True)
        print(json.dumps(worker.run_case(str(path), lambda s: print("stage", s, flush=True)), indent=1))
        return 0

    t0 = time.monotonic()
    results = run(args.seed, args.cases, args.start, args.workers, args.timeout, args.out, progress=True,
                  model=args.model, specific_only=args.specific)
    wall = time.monotonic() - t0
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "results.jsonl", "w") as f:
            for r in results:
                f.write(json.dumps(r.__dict__) + "\n")
    print(f"model {args.model}{' (its own classes)' if args.specific else ''}, "
          f"seed {args.seed}, cases {args.start}..{args.start + args.cases - 1}, {args.workers} worker(s), "
          f"{wall:.0f} s wall ({len(results) / wall:.1f} cases/s)")
    print(summary_table(results, classes_for(args.model, args.specific)))
    bad = [r for r in results if r.outcome in ("crash", "hang", "unclean")]
    for r in bad[:40]:
        print(f"{r.outcome:>8} #{r.index} {r.cls}: {r.what}: {json.dumps(r.detail)[:400]}")
    return 1 if any(r.outcome in ("crash", "hang") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
