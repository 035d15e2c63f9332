"""`pybonsai serve` / `python -m pybonsai.server`: options, model, engine, uvicorn."""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

from .. import kv_cache
from ..limits import RequestLimits

__all__ = ["build_parser", "main"]

_LIMIT_HELP = {
    "logprobs": "most alternatives per token for /v1/completions 'logprobs'",
    "top_logprobs": "most alternatives per token for chat 'top_logprobs'",
    "stop": "most 'stop' strings per request",
    "stop_chars": "most characters in one stop string",
    "grammar_chars": "most characters of a request's grammar (given, or made from response_format / tools)",
    "grammar_rules": "most rules in a request's grammar",
    "grammar_alternatives": "most '|' alternatives in a request's grammar",
    "enum_values": "most enum/const values in a request's JSON schemas",
}


def build_parser(prog: str = "pybonsai serve") -> argparse.ArgumentParser:
    from ..cli import _model_options

    p = argparse.ArgumentParser(prog=prog, description="Serve a model over an OpenAI-compatible HTTP API "
                                "(/v1/completions, /v1/chat/completions, /v1/models, /health, /metrics, "
                                "/tokenize, /detokenize).")
    _model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--parallel", "-np", type=int, default=4,
                   help="sequences decoded together; more requests wait in the queue (default: 4)")
    p.add_argument("--n-ctx", "--ctx", dest="n_ctx", type=int, default=None,
                   help="KV cache size in tokens, shared equally by the sequences (default: 2048 per sequence)")
    p.add_argument("--batch", type=int, default=512, help="most tokens in one decode step (default: 512)")
    p.add_argument("--prefill-chunk", type=int, default=256,
                   help="most prompt tokens decoded in one step, so long prompts do not stall others (default: 256)")
    p.add_argument("--threads", type=int, help="CPU threads (default: every usable core)")
    p.add_argument("--n-gpu-layers", "-ngl", "--gpu-layers", dest="n_gpu_layers", type=int, default=0,
                   help="layers to offload to a GPU (pip install 'pybonsai[cuda]' or '[vulkan]'; -1: all; default 0). "
                        "Without a usable GPU the model runs on the CPU, with one warning in the log")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests that may wait for a sequence; beyond that: 429 with Retry-After (default: 64)")
    p.add_argument("--api-key", default=os.environ.get("PYBONSAI_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on every endpoint but /health "
                        "(default: $PYBONSAI_API_KEY, else none)")
    p.add_argument("--alias", help="the model id clients use (default: the file name without .gguf)")
    p.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024, help="request body limit (default: 4 MiB)")
    p.add_argument("--drain-timeout", type=float, default=10.0,
                   help="on Ctrl-C/SIGTERM, seconds to let running requests finish; then streams end with an "
                        "error frame and [DONE], other requests get a 503 (default: 10)")
    limits = p.add_argument_group("request limits", "what one request may ask (checked before any work; "
                                  "over a limit: 400 naming the parameter)")
    for f in dataclasses.fields(RequestLimits):
        limits.add_argument(f"--max-{f.name.replace('_', '-')}", dest=f"limit_{f.name}", type=int,
                            default=f.default, metavar="N", help=f"{_LIMIT_HELP[f.name]} (default: {f.default})")
    spec = p.add_argument_group("speculative decoding", "drafted tokens verified in one step; each request's output "
                                "is what it would be without (a request may send speculative.n_max, 0 = off)")
    spec.add_argument("--spec", choices=("none", "ngram"), default="none",
                      help="drafter: ngram = prompt lookup (default: none; --model-draft drafts with a model)")
    spec.add_argument("--model-draft", "-md", metavar="MODEL",
                      help="a draft model sharing the model's vocabulary (a .gguf file, catalog alias or Hub "
                           "repository), its greedy drafts for all sequences decoded together")
    spec.add_argument("--draft-max", type=int, default=8, help="most tokens drafted per step (default: 8)")
    spec.add_argument("--draft-min", type=int, default=0, help="drop a draft shorter than this (default: 0)")
    spec.add_argument("--draft-p-min", type=float, default=0.0,
                      help="a draft model's draft stops where its top probability is lower (default: 0.0)")
    p.add_argument("--seed", type=int, default=None, help="default sampling seed (default: random per request)")
    p.add_argument("--chat-template", help="a Jinja chat template file to use instead of the GGUF's")
    p.add_argument("--reasoning-format", choices=("none", "deepseek", "auto"), default="auto",
                   help="where a chat reply's <think> block goes: deepseek or auto = message.reasoning_content "
                        "(and delta.reasoning_content), none = left in content; a request's 'reasoning_format' "
                        "overrides it (default: auto)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument("--verbose", action="store_true", help="show llama.cpp's log")
    p.add_argument("--cache-ram", "-cram", type=int, default=8192, metavar="MiB",
                   help="host RAM for the states of prompt prefixes dropped from the KV cache, restored when a "
                        "later prompt starts with them (default: 8192, as llama-server; -1: no limit, 0: off)")
    # "default": the Engine's (on for a CPU model): the same text alone or batched
    kv_cache.add_cli_options(p, flash_attn="default")
    fa = next(a for a in p._actions if "--flash-attn" in a.option_strings)
    fa.help = ("flash attention: on, off or auto (default: on, with pybonsai's batch-invariant CPU kernel: "
               "a request's text does not depend on the others in the batch or on a reused prefix)")
    return p


def _kv_kwargs(args) -> dict:
    kwargs = kv_cache.cli_kwargs(args)
    if kwargs["flash_attn"] == "default":
        kwargs["flash_attn"] = None
    return kwargs


def _limits(args) -> RequestLimits:
    return RequestLimits(**{f.name: getattr(args, f"limit_{f.name}") for f in dataclasses.fields(RequestLimits)})


def _draining_server(uvicorn, config, engine, drain_timeout: float):
    """A uvicorn.Server that, at the first Ctrl-C/SIGTERM, closes the engine with the drain
    timeout in a thread: running requests may finish until then, then streams end with an error
    frame and [DONE] and the other requests with a JSON 503 (see server.app)."""
    class Server(uvicorn.Server):
        drain: Optional[threading.Thread] = None

        def handle_exit(self, sig, frame):
            if self.drain is None:
                self.drain = threading.Thread(target=engine.close, args=(drain_timeout,), name="pybonsai-drain",
                                              daemon=True)
                self.drain.start()
            super().handle_exit(sig, frame)

    return Server(config)


def _missing_extra(exc: ImportError) -> int:
    print(f"pybonsai serve: error: {exc.name or exc} is not installed; run: pip install 'pybonsai[server]'",
          file=sys.stderr)
    return 1


def main(argv: Optional[Sequence[str]] = None, prog: str = "pybonsai serve") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        import uvicorn

        from .app import ServerSettings, create_app
    except ImportError as exc:
        return _missing_extra(exc)
    from .. import catalog
    from ..engine import Engine
    from ..llama_speculative import GGUFDraftModel
    from ..sampling import DEFAULT_SEED

    if args.model_draft and args.spec != "none":
        print(f"pybonsai serve: error: --spec {args.spec} and --model-draft: choose one drafter", file=sys.stderr)
        return 2
    try:
        drafter = None if args.spec == "none" else args.spec
        if args.model_draft:
            drafter = GGUFDraftModel(catalog.resolve_model(args.model_draft, local_files_only=args.offline),
                                     num_pred_tokens=max(args.draft_max, 1))
        path = catalog.resolve_model(args.model, filename=args.filename, revision=args.revision,
                                     local_files_only=args.offline)
        template = Path(args.chat_template).read_text("utf-8") if args.chat_template else None
        engine = Engine(str(path), n_parallel=args.parallel, n_ctx=args.n_ctx, n_batch=args.batch,
                        n_threads=args.threads, max_queue=args.max_queue, prefill_chunk=args.prefill_chunk,
                        seed=DEFAULT_SEED if args.seed is None else args.seed, chat_template=template,
                        n_gpu_layers=args.n_gpu_layers,
                        verbose=args.verbose, limits=_limits(args), **_kv_kwargs(args),
                        draft_model=drafter, draft_max=args.draft_max, draft_min=args.draft_min,
                        draft_p_min=args.draft_p_min, cache_ram=args.cache_ram)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"pybonsai serve: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    # The engine thread's Python part of a step waits for the GIL while a worker renders a long
    # chat template (pure Python): hand the GIL over more often than every 5 ms (the default).
    sys.setswitchinterval(0.0005)
    model_id = args.alias or Path(path).name.removesuffix(".gguf")
    settings = ServerSettings(model_id=model_id, api_key=args.api_key or None, max_body_bytes=args.max_body_bytes,
                              reasoning_format=args.reasoning_format)
    app = create_app(engine, settings)
    # uvicorn cuts the connections left after timeout_graceful_shutdown: the engine, closed with
    # the drain timeout at the signal, ends every request a little before that.
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, lifespan="on",
                            timeout_graceful_shutdown=max(args.drain_timeout, 0.0) + 5.0, access_log=False)
    server = _draining_server(uvicorn, config, engine, max(args.drain_timeout, 0.0))
    # uvicorn re-raises the signal that stopped it once it is done; these handlers take it, so
    # that a drained shutdown exits with status 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    print(f"pybonsai serve: {model_id} ({engine.n_parallel} sequences x {engine.n_ctx_per_seq} tokens) on "
          f"http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    try:
        server.run()
    finally:
        engine.close()
    return 0 if server.started or server.should_exit else 1
