"""The soak's short version (issue 24, item 6; the full one is benchmarks/soak.py, whose driver
this imports): `pybonsai serve` under ~40 s of mixed valid and hostile requests from 8 workers,
with a reader that stops reading a long stream for 5 s and bursts past --max-queue. Bounds are
generous: the shared 2-core machine must not flake them."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


def _load_soak():
    spec = importlib.util.spec_from_file_location("pybonsai_bench_soak", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


soak = _load_soak()


@pytest.fixture(scope="module")
def report(tiny_model_path, tmp_path_factory):
    cfg = soak.Config(requests=150, duration=40, stall_s=5, warmup_s=4, model=tiny_model_path,
                      log=tmp_path_factory.mktemp("soak") / "server.log")
    rep = soak.run(cfg)
    print(soak.table(rep))
    return rep


def test_every_valid_request_succeeds(report):
    valid = [r for r in report.records if r.valid]
    assert len(report.records) >= 150 and len(valid) >= 60, len(report.records)
    assert not report.warm_problems and not report.failures, (report.warm_problems + report.failures)[:5]
    kinds = {r.kind for r in valid if r.outcome == "ok"}
    assert kinds >= {"small", "completion", "chat", "stalled_reader"}, kinds
    assert report.exit_status == 0 and not report.log_errors, report.log_errors[:5]


def test_hostile_requests_get_the_right_answer(report):
    hostile = [r for r in report.records if not r.valid]
    wrong = [r for r in hostile if r.outcome not in ("ok", "back-pressure")]
    assert not wrong and report.hostile_right == report.hostile_total, wrong[:5]
    assert {r.kind for r in hostile} >= {"bad_json", "wrong_type", "oversized", "burst"}
    # every burst past --max-queue was pushed back with some 429s (and Retry-After: checked per request)
    assert report.bursts and all(n_429 > 0 for *_, n_429 in report.bursts), report.bursts


def test_no_fd_growth_and_no_request_held(report):
    warm, end = report.fds
    assert end <= warm, report.fds
    assert report.idle_at_end == {"status": "ok", "active": 0, "queued": 0}


def test_small_requests_finish_while_a_reader_is_stalled(report):
    assert report.stalls and all(s[3] > 64 * 1024 for s in report.stalls), report.stalls
    assert len(report.small_stalled) >= 3, report.small_stalled
    free = soak._pct(report.small_free, 0.5) if report.small_free else 1.0
    assert max(report.small_stalled) < 15.0 and soak._pct(report.small_stalled, 0.5) < 4 * free + 1.0, \
        (report.small_stalled, report.small_free)
