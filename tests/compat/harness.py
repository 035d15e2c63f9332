"""Run llama-cpp-python-style snippets against pybonsai with only the import changed, and check
results against llama-cpp-python's type definitions (llama_types: Completion, CompletionChunk,
ChatCompletion, ChatCompletionChunk, CreateEmbeddingResponse).

A snippet is written exactly as for llama-cpp-python (`from llama_cpp import ...`, `import
llama_cpp`); the runner rewrites those imports to pybonsai and gives it MODEL_PATH and the check_*
helpers below. `python tests/compat/harness.py MODEL.gguf` prints "N of M snippets run unchanged"
and the reason for every other one."""
from __future__ import annotations

import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Optional

SNIPPETS = Path(__file__).resolve().parent / "snippets"


def rewrite_imports(source: str) -> str:
    """The one change: llama_cpp -> pybonsai."""
    source = re.sub(r"^(\s*)from llama_cpp(\.[\w.]+)? import ", r"\1from pybonsai\2 import ", source, flags=re.M)
    return re.sub(r"^(\s*)import llama_cpp\s*$", r"\1import pybonsai as llama_cpp", source, flags=re.M)


def _is(value: Any, *types: type) -> bool:
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def _check_logprobs(lp: Optional[dict]) -> None:
    if lp is None:
        return
    assert set(lp) == {"text_offset", "token_logprobs", "tokens", "top_logprobs"}, lp.keys()
    n = len(lp["tokens"])
    assert all(len(lp[k]) == n for k in lp)
    assert all(_is(t, str) for t in lp["tokens"]) and all(_is(o, int) for o in lp["text_offset"])
    assert all(v is None or _is(v, float) for v in lp["token_logprobs"])
    assert all(v is None or (isinstance(v, dict) and all(_is(x, float) for x in v.values())) for v in lp["top_logprobs"])


def _check_head(out: dict, obj: str) -> None:
    assert out["object"] == obj, out.get("object")
    assert _is(out["id"], str) and _is(out["created"], int) and _is(out["model"], str)
    assert isinstance(out["choices"], list) and len(out["choices"]) == 1


def _check_usage(usage: dict) -> None:
    assert all(_is(usage[k], int) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def check_completion(out: dict) -> None:
    """llama_types.CreateCompletionResponse."""
    _check_head(out, "text_completion")
    choice = out["choices"][0]
    assert _is(choice["text"], str) and choice["index"] == 0
    assert choice["finish_reason"] in ("stop", "length")
    _check_logprobs(choice["logprobs"])
    _check_usage(out["usage"])


def check_completion_chunk(out: dict) -> None:
    """llama_types.CreateCompletionStreamResponse."""
    _check_head(out, "text_completion")
    choice = out["choices"][0]
    assert _is(choice["text"], str) and choice["finish_reason"] in (None, "stop", "length")
    _check_logprobs(choice["logprobs"])


def check_chat_completion(out: dict) -> None:
    """llama_types.CreateChatCompletionResponse."""
    _check_head(out, "chat.completion")
    choice = out["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] is None or _is(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length", "tool_calls", "function_call")
    assert choice["logprobs"] is None or isinstance(choice["logprobs"]["content"], list)
    _check_usage(out["usage"])


def check_chat_chunk(out: dict) -> None:
    """llama_types.CreateChatCompletionStreamResponse."""
    _check_head(out, "chat.completion.chunk")
    choice = out["choices"][0]
    assert isinstance(choice["delta"], dict) and choice["finish_reason"] in (None, "stop", "length", "tool_calls")


def check_embedding_response(out: dict, n: int) -> None:
    """llama_types.CreateEmbeddingResponse."""
    assert out["object"] == "list" and _is(out["model"], str) and len(out["data"]) == n
    for i, item in enumerate(out["data"]):
        assert item["object"] == "embedding" and item["index"] == i
        vec = item["embedding"]
        assert isinstance(vec, list) and vec and (all(_is(x, float) for x in vec)
                                                  or all(isinstance(r, list) for r in vec))
    assert _is(out["usage"]["prompt_tokens"], int) and out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"]


HELPERS = {name: obj for name, obj in globals().items() if name.startswith("check_")}


def run_snippet(path: Path, model_path: str, caught: Optional[list] = None) -> list[warnings.WarningMessage]:
    """Execute one snippet (imports rewritten); return the warnings it raised (also collected
    into `caught` as they come, so that they survive an exception, which propagates)."""
    code = compile(rewrite_imports(path.read_text("utf-8")), str(path), "exec")
    namespace = {"__name__": "__snippet__", "MODEL_PATH": model_path, "print": lambda *a, **k: None, **HELPERS}
    caught = [] if caught is None else caught
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        try:
            exec(code, namespace)
        finally:
            caught.extend(recorded)
    return caught


def pending_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """Warnings saying an argument's feature has not landed (so the snippet did not do its job)."""
    return [str(w.message) for w in caught if "not implemented yet" in str(w.message)]


def classify(path: Path, model_path: str) -> tuple[bool, str]:
    """(runs unchanged?, note)."""
    caught: list = []
    try:
        run_snippet(path, model_path, caught)
    except BaseException as exc:  # noqa: BLE001 - a report of every failure is the point
        last = traceback.extract_tb(exc.__traceback__)[-1]
        pending = pending_warnings(caught)
        return False, ("accepted but not applied: " + "; ".join(pending) + "; then " if pending else "") + \
            f"{type(exc).__name__}: {exc} (line {last.lineno})"
    pending = pending_warnings(caught)
    if pending:
        return False, "accepted but not applied: " + "; ".join(pending)
    notes = sorted({str(w.message).split(":")[0] for w in caught})
    return True, ("warned: " + ", ".join(notes)) if notes else ""


def main(argv: list[str]) -> int:
    model_path = argv[1]
    results = {p.stem: classify(p, model_path) for p in sorted(SNIPPETS.glob("*.py"))}
    ok = [name for name, (runs, _) in results.items() if runs]
    print(f"{len(ok)} of {len(results)} snippets run unchanged")
    for name, (runs, note) in results.items():
        print(f"  {'ok  ' if runs else 'FAIL'} {name}{': ' + note if note else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
