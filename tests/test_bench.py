"""`pybonsai bench`: depth (-d), KV cache switches, RSS per configuration."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pybonsai import bench


def _bench(*args):
    return subprocess.run([sys.executable, "-m", "pybonsai", "bench", *args], capture_output=True, text=True,
                          timeout=300)


def test_depth_and_kv_configurations(tiny_model_path):
    proc = _bench(str(tiny_model_path), "-p", "8", "-n", "4", "-d", "0,64", "-r", "1", "-t", "1",
                  "-ctk", "f16,q8_0", "-ctv", "q8_0", "-fa", "on", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    got = {(r["test"], r["type_k"]) for r in rows}
    assert got == {(t, k) for t in ("pp8", "tg4", "pp8@d64", "tg4@d64") for k in ("f16", "q8_0")}
    for r in rows:
        assert r["type_v"] == "q8_0" and r["flash_attn"] == "on"
        assert r["tokens_per_s"] > 0 and r["peak_rss_mb"] >= r["rss_after_load_mb"] > 0
        assert r["n_ctx"] >= 64 + 8
        assert r["n_depth"] == (64 if r["test"].endswith("@d64") else 0)


def test_invalid_configuration_fails_before_running(tiny_model_path):
    proc = _bench(str(tiny_model_path), "-ctk", "q8_0", "-ctv", "f16,q4_0", "-fa", "off")
    assert proc.returncode != 0
    assert "requires flash_attn=True" in proc.stderr


def test_depth_is_in_the_cache_when_timing_starts(tiny_model_path, monkeypatch):
    seen = []
    real = bench._time_tg

    def spy(llm, tokens):
        seen.append(llm.n_tokens)
        return real(llm, tokens)

    monkeypatch.setattr(bench, "_time_tg", spy)
    rows = bench.run_bench(str(tiny_model_path), n_prompt=[], n_gen=[3], threads=1, repetitions=2,
                           n_depth=[0, 40])
    assert [r.test for r in rows] == ["tg3", "tg3@d40"]
    assert seen == [0, 0, 0, 40, 40, 40]  # warm-up + 2 repetitions at each depth


def test_too_small_context_is_refused(tiny_model_path):
    with pytest.raises(ValueError, match="too small"):
        bench.run_bench(str(tiny_model_path), n_prompt=[8], n_gen=[4], n_depth=[100], n_ctx=64)
