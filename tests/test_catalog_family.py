"""Catalog aliases of the whole Bonsai family (1-bit and ternary, 1.7B to 27B), resolved through
a local stand-in Hub (tests/hub_server.py) that serves synthetic models under PrismML's real
repository and file names: never the network."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from hub_fixtures import hub_env, run_py  # noqa: F401
from hub_server import HubServer
from pybonsai import catalog, synth

FAMILY = {  # alias -> (repository, file): what PrismML publishes (see the README's Models table)
    "bonsai-1.7b": ("prism-ml/Bonsai-1.7B-gguf", "Bonsai-1.7B-Q1_0.gguf"),
    "bonsai-4b": ("prism-ml/Bonsai-4B-gguf", "Bonsai-4B-Q1_0.gguf"),
    "bonsai-8b": ("prism-ml/Bonsai-8B-gguf", "Bonsai-8B-Q1_0.gguf"),
    "bonsai-27b": ("prism-ml/Bonsai-27B-gguf", "Bonsai-27B-Q1_0.gguf"),
    "ternary-bonsai-1.7b": ("prism-ml/Ternary-Bonsai-1.7B-gguf", "Ternary-Bonsai-1.7B-Q2_0_g64.gguf"),
    "ternary-bonsai-4b": ("prism-ml/Ternary-Bonsai-4B-gguf", "Ternary-Bonsai-4B-Q2_0_g64.gguf"),
    "ternary-bonsai-8b": ("prism-ml/Ternary-Bonsai-8B-gguf", "Ternary-Bonsai-8B-Q2_0_g64.gguf"),
    "ternary-bonsai-27b": ("prism-ml/Ternary-Bonsai-27B-gguf", "Ternary-Bonsai-27B-Q2_g64.gguf"),
    "ternary-bonsai-2-27b": ("prism-ml/Ternary-Bonsai-2-27B-gguf", "Ternary-Bonsai-2-27B-PQ2_0.gguf"),
    "ternary-bonsai-2-27b-ptq1": ("prism-ml/Ternary-Bonsai-2-27B-gguf", "Ternary-Bonsai-2-27B-PTQ1_0.gguf"),
}


def test_family_entries():
    assert {a: (e.repo_id, e.filename) for a, e in catalog.MODELS.items()} == FAMILY
    sizes = {a: e.approx_size_gb for a, e in catalog.MODELS.items()}
    # ordered by size within each family; ternary (2.25 bits/weight) about twice 1-bit (1.125)
    assert sizes["bonsai-1.7b"] < sizes["bonsai-4b"] < sizes["bonsai-8b"] < sizes["bonsai-27b"]
    assert sizes["ternary-bonsai-1.7b"] < sizes["ternary-bonsai-4b"] < sizes["ternary-bonsai-8b"] \
        < sizes["ternary-bonsai-27b"]
    for size in ("1.7b", "4b", "8b", "27b"):
        assert 1.6 < sizes[f"ternary-bonsai-{size}"] / sizes[f"bonsai-{size}"] < 2.2, size
    text = catalog.describe()
    assert all(f"{repo}/{name}" in text for repo, name in FAMILY.values())
    with pytest.raises(ValueError, match="ternary-bonsai-27b"):
        catalog.resolve_model("ternary-bonsai-70b")


@pytest.fixture
def hub(tiny_model_path, tiny_hybrid_model_path, ternary_tiny_model_path,
        ternary_tiny_hybrid_model_path, tiny_bonsai2_model_path, tmp_path) -> Iterator[HubServer]:
    """The family's repositories with synthetic stand-ins of the right architecture and type.
    The ternary repositories also hold PrismML's other packings (the deprecated group-128
    `*-Q2_0.gguf` and the fork's `*-PQ2_0.gguf`, here junk bytes): an alias must pick the official
    group-64 file that this llama.cpp loads."""
    server = HubServer()
    stand_in = {"bonsai-27b": tiny_hybrid_model_path, "ternary-bonsai-27b": ternary_tiny_hybrid_model_path}
    # Bonsai 2's two files differ (the Hub client would not fetch a second copy of the same bytes)
    other = synth.write_model(tmp_path / "bonsai2-seed1.gguf", "tiny-bonsai2", seed=1)
    bonsai2 = {FAMILY["ternary-bonsai-2-27b"][1]: tiny_bonsai2_model_path,
               FAMILY["ternary-bonsai-2-27b-ptq1"][1]: other}
    for alias, (repo, name) in FAMILY.items():
        if alias.startswith("ternary-bonsai-2-"):  # one repository, both packings
            server.add_repo(repo, {**bonsai2, "README.md": b"# stand-in\n"})
            continue
        default = ternary_tiny_model_path if alias.startswith("ternary") else tiny_model_path
        files = {name: stand_in.get(alias, default), "README.md": b"# stand-in\n"}
        if alias.startswith("ternary"):
            stem = name.split("-Q2_")[0]
            files[f"{stem}-Q2_0.gguf"] = b"GGUF legacy group-128 stand-in"
            files[f"{stem}-PQ2_0.gguf"] = b"GGUF fork type 142 stand-in"
        server.add_repo(repo, files)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_every_alias_resolves_to_its_file_through_the_hub(hub, hub_env):
    report, _ = run_py(f"""
from pybonsai import Llama, catalog
paths = {{alias: catalog.resolve_model(alias.upper() if alias.endswith("8b") else alias).as_posix()
         for alias in {sorted(FAMILY)!r}}}
llm = Llama.from_pretrained("ternary-bonsai-27b", vocab_only=True)
report({{"paths": paths, "loaded": llm.model_path, "arch": llm.metadata["general.architecture"]}})
""", hub_env)
    for alias, (repo, name) in FAMILY.items():
        path = Path(report["paths"][alias])
        assert path.name == name and path.is_file(), alias
        assert f"models--{repo.replace('/', '--')}" in path.as_posix(), alias
    assert report["loaded"] == report["paths"]["ternary-bonsai-27b"] and report["arch"] == "qwen35"
    fetched = hub.fetched("GET")
    assert sorted(fetched) == sorted(f"/{repo}/resolve/main/{name}" for repo, name in FAMILY.values())
    # Bonsai 1 ternary aliases take the official Q2_0 file; only Bonsai 2's take a PQ2_0 one
    assert not any(p.endswith(("-Q2_0.gguf", "-PQ2_0.gguf")) for p in fetched if "-Bonsai-2-" not in p)
