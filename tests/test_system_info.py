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
