"""Fuzz worker: reads GGUF paths from stdin, one a line, and puts each through everything a user
does with a downloaded file -- a full load (and one decode), a vocab_only load with tokenizing,
reading the metadata, and `pybonsai info` -- then writes one line `result {json}` per file.

Before each step it writes `stage NAME`, so that if the process dies (a signal) or stops
answering (a hang) the driver knows where. The protocol uses a private copy of stdout; file
descriptor 1 itself goes to /dev/null so nothing else can corrupt the stream.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import sys

CLEAN_TYPES = (ValueError, OSError, RuntimeError)
MEMORY_LIMIT = 4 << 30  # address space: an absurd allocation fails here instead of swapping the host


def _limit_memory() -> None:
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ValueError, OSError):
        pass


def _verdict(path: str, exc: BaseException) -> dict:
    msg = " ".join(str(exc).split())
    clean = isinstance(exc, CLEAN_TYPES) and os.path.basename(path) in msg
    return {"status": "error" if clean else "unclean", "type": type(exc).__name__, "message": msg[:300]}


def run_case(path: str, stage) -> dict:
    from pybonsai import Llama
    from pybonsai.cli import main as cli_main

    steps: dict = {}

    stage("full")
    try:
        with Llama(path, n_ctx=32, n_batch=8, n_threads=1) as llm:
            llm.eval([0, 1])
            assert llm.last_logits.shape == (llm.n_vocab(),)
            len(llm.metadata)
        steps["full"] = {"status": "ok"}
    except Exception as exc:  # noqa: BLE001 - the verdict says whether it was a clean one
        steps["full"] = _verdict(path, exc)

    stage("vocab_only")
    try:
        with Llama(path, vocab_only=True) as llm:
            llm.detokenize(llm.tokenize(b"hello there", special=True))
        steps["vocab_only"] = {"status": "ok"}
    except Exception as exc:  # noqa: BLE001
        steps["vocab_only"] = _verdict(path, exc)

    stage("metadata")
    try:
        with Llama(path, vocab_only=True) as llm:
            meta = llm.metadata
            llm.chat_template
        steps["metadata"] = {"status": "ok", "n": len(meta)}
    except Exception as exc:  # noqa: BLE001
        steps["metadata"] = _verdict(path, exc)

    stage("info")
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli_main(["info", path])
        if rc == 0:
            steps["info"] = {"status": "ok"}
        else:
            msg = err.getvalue().strip()
            clean = msg.startswith("pybonsai: error:") and os.path.basename(path) in msg
            steps["info"] = {"status": "error" if clean else "unclean", "type": f"exit {rc}", "message": msg[:300]}
    except BaseException as exc:  # noqa: BLE001 - SystemExit included
        steps["info"] = _verdict(path, exc) | {"status": "unclean"}
    return steps


def main() -> int:
    _limit_memory()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(os.devnull, "w")

    def stage(name: str) -> None:
        proto.write(f"stage {name}\n")
        proto.flush()

    import pybonsai  # noqa: F401 - import cost paid before the first case
    from pybonsai import backends
    backends.ensure_loaded()
    proto.write("ready\n")
    for line in sys.stdin:
        path = line.rstrip("\n")
        if not path:
            continue
        steps = run_case(path, stage)
        proto.write("result " + json.dumps(steps) + "\n")
        proto.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
