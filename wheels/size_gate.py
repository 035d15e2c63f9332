"""Fail when a distribution file is too big for PyPI: `python wheels/size_gate.py FILE...`.

PyPI refuses files over its per-file limit (100 MB unless a project is granted more); finding that out
at upload time would leave a release half published. The limit comes from $SIZE_LIMIT_MB (default
100). Prints every file's size; exits 1 (with a GitHub error annotation) if any is over.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def main(paths: list[str]) -> int:
    limit = int(float(os.environ.get("SIZE_LIMIT_MB", "100")) * 1_000_000)
    if not paths:
        print("size_gate: no file given (did the build produce nothing?)")
        return 1
    status = 0
    for path in map(Path, paths):
        if not path.is_file():
            print(f"::error::size_gate: {path} does not exist")
            status = 1
            continue
        size = path.stat().st_size
        print(f"{path.name}: {size} bytes ({size / 1e6:.1f} MB, limit {limit / 1e6:.0f} MB)")
        if size > limit:
            print(f"::error::{path.name} is {size / 1e6:.1f} MB, over PyPI's {limit / 1e6:.0f} MB per file")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
