"""The `pybonsai` command (also `python -m pybonsai`).

    pybonsai run "The capital of France is" -m bonsai-8b -n 32
    pybonsai chat -m ./Bonsai-8B-Q1_0.gguf
    pybonsai info bonsai-1.7b
    pybonsai download prism-ml/Bonsai-4B-gguf --filename '*Q1_0.gguf'
    pybonsai synth /tmp/tiny.gguf --shape tiny
    pybonsai serve -m bonsai-8b --parallel 4 --port 8000

Models (-m) are a local .gguf path, a catalog alias (see `pybonsai download --help`) or an
"owner/name" Hugging Face repository. Errors are one line on stderr and exit status 1.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from . import __version__, catalog, kv_cache, model_info
from .gguf_file import GGUFSummary, TensorInfo, check_gguf_path, scan_gguf
from .hub import HubError, split_parts

__all__ = ["main", "build_parser"]


def _all_tensors(summary: GGUFSummary) -> list[TensorInfo]:
    """Tensors of the model, from every part of a split GGUF."""
    count = int(summary.metadata.get("split.count", 0) or 0)
    if count <= 1:
        return summary.tensors
    parts = split_parts(summary.path.name)
    if len(parts) != count:
        raise ValueError(f"{summary.path} is part of a {count}-part split GGUF but is not named "
                         "NAME-00001-of-0000N.gguf")
    tensors = list(summary.tensors)
    for part in parts[1:]:
        part_path = summary.path.with_name(part)
        if not part_path.is_file():
            raise FileNotFoundError(f"split part not found: {part_path}")
        tensors += scan_gguf(part_path).tensors
    return tensors


# --- commands ------------------------------------------------------------------------------

def _hub_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"filename": getattr(args, "filename", None), "revision": getattr(args, "revision", None),
            "local_files_only": getattr(args, "offline", False)}


def _model_path(args: argparse.Namespace) -> Path:
    return catalog.resolve_model(args.model, **_hub_kwargs(args))


def _load(args: argparse.Namespace):
    from .llama import Llama

    return Llama(_model_path(args), n_ctx=args.ctx, n_threads=args.threads, verbose=args.verbose,
                 use_mmap=not args.no_mmap, use_mlock=args.mlock, **kv_cache.cli_kwargs(args))


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": args.seed}
    if args.temp is not None:
        out["temperature"] = args.temp
    return out


def cmd_run(args: argparse.Namespace) -> int:
    llm = _load(args)
    out = sys.stdout
    for chunk in llm.create_completion(args.prompt, max_tokens=args.n, stream=True, **_sampling(args)):
        out.write(chunk["choices"][0]["text"])
        out.flush()
    out.write("\n")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat_repl import chat_loop

    llm = _load(args)
    thinking = {"on": True, "off": False, "auto": None}[args.think]
    return chat_loop(llm, enable_thinking=thinking, max_tokens=args.n, system=args.system,
                     sampling=_sampling(args), model_name=args.model)


def cmd_serve(args: argparse.Namespace) -> int:
    from .server.serve import main as serve_main

    return serve_main(args.serve_args)


def _fmt_count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def cmd_info(args: argparse.Namespace) -> int:
    path = check_gguf_path(_model_path(args))
    summary = scan_gguf(path)
    meta = summary.metadata
    tensors = _all_tensors(summary)
    arch = meta.get("general.architecture", "unknown")
    n_params = sum(t.n_elements for t in tensors)
    rows = model_info.type_rows(tensors)
    total_bytes = sum(r.n_bytes for r in rows)
    unknown = [t.name for t in tensors if t.n_bytes is None]
    vision = model_info.vision_markers(meta, (t.name for t in tensors))
    lines = [
        f"file:             {path} ({path.stat().st_size / 1e6:.1f} MB"
        + (f", split in {meta['split.count']} parts" if int(meta.get("split.count", 0) or 0) > 1 else "") + ")",
        f"name:             {meta.get('general.name', '-')}",
        f"architecture:     {arch}",
        f"layers:           {model_info.describe_layers(meta)}",
        f"parameters:       {n_params:,} ({_fmt_count(n_params)})",
        f"tensors:          {len(tensors)}",
        f"bits per weight:  {8 * total_bytes / n_params:.4f}" if n_params and not unknown else
        "bits per weight:  unknown (tensor types unknown to the gguf package)",
        f"context length:   {meta.get(f'{arch}.context_length', 'unknown')}",
        f"chat template:    {'yes' if 'tokenizer.chat_template' in meta else 'no'}",
    ]
    rotation = model_info.describe_rotation(meta, summary.small_arrays)
    if rotation:
        lines.append(f"rotation:         {rotation}")
    if vision:
        lines.append(f"vision:           a vision-language model ({'; '.join(vision)}): {model_info.VISION_NOTE}")
    elif arch == "qwen35":
        lines.append("vision:           none in this file (Qwen3.5 models keep vision in a separate mmproj "
                     "file, which pybonsai does not run)")
    lines += ["tensor types:",
              f"  {'type':<8} {'bits/w':>7} {'tensors':>8} {'parameters':>14} {'bytes':>14} {'share':>7}"]
    for r in rows:
        share = f"{100 * r.n_bytes / total_bytes:6.2f}%" if total_bytes else "      -"
        bpw = f"{r.bits_per_weight:7.3f}" if r.bits_per_weight is not None else "      ?"
        lines.append(f"  {r.name:<8} {bpw} {r.tensors:>8} {r.parameters:>14,} {r.n_bytes:>14,} {share}")
    print("\n".join(lines))
    print("devices:")
    from . import backends

    for dev in backends.devices():
        mem = f", {dev['memory_total'] / 2**30:.1f} GiB" if dev.get("memory_total") else ""
        print(f"  {dev.get('name', '?')}: {dev.get('description', '')} ({dev.get('type', '?')}{mem})")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    path = catalog.resolve_hub_model(args.model, **_hub_kwargs(args))
    print(path)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from . import synth

    argv = [args.out, "--shape", args.shape, "--seed", str(args.seed)] + (["--force"] if args.force else [])
    return synth.main(argv)


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.main(args.bench_args)


# --- parser --------------------------------------------------------------------------------

def _model_options(p: argparse.ArgumentParser, positional: bool = False) -> None:
    help_ = (f"a local .gguf file, a catalog alias ({', '.join(catalog.MODELS)}) or a Hugging Face "
             f"repository 'owner/name' (default: {catalog.DEFAULT_MODEL})")
    if positional:
        p.add_argument("model", nargs="?", default=catalog.DEFAULT_MODEL, help=help_)
    else:
        p.add_argument("-m", "--model", default=catalog.DEFAULT_MODEL, help=help_)
    p.add_argument("--filename", help="file (or glob) to take from a Hub repository")
    p.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    p.add_argument("--offline", action="store_true",
                   help="use the Hugging Face cache only (same as HF_HUB_OFFLINE=1)")


def _runtime_options(p: argparse.ArgumentParser, n_default: Optional[int]) -> None:
    p.add_argument("-n", "--max-tokens", dest="n", type=int, default=n_default,
                   help=f"tokens to generate (default: {n_default or 'until the model stops'})")
    p.add_argument("--temp", type=float, help="sampling temperature (0 = greedy)")
    p.add_argument("--seed", type=int, help="sampling seed (default: random)")
    p.add_argument("--threads", type=int, help="CPU threads (default: every usable core)")
    p.add_argument("--ctx", type=int, default=4096, help="context size in tokens (default: 4096)")
    p.add_argument("--verbose", action="store_true", help="show llama.cpp's log")
    kv_cache.add_cli_options(p)
    p.add_argument("--no-mmap", action="store_true", help="read the weights instead of mapping the file")
    p.add_argument("--mlock", action="store_true", help="keep the weights locked in RAM")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pybonsai", description="Run 1-bit and ternary Bonsai LLMs (GGUF Q1_0, Q2_0).",
                                     epilog="known models:\n" + catalog.describe() + "\n(sizes are approximate)",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pybonsai {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="complete a prompt, streaming to stdout")
    p.add_argument("prompt")
    _model_options(p)
    _runtime_options(p, 128)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("chat", help="interactive chat with the model's chat template")
    _model_options(p)
    _runtime_options(p, None)
    p.add_argument("--think", choices=("on", "off", "auto"), default="auto",
                   help="Qwen3 thinking at start (auto: the template's default); /think, /no_think toggle")
    p.add_argument("--system", help="system prompt")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("info", help="architecture, parameters, tensor types, bits per weight, devices")
    _model_options(p, positional=True)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("download", help="fetch a model into the Hugging Face cache and print its path",
                       epilog="known models:\n" + catalog.describe() + "\n(sizes are approximate)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_options(p, positional=True)
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("synth", help="write a synthetic Bonsai GGUF (random weights, for tests)")
    p.add_argument("out")
    p.add_argument("--shape", default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("serve", add_help=False, help="OpenAI-compatible HTTP server (see serve --help; "
                       "needs pybonsai[server])")
    p.add_argument("serve_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("bench", add_help=False, help="prompt/generation speed like llama-bench (see bench --help)")
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")  # model text must never crash on a narrow console
        except (AttributeError, ValueError):
            pass
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own parser, options included (argparse would eat --help)
        return cmd_bench(argparse.Namespace(bench_args=argv[1:]))
    if argv[:1] == ["serve"]:  # likewise
        return cmd_serve(argparse.Namespace(serve_args=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pybonsai run ... | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except (HubError, OSError, ValueError, RuntimeError, ImportError) as exc:
        print(f"pybonsai: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
