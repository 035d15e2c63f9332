"""pybonsai.llama_types against llama-cpp-python's llama_types.py, read from the pinned, hash-checked
sdist (vendor/LLAMA_CPP_LOCK) at test time: the same public names, and every TypedDict with the
same required and optional keys. Upstream's file is parsed with `ast`, never imported."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, Tuple

import pytest

import lcp_sdist
import pybonsai.llama_types as llama_types

ROOT = Path(__file__).resolve().parents[1]
Keys = Tuple[frozenset, frozenset]  # (required, optional)


@pytest.fixture(scope="module")
def upstream_source() -> str:
    """llama_cpp/llama_types.py from the pinned, hash-checked sdist (tests/lcp_sdist.py)."""
    return lcp_sdist.read_member("/llama_cpp/llama_types.py")


def _upstream_names(tree: ast.Module) -> list:
    names = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return [n for n in names if not n.startswith("_")]


def _is_not_required(annotation: ast.expr) -> bool:
    return (isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name)
            and annotation.value.id == "NotRequired")


def _upstream_typeddicts(tree: ast.Module) -> Dict[str, Keys]:
    """name -> (required keys, optional keys) for each TypedDict class and each alias of one."""
    shapes: Dict[str, Keys] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            required, optional = set(), set()
            for base in node.bases:
                if isinstance(base, ast.Name) and base.id in shapes:
                    required |= shapes[base.id][0]
                    optional |= shapes[base.id][1]
            total = next((ast.literal_eval(k.value) for k in node.keywords if k.arg == "total"), True)
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    key = item.target.id
                    required.discard(key)
                    optional.discard(key)
                    (optional if not total or _is_not_required(item.annotation) else required).add(key)
            shapes[node.name] = (frozenset(required), frozenset(optional))
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id in shapes:
            for target in node.targets:
                shapes[target.id] = shapes[node.value.id]
    return shapes


def test_same_public_names(upstream_source):
    upstream = _upstream_names(ast.parse(upstream_source))
    assert len(upstream) == len(set(upstream)) == 62
    assert sorted(llama_types.__all__) == sorted(upstream)
    missing = [n for n in upstream if not hasattr(llama_types, n)]
    assert not missing
    namespace: dict = {}
    exec("from pybonsai.llama_types import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(upstream)


def test_typeddicts_have_upstreams_keys(upstream_source):
    shapes = _upstream_typeddicts(ast.parse(upstream_source))
    assert len(shapes) > 40
    wrong: Dict[str, Tuple[Keys, Keys]] = {}
    for name, (required, optional) in shapes.items():
        ours = getattr(llama_types, name)
        got = (frozenset(ours.__required_keys__), frozenset(ours.__optional_keys__))
        if got != (required, optional):
            wrong[name] = (got, (required, optional))
    assert not wrong, "\n".join(f"{n}: ours (required, optional) {g}, upstream {u}" for n, (g, u) in wrong.items())


def test_type_aliases_are_unions_or_generics():
    """The non-class names are typing constructs (Union[...], List[...], Dict[...])."""
    for name in ("JsonType", "ChatCompletionRequestMessage", "ChatCompletionRequestMessageContentPart",
                 "ChatCompletionMessageToolCalls", "ChatCompletionRequestFunctionCall",
                 "ChatCompletionFunctionParameters", "ChatCompletionToolChoiceOption"):
        value = getattr(llama_types, name)
        assert not isinstance(value, type) and getattr(value, "__origin__", None) is not None, name


def test_constructing_messages_makes_plain_dicts():
    message = llama_types.ChatCompletionRequestUserMessage(role="user", content="Hi")
    assert message == {"role": "user", "content": "Hi"} and type(message) is dict


def test_imports_without_the_compiled_core():
    code = ("import sys, pybonsai.llama_types, pybonsai.llama_chat_format; "
            "assert 'pybonsai._core' not in sys.modules, 'the compiled core was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
