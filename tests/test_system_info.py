"""system_info(): what a user pastes into a bug report."""
from __future__ import annotations

import pybonsai


def test_system_info_names_versions_variant_and_devices():
    info = pybonsai.system_info()
    assert info["pybonsai"] == pybonsai.__version__
    assert len(info["llama_cpp_commit"]) == 40
    assert info["cpu_variant"] != "unknown"
    assert any(d["type"] == "cpu" for d in info["devices"])
    assert "CPU" in info["backends"]


def test_system_info_names_the_q1_0_path_and_its_table_limit():
    info = pybonsai.system_info()
    assert info["q1_0_kernel"] in ("avx512", "avx2", "scalar", "upstream")
    limit = info["q1_0_table_path_max_tokens"]
    assert isinstance(limit, int) and 0 <= limit <= 4096
    if info["q1_0_kernel"] in ("scalar", "upstream"):
        assert limit == 0  # no table path there


def test_system_info_names_the_q2_0_path():
    """Q2_0 runs on the Q1_0 path unless PYBONSAI_Q2_KERNEL=upstream (the test environment's value)."""
    import os

    info = pybonsai.system_info()
    expected = "upstream" if os.environ.get("PYBONSAI_Q2_KERNEL") == "upstream" else info["q1_0_kernel"]
    assert info["q2_0_kernel"] == expected
