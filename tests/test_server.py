"""The OpenAI-compatible server, as users meet it: a subprocess on 127.0.0.1 driven by the real
`openai` client (and httpx for raw HTTP)."""
from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from server_process import ServerProcess

PROMPTS = [f"Story number {i}: once upon a time" for i in range(8)]


@pytest.fixture(scope="module")
def server(tiny_model_path, tmp_path_factory):
    # Flash attention on: our CPU kernel gives a sequence the same logits whatever else is in the
    # batch, which "eight concurrent streams equal one by one" relies on (llama.cpp's attention with
    # flash attention off rounds differently for other batch shapes: see the README, Serve).
    srv = ServerProcess(tiny_model_path, "--parallel", "8", "--n-ctx", "4096", "--flash-attn", "on",
                        log=tmp_path_factory.mktemp("server") / "server.log")
    yield srv
    assert srv.terminate() == 0, srv.log()


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def _health(server) -> dict:
    r = httpx.get(server.base_url + "/health", headers=server.headers(), timeout=10)
    assert r.status_code == 200
    return r.json()


def _wait_idle(server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = _health(server)
        if h["active"] == 0 and h["queued"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"the server still holds requests: {h}")


def test_models_and_completion_usage(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    r = client.completions.create(model="tiny", prompt="Hello there", max_tokens=8, temperature=0)
    n_prompt = len(httpx.post(server.base_url + "/tokenize", json={"content": "Hello there"}).json()["tokens"])
    assert r.usage.prompt_tokens == n_prompt
    assert r.usage.completion_tokens == 8 and r.usage.total_tokens == n_prompt + 8
    assert r.choices[0].finish_reason == "length" and r.choices[0].text
    back = httpx.post(server.base_url + "/detokenize", json={"tokens": [9707, 1879]}).json()
    assert back == {"content": "Hello world"}


def test_streaming_equals_non_streaming_and_seeds(client):
    full = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=16, temperature=0)
    parts = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=16, temperature=0, stream=True,
                                      stream_options={"include_usage": True})
    chunks = list(parts)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full.choices[0].text
    assert chunks[-1].usage.completion_tokens == 16 and not chunks[-1].choices
    a, b = (client.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=12, temperature=1.0, seed=42)
            .choices[0].text for _ in range(2))
    assert a == b


def test_stop_strings(client):
    text = client.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=16, temperature=0).choices[0].text
    stop = text[4:8]
    r = client.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=16, temperature=0, stop=[stop])
    assert r.choices[0].text == text[:text.index(stop)] and r.choices[0].finish_reason == "stop"


def test_chat_stream_and_thinking_switch(client):
    messages = [{"role": "user", "content": "Say hi"}]
    full = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                          extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert full.choices[0].message.role == "assistant" and full.usage.completion_tokens == 10
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                            stream=True,
                                            extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert "".join(c.choices[0].delta.content or "" for c in stream) == full.choices[0].message.content
    thinking = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                              extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    # the no-thinking prompt carries an empty <think></think> block: more prompt tokens
    assert full.usage.prompt_tokens > thinking.usage.prompt_tokens


def test_errors_are_openai_errors(server, client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="x", max_tokens=100000)
    assert e.value.body["param"] == "max_tokens" and "maximum context length is 512" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="max_tokens must be at least 1"):
        client.completions.create(model="tiny", prompt="x", max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="exceed context window"):
        client.completions.create(model="tiny", prompt="word " * 700, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="tiny", prompt="x", max_tokens=2, temperature=-1)
    with pytest.raises(openai.BadRequestError, match="'temperature' must be a number"):
        client.completions.create(model="tiny", prompt="x", max_tokens=2, extra_body={"temperature": "hot"})
    with pytest.raises(openai.BadRequestError, match="'messages'"):
        client.chat.completions.create(model="tiny", messages=[], max_tokens=2)
    assert _health(server)["active"] == 0


