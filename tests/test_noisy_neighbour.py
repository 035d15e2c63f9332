"""The noisy-neighbour benchmark's short version (issue 28; the full one is
benchmarks/noisy_neighbour.py): a greedy victim completion alone, then beside heavy requests
that are within the limits. Bounds are generous (a loaded 2-core machine must not flake them):
before the fix a grammar-constrained neighbour made every shared step wait for its
full-vocabulary mask (tens of ms a token: the victim took tens of times longer)."""
from __future__ import annotations

import statistics
import threading
import time

import httpx
import pytest

from server_process import running_server

VICTIM = {"prompt": "Story number 7: once upon a time", "max_tokens": 60, "temperature": 0,
          "logit_bias": {"151643": -100, "151645": -100}}


@pytest.fixture(scope="module")
def server(tiny_model_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "noisy.log"
    with running_server(tiny_model_path, log, "--parallel", "4", "--n-ctx", "4096") as srv:
        yield srv


def _victim(server) -> float:
    t0 = time.monotonic()
    r = httpx.post(server.base_url + "/v1/completions", json=VICTIM, timeout=120)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 60
    return time.monotonic() - t0


def _beside(server, body: dict) -> float:
    """The victim's time while `body` streams (it is cancelled afterwards)."""
    with httpx.Client(timeout=120) as http, http.stream("POST", server.base_url + "/v1/completions",
                                                        json={**body, "stream": True}) as neighbour:
        lines = neighbour.iter_lines()  # (dropping the iterator would close the response)
        assert next(lines).startswith("data: ")  # generating
        return _victim(server)


@pytest.mark.parametrize("neighbour", [
    pytest.param({"grammar": 'root ::= "{" [a-z ]* "}"'}, id="grammar"),
    pytest.param({"logprobs": 5}, id="logprobs-5"),
    pytest.param({"stop": [c * 256 for c in "qxzj"]}, id="four-long-stops"),
])
def test_victim_barely_slower_beside_a_heavy_request_within_limits(server, neighbour):
    _victim(server)  # warm
    alone = statistics.median(_victim(server) for _ in range(3))
    body = {"prompt": "Story number 3: once upon a time", "max_tokens": 1000, "temperature": 0, **neighbour}
    beside = statistics.median(_beside(server, body) for _ in range(2))
    assert beside <= 4 * alone + 0.5, (alone, beside)
