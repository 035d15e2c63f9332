"""Downloading models from the Hugging Face Hub (pybonsai.hub, pybonsai.catalog,
Llama.from_pretrained) against a local stand-in Hub (tests/hub_server.py): never the network."""
from __future__ import annotations

from pathlib import Path

import pytest

from hub_fixtures import (ALIAS, SPLIT_NAMES, SPLIT_REPO, TINY_REPO, TWO_REPO, hub, hub_env,  # noqa: F401
                          run_py, split_model_dir)
from pybonsai import catalog
from pybonsai.hub import HubError, choose_model_file, split_parts


# --- choosing files: pure functions, in-process ------------------------------------------

def test_split_parts():
    assert split_parts("m.gguf") == ["m.gguf"]
    assert split_parts("d/M-Q1_0-00002-of-00003.gguf") == [
        "d/M-Q1_0-00001-of-00003.gguf", "d/M-Q1_0-00002-of-00003.gguf", "d/M-Q1_0-00003-of-00003.gguf"]


def test_choose_model_file():
    files = ["README.md", "x-Q1_0.gguf", "x-F16.gguf"] + [f"big-{i:05d}-of-00002.gguf" for i in (1, 2)]
    assert choose_model_file("o/r", files, "*Q1_0.gguf") == "x-Q1_0.gguf"
    assert choose_model_file("o/r", files, "*q1_0*") == "x-Q1_0.gguf"            # case-insensitive fallback
    assert choose_model_file("o/r", files, "big*") == "big-00001-of-00002.gguf"   # one split set = one model
    assert choose_model_file("o/r", files, "big-00002-of-00002.gguf") == "big-00001-of-00002.gguf"
    assert choose_model_file("o/r", ["README.md", "only.gguf"], None) == "only.gguf"
    assert choose_model_file("o/r", files[3:], None) == "big-00001-of-00002.gguf"
    with pytest.raises(ValueError, match="3 GGUF models.*big-00001-of-00002.gguf, x-F16.gguf, x-Q1_0.gguf"):
        choose_model_file("o/r", files, None)
    with pytest.raises(ValueError, match="matches 2 files.*x-F16.gguf, x-Q1_0.gguf"):
        choose_model_file("o/r", files, "x-*.gguf")
    with pytest.raises(FileNotFoundError, match="no file matching '\\*Q4_K\\*'.*x-Q1_0.gguf"):
        choose_model_file("o/r", files, "*Q4_K*")
    with pytest.raises(FileNotFoundError, match="no .gguf file"):
        choose_model_file("o/r", ["README.md"], None)


