"""`pybonsai serve` reuses a chat's history between turns (through the real openai client), and
shows it in GET /slots and /metrics."""
from __future__ import annotations

import re

import httpx
import openai
import pytest

from server_process import openai_client, running_server

MESSAGES = ["Tell me about the sea and its " + " ".join(f"w{i}" for i in range(k, k + 40)) for k in range(4)]


@pytest.fixture(scope="module")
def server(tiny_model_path, tmp_path_factory):
    with running_server(tiny_model_path, tmp_path_factory.mktemp("server") / "server.log",
                        "--parallel", "2", "--n-ctx", "4096") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with openai_client(server) as c:
        yield c


def _metric(server, name: str) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    return float(re.search(rf"^pybonsai_{name} (\S+)$", text, re.M).group(1))


def _chat(client, cache_prompt: bool) -> list[str]:
    history, replies = [], []
    for message in MESSAGES:
        history.append({"role": "user", "content": message})
        r = client.chat.completions.create(model="tiny", messages=history, max_tokens=10, temperature=0,
                                           extra_body={"cache_prompt": cache_prompt, "enable_thinking": False})
        reply = r.choices[0].message.content
        replies.append(reply)
        history.append({"role": "assistant", "content": reply})
    return replies


def test_chat_turns_reuse_the_history(server, client):
    reused0, prefilled0 = _metric(server, "prompt_tokens_reused_total"), _metric(server, "prompt_tokens_total")
    without = _chat(client, cache_prompt=False)
    assert _metric(server, "prompt_tokens_reused_total") == reused0  # cache_prompt: false reuses nothing
    prefilled_without = _metric(server, "prompt_tokens_total") - prefilled0
    with_cache = _chat(client, cache_prompt=True)
    reused = _metric(server, "prompt_tokens_reused_total") - reused0
    prefilled_with = _metric(server, "prompt_tokens_total") - prefilled0 - prefilled_without
    assert with_cache == without
    assert reused > 0 and prefilled_with + reused == prefilled_without
    assert prefilled_with < prefilled_without / 2  # turns 2-4 decode only what is new


def test_slots(server, client):
    r = httpx.get(server.base_url + "/slots", timeout=10)
    assert r.status_code == 200
    slots = r.json()
    assert [s["id"] for s in slots] == [0, 1]
    assert all(s["n_ctx"] == 2048 and s["is_processing"] is False and s["id_task"] == -1 for s in slots)
    assert max(s["n_cached_tokens"] for s in slots) > 100  # the chat above is retained
    assert httpx.get(server.base_url + "/slots?fail_on_no_slot=1", timeout=10).status_code == 200


def test_cache_prompt_must_be_a_boolean(client):
    with pytest.raises(openai.BadRequestError, match="cache_prompt"):
        client.completions.create(model="tiny", prompt="hi", max_tokens=2, extra_body={"cache_prompt": "yes"})
