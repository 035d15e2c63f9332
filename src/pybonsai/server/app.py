"""The ASGI application (Starlette) over an Engine.

The engine decodes in its own thread; handlers only submit jobs and await the events the engine
thread posts onto the event loop (call_soon_threadsafe), so the loop never blocks on the model.
Preparing a request (tokenizing, rendering the chat template, building the sampler and its
grammar) runs in a small worker pool, after a cheap admission check (a full queue answers 429
at once), so that /health and every other stream keep going whatever is being prepared."""
from __future__ import annotations

import asyncio
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, AsyncIterator, Optional

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import gpu
from ..completions import CompletionJob, _Step
from ..engine import Engine, EngineClosed, QueueFull, RequestHandle
from .protocol import APIError, chat_job, completion_job, job_error, parse_json

__all__ = ["ServerSettings", "create_app"]


@dataclass
class ServerSettings:
    model_id: str
    api_key: Optional[str] = None
    max_body_bytes: int = 4 * 1024 * 1024
    retry_after_s: int = 1
    prepare_workers: int = 2  # threads that tokenize, render templates and build samplers
    reasoning_format: str = "auto"  # <think> as reasoning_content (llama-server's default); "none": in content


def _error(exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


class _Api:
    def __init__(self, engine: Engine, settings: ServerSettings):
        self.engine, self.settings = engine, settings
        self.model_ids = (settings.model_id, engine.model_path)
        self.started = int(time.time())
        # the GPU devices the model may run on (names; none without an offload)
        self.gpu_devices = [d["name"] for d in gpu.status().get("devices", [])] if engine.n_gpu_layers else []
        self.pool = ThreadPoolExecutor(max_workers=settings.prepare_workers, thread_name_prefix="pybonsai-prepare")

    async def _in_pool(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # -- helpers ----------------------------------------------------------------------------
    async def _body(self, request: Request) -> dict[str, Any]:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        too_big = APIError(413, f"the request body exceeds {limit} bytes", code="request_too_large")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_big
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_big
                chunks.append(chunk)
        except ClientDisconnect:
            raise APIError(400, "the client went away while sending the body") from None
        return parse_json(b"".join(chunks))

    def _busy(self, exc: Exception) -> APIError:
        return APIError(429, f"the server is busy: {exc}", type="rate_limit_error", code="rate_limit_exceeded",
                        headers={"Retry-After": str(self.settings.retry_after_s)})

    def _admit(self) -> None:
        """The cheap check before any preparation: a full queue or a closing engine answers now."""
        e = self.engine
        if e.closing or not e.alive:
            raise _shutting_down()
        if e.n_waiting >= e.max_queue:
            raise self._busy(QueueFull(f"{e.n_waiting} requests are already waiting (max_queue={e.max_queue})"))

    async def _submit(self, make_job, body: dict) -> tuple[CompletionJob, RequestHandle, asyncio.Queue]:
        self._admit()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def prepare() -> tuple[CompletionJob, RequestHandle]:  # in the worker pool
            job = make_job(self.engine, self.model_ids, body)
            try:
                sink = lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev)  # noqa: E731
                return job, self.engine.prepare(job, sink=sink)
            except (ValueError, TypeError) as exc:  # sampling parameters, grammar
                raise job_error(exc, body) from None

        job, handle = await self._in_pool(prepare)
        try:
            self.engine.enqueue(handle)
        except QueueFull as exc:
            raise self._busy(exc) from None
        except EngineClosed:
            raise _shutting_down() from None
        return job, handle, events

    def _next_event(self, event) -> _Step:
        if isinstance(event, EngineClosed):
            raise _shutting_down()
        if isinstance(event, BaseException):
            raise APIError(500, f"generation failed: {event}", type="server_error", code="internal_error")
        if event.finish_reason == "cancelled" and self.engine.closing:
            raise _shutting_down()
        return event

    async def _next(self, events: asyncio.Queue) -> _Step:
        return self._next_event(await events.get())

    async def _complete(self, request: Request, make_job) -> Response:
        try:
            body = await self._body(request)
            job, handle, events = await self._submit(make_job, body)
        except APIError as exc:
            return _error(exc)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) if job.stream else False
        watcher = asyncio.ensure_future(_cancel_on_disconnect(request, handle))
        steps: list[_Step] = []
        try:
            # Until the first event (the request may wait in the queue) errors are HTTP statuses.
            steps.append(await self._next(events))
            if job.stream:
                return StreamingResponse(self._sse(job, handle, events, include_usage, steps[0], watcher),
                                         media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            while steps[-1].finish_reason is None:
                steps.append(await self._next(events))
            if steps[-1].finish_reason == "cancelled":  # the client went away
                return Response(status_code=499)
        except APIError as exc:
            return _error(exc)
        finally:
            if not job.stream or not steps:
                watcher.cancel()
                if not handle.finished.is_set():
                    handle.cancel()
        return JSONResponse(job.result(steps, handle.usage))

    async def _sse(self, job: CompletionJob, handle: RequestHandle, events: asyncio.Queue, include_usage: bool,
                   first: _Step, watcher: asyncio.Future) -> AsyncIterator[bytes]:
        def frame(obj: Any) -> bytes:
            if include_usage and "usage" not in obj:
                obj = {**obj, "usage": None}
            return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"

        formatter = job.formatter()
        try:
            for chunk in formatter.start():
                yield frame(chunk)
            step: Optional[_Step] = first
            while True:
                if step is None:
                    try:
                        step = await self._next(events)
                    except APIError as exc:  # (shutting down: an OpenAI error frame, then [DONE])
                        yield frame(exc.body())
                        break
                for chunk in formatter.step(step):
                    yield frame(chunk)
                if step.finish_reason is not None:
                    if include_usage:
                        yield frame({**job.head, "object": "chat.completion.chunk" if job.chat else "text_completion",
                                     "choices": [], "usage": handle.usage.as_dict()})
                    break
                step = None
            yield b"data: [DONE]\n\n"
        finally:  # the client went away (or the server is shutting down): free the sequence
            watcher.cancel()
            if not handle.finished.is_set():
                handle.cancel()

    # -- endpoints ----------------------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        return await self._complete(request, completion_job)

    async def chat_completions(self, request: Request) -> Response:
        fmt = self.settings.reasoning_format
        return await self._complete(request, lambda *args: chat_job(*args, reasoning_format=fmt))

    async def models(self, request: Request) -> Response:
        e = self.engine
        return JSONResponse({"object": "list", "data": [{
            "id": self.settings.model_id, "object": "model", "created": self.started, "owned_by": "pybonsai",
            "meta": {"path": e.model_path, "n_parallel": e.n_parallel, "n_ctx_per_seq": e.n_ctx_per_seq,
                     "n_vocab": e.llm.n_vocab(), "n_gpu_layers": e.n_gpu_layers, "gpu_devices": self.gpu_devices}}]})

    async def health(self, request: Request) -> Response:
        if not self.engine.alive:
            return JSONResponse({"status": "error", "message": "the engine thread stopped"}, status_code=503)
        return JSONResponse({"status": "ok", "active": self.engine.n_active, "queued": self.engine.n_waiting})

    async def metrics(self, request: Request) -> Response:
        e, s = self.engine, self.engine.stats
        rows = [
            ("requests_total", "counter", "Requests accepted", s.requests),
            ("requests_rejected_total", "counter", "Requests refused because the queue was full", s.rejected),
            ("prompt_tokens_total", "counter", "Prompt tokens decoded", s.prompt_tokens),
            ("generated_tokens_total", "counter", "Tokens generated", s.generated_tokens),
            ("requests_active", "gauge", "Requests holding a sequence", e.n_active),
            ("requests_queued", "gauge", "Requests waiting for a sequence", e.n_waiting),
            ("tokens_per_second", "gauge", "Generated tokens per second over the last 10 s",
             round(s.tokens_per_second(), 3)),
            ("slots", "gauge", "Sequences (--parallel)", e.n_parallel),
            ("draft_tokens_total", "counter", "Tokens drafted for speculative decoding (--spec)", e.draft_counts[0]),
            ("draft_tokens_accepted_total", "counter", "Drafted tokens accepted", e.draft_counts[1]),
            ("prompt_tokens_reused_total", "counter", "Prompt tokens found in the KV cache (prefix reuse)",
             s.prefix_reused_tokens),
            ("prompt_cache_dropped_tokens_total", "counter", "Retained tokens dropped from the KV cache for new requests",
             s.prefix_dropped_tokens),
            ("prompt_cache_ram_saved_total", "counter", "Prefix states saved to host RAM (--cache-ram)", e.saved_counts[0]),
            ("prompt_cache_ram_restored_total", "counter", "Prefix states restored from host RAM", e.saved_counts[1]),
            ("prompt_cache_ram_bytes", "gauge", "Bytes of prefix states held in host RAM", e.saved_counts[2]),
        ]
        lines = []
        for name, kind, help_, value in rows:
            lines += [f"# HELP pybonsai_{name} {help_}", f"# TYPE pybonsai_{name} {kind}", f"pybonsai_{name} {value}"]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def slots(self, request: Request) -> Response:
        """llama-server's GET /slots (the fields that apply); ?fail_on_no_slot=1 answers 503 when
        every sequence is busy."""
        info = self.engine.slots_info()
        if request.query_params.get("fail_on_no_slot") in ("1", "true") and all(s["is_processing"] for s in info):
            return _error(APIError(503, "no slot available", type="unavailable_error", code="no_slot_available"))
        return JSONResponse(info)

    async def tokenize(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            content = body.get("content")
            if not isinstance(content, str):
                raise APIError(400, "'content' must be a string", param="content", code="invalid_type")
            add_special = body.get("add_special", True)
            if not isinstance(add_special, bool):
                raise APIError(400, "'add_special' must be a boolean", param="add_special", code="invalid_type")
            try:
                raw = content.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate (JSON allows "\ud800")
                raise APIError(400, f"'content' is not valid Unicode text: {exc}", param="content",
                               code="invalid_value") from None
            tokens = await self._in_pool(lambda: self.engine.llm.tokenize(raw, add_bos=add_special, special=True))
        except APIError as exc:
            return _error(exc)
        return JSONResponse({"tokens": tokens})

    async def detokenize(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            tokens = body.get("tokens")
            n_vocab = self.engine.llm.n_vocab()
            if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool)
                                                       and 0 <= t < n_vocab for t in tokens):
                raise APIError(400, f"'tokens' must be a list of token ids in [0, {n_vocab})", param="tokens",
                               code="invalid_value")
            raw = await self._in_pool(lambda: self.engine.llm.detokenize(tokens, special=True))
        except APIError as exc:
            return _error(exc)
        return JSONResponse({"content": raw.decode("utf-8", errors="replace")})


def _shutting_down() -> APIError:
    return APIError(503, "the server is shutting down", type="server_error", code="shutting_down")


async def _cancel_on_disconnect(request: Request, handle: RequestHandle) -> None:
    """Cancel `handle` as soon as the client disconnects (a queued request leaves the queue)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            handle.cancel()
            return


class _AuthAndErrors:
    """ASGI middleware: Bearer-token check (constant time) on every path but /health."""

    def __init__(self, app, api_key: Optional[str]):
        self.app = app
        self.expected = f"Bearer {api_key}".encode("utf-8") if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.expected is not None and scope["path"] != "/health":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                exc = APIError(401, "Invalid or missing API key (send 'Authorization: Bearer <key>')",
                               type="authentication_error", code="invalid_api_key",
                               headers={"WWW-Authenticate": "Bearer"})
                await _error(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(engine: Engine, settings: ServerSettings, *, close_engine_on_shutdown: bool = True,
               drain_timeout: float = 0.0):
    """The OpenAI-compatible ASGI app for `engine`."""
    api = _Api(engine, settings)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(APIError(404, f"no route {request.method} {request.url.path}", code="not_found"))

    async def bad_method(request: Request, exc: Exception) -> Response:
        return _error(APIError(405, f"{request.method} is not allowed on {request.url.path}",
                               code="method_not_allowed"))

    async def crashed(request: Request, exc: Exception) -> Response:
        return _error(APIError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error",
                               code="internal_error"))

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        yield
        if close_engine_on_shutdown:
            await asyncio.get_running_loop().run_in_executor(None, engine.close, drain_timeout)

    routes = [
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/completions", api.completions, methods=["POST"]),
        Route("/v1/chat/completions", api.chat_completions, methods=["POST"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/slots", api.slots, methods=["GET"]),
        Route("/tokenize", api.tokenize, methods=["POST"]),
        Route("/detokenize", api.detokenize, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: not_found, 405: bad_method, Exception: crashed})
    app.state.engine = engine
    return _AuthAndErrors(app, settings.api_key)