def test_raw_http_cases(server):
    base = server.base_url
    r = httpx.post(base + "/v1/completions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(base + "/v1/completions", json=["a list"])
    assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]
    r = httpx.post(base + "/v1/completions", content=b'{"prompt": "' + b"a" * (5 * 1024 * 1024) + b'"}')
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert httpx.get(base + "/v1/nothing").status_code == 404
    assert httpx.get(base + "/v1/completions").status_code == 405
    metrics = httpx.get(base + "/metrics").text
    for name in ("requests_total", "prompt_tokens_total", "generated_tokens_total", "requests_active",
                 "requests_queued", "tokens_per_second"):
        assert f"\npybonsai_{name} " in metrics
    # SSE framing: "data: <json>" events separated by blank lines, ending with data: [DONE]
    with httpx.stream("POST", base + "/v1/chat/completions", timeout=60,
                      json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                            "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode("utf-8")
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert payloads[-1]["choices"][0]["finish_reason"] == "length"


def test_eight_concurrent_streams_equal_one_by_one(server, client):
    one_by_one = [client.completions.create(model="tiny", prompt=p, max_tokens=20, temperature=0).choices[0].text
                  for p in PROMPTS]
    out = [None] * len(PROMPTS)
    start = threading.Barrier(len(PROMPTS))

    def run(i):
        start.wait()
        stream = client.completions.create(model="tiny", prompt=PROMPTS[i], max_tokens=20, temperature=0,
                                           stream=True)
        out[i] = "".join(c.choices[0].text for c in stream)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert out == one_by_one
    _wait_idle(server)


def test_disconnect_frees_the_slot(server, client):
    with httpx.stream("POST", server.base_url + "/v1/completions", timeout=60,
                      json={"model": "tiny", "prompt": PROMPTS[0], "max_tokens": 500, "stream": True, "temperature": 0}) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert _health(server)["active"] == 1
    _wait_idle(server)  # closing the connection cancelled the request and freed its sequence
    r = client.completions.create(model="tiny", prompt="next", max_tokens=4, temperature=0)
    assert r.usage.completion_tokens == 4


@pytest.fixture(scope="module")
def small_server(tiny_model_path, tmp_path_factory):
    srv = ServerProcess(tiny_model_path, "--parallel", "1", "--n-ctx", "4096", "--max-queue", "1",
                        "--drain-timeout", "1", api_key="s3cret",
                        log=tmp_path_factory.mktemp("server") / "small.log")
    yield srv
    srv.stop()


def test_api_key(small_server):
    base = small_server.base_url
    assert httpx.get(base + "/health").status_code == 200  # never behind the key
    r = httpx.get(base + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(base + "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    with openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    with openai.OpenAI(base_url=base + "/v1", api_key="s3cret", max_retries=0) as good:
        assert good.completions.create(model="tiny", prompt="x", max_tokens=2).usage.completion_tokens == 2


def test_full_queue_answers_429_then_recovers(small_server):
    base, headers = small_server.base_url, small_server.headers()
    body = {"model": "tiny", "prompt": PROMPTS[0], "max_tokens": 4000, "stream": True, "temperature": 0}
    with httpx.Client(timeout=60, headers=headers) as http:
        with http.stream("POST", base + "/v1/completions", json=body) as running:
            lines = running.iter_lines()  # (dropping the iterator would close the response)
            next(lines)  # holds the only sequence
            queued = threading.Thread(target=lambda: http.post(base + "/v1/completions",
                                                               json={**body, "max_tokens": 2, "stream": False}))
            queued.start()
            deadline = time.monotonic() + 20
            while _health(small_server)["queued"] != 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            r = http.post(base + "/v1/completions", json={**body, "stream": False})
            assert r.status_code == 429 and r.headers["Retry-After"] == "1"
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
        queued.join(60)
    _wait_idle(small_server)
    with openai.OpenAI(base_url=base + "/v1", api_key="s3cret", max_retries=0) as client:
        assert client.completions.create(model="tiny", prompt="x", max_tokens=3).usage.completion_tokens == 3


def test_sigterm_with_a_request_in_flight_exits_0(small_server):
    with httpx.Client(timeout=60, headers=small_server.headers()) as http:
        with http.stream("POST", small_server.base_url + "/v1/completions",
                         json={"model": "tiny", "prompt": "x", "max_tokens": 4000, "stream": True, "temperature": 0}) as r:
            lines = r.iter_lines()
            next(lines)
            assert _health(small_server)["active"] == 1
            t0 = time.monotonic()
            assert small_server.terminate(timeout=30) == 0, small_server.log()
            assert time.monotonic() - t0 < 20