def test_resolve_model_local_and_unknown(tmp_path: Path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert catalog.resolve_model(f) == f
    assert catalog.resolve_model(str(f)) == f
    with pytest.raises(ValueError, match="bonsai-1.7b, bonsai-4b, bonsai-8b"):
        catalog.resolve_model("llama-3-70b")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        catalog.resolve_model(str(tmp_path / "missing.gguf"))
    assert catalog.DEFAULT_MODEL in catalog.MODELS
    entry = catalog.MODELS["bonsai-8b"]
    assert (entry.repo_id, entry.filename) == ("prism-ml/Bonsai-8B-gguf", "Bonsai-8B-Q1_0.gguf")
    assert issubclass(HubError, OSError)


# --- through huggingface_hub, in subprocesses --------------------------------------------

def test_download_load_generate_then_cache(hub, hub_env):
    report, _ = run_py(f"""
from pybonsai import Llama
llm = Llama.from_pretrained({TINY_REPO!r}, n_ctx=64)
out = llm.create_completion("Hello", max_tokens=3, temperature=0)
report({{"path": llm.model_path, "text": out["choices"][0]["text"], "n": out["usage"]["completion_tokens"]}})
""", hub_env)
    path = Path(report["path"])
    assert path.is_file() and path.name == "tiny-Q1_0.gguf"
    assert Path(hub_env["HF_HUB_CACHE"]) in path.parents              # the hub cache layout
    assert report["n"] == 3
    assert ("GET", f"/api/models/{TINY_REPO}/tree/main") in hub.requests
    assert hub.fetched("GET") == [f"/{TINY_REPO}/resolve/main/tiny-Q1_0.gguf"]

    # Served from the cache with the server gone: by exact name (a failed HEAD falls back to
    # the cache) and offline, where a glob is matched against the cached snapshot.
    hub.stop()
    code = f"""
from pybonsai import Llama, hub
report([hub.from_pretrained({TINY_REPO!r}, filename="tiny-Q1_0.gguf").as_posix(),
        hub.from_pretrained({TINY_REPO!r}, filename="*.gguf", local_files_only=True).as_posix(),
        Llama.from_pretrained({TINY_REPO!r}, local_files_only=True, vocab_only=True).model_path])
"""
    again, _ = run_py(code, hub_env)
    offline, _ = run_py(code.replace("tiny-Q1_0.gguf", "*Q1_0*"), hub_env, extra_env={"HF_HUB_OFFLINE": "1"})
    assert again == offline == [report["path"]] * 3


def test_not_cached_and_unreachable(hub, hub_env):
    hub.stop()
    report, proc = run_py(f"""
from pybonsai import Llama, hub
report({{"local_only": error(hub.from_pretrained, {TINY_REPO!r}, local_files_only=True),
         "local_only_exact": error(Llama.from_pretrained, {TINY_REPO!r}, filename="tiny-Q1_0.gguf",
                                   local_files_only=True),
         "unreachable": error(hub.from_pretrained, {TINY_REPO!r}),
         "unreachable_exact": error(hub.from_pretrained, {TINY_REPO!r}, filename="tiny-Q1_0.gguf")}})
""", hub_env, fast_retries=True)
    for key, err in report.items():
        assert err["type"] == "HubError" and "OSError" in err["mro"], (key, err)
        assert not err["cause"], key                                  # no chained HTTP-stack traceback
        assert "\n" not in err["msg"]
        assert "local .gguf" in err["msg"], err["msg"]
    assert "not in the Hugging Face cache" in report["local_only"]["msg"]
    assert "local_files_only=True" in report["local_only_exact"]["msg"]
    for key in ("unreachable", "unreachable_exact"):
        assert "cannot reach the Hugging Face Hub" in report[key]["msg"]
        assert "HF_HUB_OFFLINE=1" in report[key]["msg"]
    assert "Traceback" not in proc.stderr


def test_choosing_files_on_the_hub(hub, hub_env):
    report, _ = run_py(f"""
from pybonsai import hub
report({{"ambiguous_default": error(hub.from_pretrained, {TWO_REPO!r}),
         "ambiguous_glob": error(hub.from_pretrained, {TWO_REPO!r}, filename="*-Q1_0.gguf"),
         "no_match": error(hub.from_pretrained, {TWO_REPO!r}, filename="*Q4_K_M*"),
         "missing_exact": error(hub.from_pretrained, {TWO_REPO!r}, filename="c-Q1_0.gguf"),
         "no_repo": error(hub.from_pretrained, "pybonsai-test/nope"),
         "no_revision": error(hub.from_pretrained, {TWO_REPO!r}, revision="v9"),
         "glob": hub.from_pretrained({TWO_REPO!r}, filename="a-*").name,
         "v2": hub.from_pretrained({TWO_REPO!r}, revision="v2").as_posix()}})
""", hub_env)
    assert report["ambiguous_default"]["type"] == "ValueError"
    assert report["ambiguous_glob"]["type"] == "ValueError"
    for key in ("ambiguous_default", "ambiguous_glob", "no_match", "missing_exact"):
        assert "a-Q1_0.gguf, b-Q1_0.gguf" in report[key]["msg"], report[key]
    assert report["no_match"]["type"] == report["missing_exact"]["type"] == "FileNotFoundError"
    assert report["no_repo"]["type"] == report["no_revision"]["type"] == "HubError"
    assert "not found" in report["no_repo"]["msg"] and "'v9'" in report["no_revision"]["msg"]
    assert report["glob"] == "a-Q1_0.gguf"
    v2 = Path(report["v2"])
    assert v2.name == "b-Q1_0.gguf" and v2.parent.name == hub.repos[TWO_REPO].revisions["v2"].commit
    assert ("GET", f"/api/models/{TWO_REPO}/tree/v2") in hub.requests
    assert f"/{TWO_REPO}/resolve/v2/b-Q1_0.gguf" in hub.fetched("HEAD")
    # b at v2 has a's content: the cache shares the blob, so only a's bytes were fetched
    assert hub.fetched("GET") == [f"/{TWO_REPO}/resolve/main/a-Q1_0.gguf"]


def test_split_model_downloaded_whole_and_loaded(hub, hub_env, tiny_model_path):
    report, _ = run_py(f"""
from pybonsai import Llama, hub
second = hub.from_pretrained({SPLIT_REPO!r}, filename={SPLIT_NAMES[1]!r})
llm = Llama.from_pretrained({SPLIT_REPO!r}, n_ctx=64)
ref = Llama({str(tiny_model_path)!r}, n_ctx=64)
texts = [m.create_completion("Hello", max_tokens=3, temperature=0)["choices"][0]["text"] for m in (llm, ref)]
report({{"path": llm.model_path, "second": second.as_posix(), "texts": texts}})
""", hub_env)
    path = Path(report["path"])
    assert path.name == SPLIT_NAMES[0] and report["second"] == report["path"]
    assert sorted(p.name for p in path.parent.iterdir()) == SPLIT_NAMES
    # the first part from main, the others pinned to the commit the first came from
    commit = hub.repos[SPLIT_REPO].revisions["main"].commit
    assert path.parent.name == commit
    assert hub.fetched("GET") == [f"/{SPLIT_REPO}/resolve/{rev}/{n}"
                                  for rev, n in zip(["main", commit, commit], SPLIT_NAMES)]
    assert report["texts"][0] == report["texts"][1]                    # same model as the unsplit file


def test_alias_resolves_through_the_hub(hub, hub_env):
    report, _ = run_py(f"""
from pybonsai import Llama, catalog
report([catalog.resolve_model({ALIAS!r}).as_posix(),
        Llama.from_pretrained({ALIAS!r}, vocab_only=True).model_path])
""", hub_env)
    entry = catalog.MODELS[ALIAS]
    assert Path(report[0]).name == entry.filename and report[0] == report[1]
    assert hub.fetched("GET") == [f"/{entry.repo_id}/resolve/main/{entry.filename}"]


def test_range_requests(hub, tiny_model_path):
    import urllib.request

    data = tiny_model_path.read_bytes()
    url = f"{hub.url}/{TINY_REPO}/resolve/main/tiny-Q1_0.gguf"
    for rng, want in (("bytes=4-9", data[4:10]), ("bytes=100-", data[100:]), ("bytes=-5", data[-5:])):
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": rng})) as r:
            assert r.status == 206 and r.read() == want
            assert r.headers["Content-Range"].endswith(f"/{len(data)}")
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as r:
        assert int(r.headers["Content-Length"]) == len(data)
        assert r.headers["X-Repo-Commit"] == hub.repos[TINY_REPO].revisions["main"].commit
        assert r.headers["X-Linked-Etag"].strip('"') == r.headers["ETag"].strip('"')
