"""OpenAI request bodies to engine jobs, and OpenAI's error object.

Fields mirror what Llama.create_completion / create_chat_completion accept; unknown fields are
ignored (clients send extras such as `user`), fields we cannot honour are refused by name."""
from __future__ import annotations

import json
from typing import Any, Optional

from ..completions import CompletionJob
from ..engine import Engine
from ..limits import ParamError

__all__ = ["APIError", "REASONING_FORMATS", "completion_job", "chat_job", "job_error", "parse_json"]

_NUMBER = (int, float)
# llama-server's --reasoning-format / request "reasoning_format" values that apply to Qwen3's
# <think> block: "none" leaves it in `content`; "deepseek" and "auto" (llama-server's default, the
# same as deepseek for these models) return it as `reasoning_content`, streamed deltas included.
REASONING_FORMATS = ("none", "deepseek", "auto")


class APIError(Exception):
    """An HTTP error answered with {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "the request body nests JSON too deeply", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    return body


# name -> (accepted types, description for the error message)
_COMMON = {
    "model": ((str,), "a string"),
    "temperature": (_NUMBER, "a number"),
    "top_p": (_NUMBER, "a number"),
    "top_k": ((int,), "an integer"),
    "min_p": (_NUMBER, "a number"),
    "stop": ((str, list), "a string or a list of strings"),
    "seed": ((int,), "an integer"),
    "max_tokens": ((int,), "an integer"),
    "presence_penalty": (_NUMBER, "a number"),
    "frequency_penalty": (_NUMBER, "a number"),
    "repeat_penalty": (_NUMBER, "a number"),
    "stream": ((bool,), "a boolean"),
    "n": ((int,), "an integer"),
    "stream_options": ((dict,), "an object"),
    "speculative.n_max": ((int,), "an integer"),  # llama-server's per-request draft cap (0: no drafting)
    "cache_prompt": ((bool,), "a boolean"),  # llama-server's: start from a prefix the KV cache holds (default true)
}
# Structured output (pybonsai.structured): `grammar` is llama.cpp server's GBNF field.
_CONSTRAINTS = {"logit_bias": ((dict,), "an object"), "grammar": ((str,), "a string")}
_COMPLETION = {**_COMMON, **_CONSTRAINTS, "prompt": ((str, list), "a string or a list of token ids"),
               "suffix": ((str,), "a string"), "echo": ((bool,), "a boolean"),
               "logprobs": ((int,), "an integer")}
_CHAT = {**_COMMON, **_CONSTRAINTS, "messages": ((list,), "a list of messages"),
         "response_format": ((dict,), "an object"), "tools": ((list,), "a list of tools"),
         "tool_choice": ((str, dict), "a string or an object"), "parallel_tool_calls": ((bool,), "a boolean"),
         "reasoning_format": ((str,), "a string"),
         "max_completion_tokens": ((int,), "an integer"),
         "chat_template_kwargs": ((dict,), "an object"), "logprobs": ((bool,), "a boolean"),
         "top_logprobs": ((int,), "an integer")}


def _typed(body: dict[str, Any], spec: dict[str, tuple]) -> dict[str, Any]:
    out = {}
    for name, (types, what) in spec.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) and bool not in types:  # JSON true is not a number here
            raise APIError(400, f"'{name}' must be {what}, got {json.dumps(value)}", param=name,
                           code="invalid_type")
        if not isinstance(value, types):
            raise APIError(400, f"'{name}' must be {what}, got {type(value).__name__}", param=name,
                           code="invalid_type")
        out[name] = value
    if out.get("n", 1) != 1:
        raise APIError(400, "only n=1 is supported", param="n", code="unsupported_value")
    if out.get("temperature", 0) < 0:  # OpenAI's range; the Python API allows < 0 (llama-cpp-python does)
        raise APIError(400, f"temperature must be >= 0, got {out['temperature']}", param="temperature",
                       code="invalid_value")
    return out


def _check_model(engine_ids: tuple[str, ...], fields: dict[str, Any]) -> Optional[str]:
    model = fields.pop("model", None)
    if model is not None and model not in engine_ids:
        raise APIError(404, f"The model '{model}' does not exist; this server serves {engine_ids[0]!r}",
                       type="not_found_error", param="model", code="model_not_found")
    return engine_ids[0]


def _check_max_tokens(engine: Engine, job: CompletionJob, max_tokens: Optional[int]) -> None:
    if max_tokens is None:
        return
    if max_tokens < 1:
        raise APIError(400, f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens",
                       code="invalid_value")
    n_prompt, limit = len(job.prompt_tokens), engine.n_ctx_per_seq
    if n_prompt + max_tokens > limit:
        raise APIError(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                       f"{n_prompt + max_tokens} tokens ({n_prompt} in the prompt, {max_tokens} in the "
                       "completion). Please reduce the prompt or max_tokens.", param="max_tokens",
                       code="context_length_exceeded")


# Fields whose name starts the message of the ValueError a bad value raises (pybonsai.sampling,
# pybonsai.logits, ...): the 400 names them as `param`.
_MESSAGE_PARAMS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "seed", "repeat_penalty",
                   "frequency_penalty", "presence_penalty", "mirostat", "logit_bias", "stop", "max_tokens",
                   "logprobs", "top_logprobs", "response_format", "reasoning_format", "tool_choice", "tools",
                   "suffix", "prompt", "messages")


def job_error(exc: Exception, body: dict[str, Any], param: Optional[str] = None) -> APIError:
    """A job builder's or the engine's ValueError/TypeError as a 400 naming the field."""
    message = str(exc)
    if isinstance(exc, ParamError):
        return APIError(400, message, param=exc.param, code=exc.code)
    if "exceed context window" in message:
        return APIError(400, message, param=param or "prompt", code="context_length_exceeded")
    if isinstance(exc, UnicodeError):
        where = "prompt" if "prompt" in body else "messages"
        return APIError(400, f"'{where}' is not valid Unicode text: {message}", param=where, code="invalid_value")
    named = next((name for name in _MESSAGE_PARAMS if message.startswith(name)), None)
    if named is None and "grammar" in message:  # a GBNF parse error: from whichever field made it
        named = next((name for name in ("grammar", "response_format", "tools") if body.get(name)), "grammar")
    if named == "mirostat":
        named = "mirostat_mode"
    return APIError(400, message, param=named or param, code="invalid_value")


def _draft_max(fields: dict[str, Any]) -> Optional[int]:
    n_max = fields.pop("speculative.n_max", None)
    if n_max is not None and n_max < 0:
        raise APIError(400, f"'speculative.n_max' must be >= 0, got {n_max}", param="speculative.n_max",
                       code="invalid_value")
    return n_max


def _make(build, param: str, body: dict[str, Any]):
    """Run a job builder; its ValueError/TypeError become a 400 naming the cause."""
    try:
        return build()
    except (ValueError, TypeError) as exc:
        raise job_error(exc, body, param) from None


def completion_job(engine: Engine, model_ids: tuple[str, ...], body: dict[str, Any]) -> CompletionJob:
    fields = _typed(body, _COMPLETION)
    if "prompt" not in fields:
        raise APIError(400, "'prompt' is required", param="prompt", code="missing_required_parameter")
    prompt = fields.pop("prompt")
    if isinstance(prompt, list):
        if len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]  # a batch of one prompt
        if isinstance(prompt, list) and not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            raise APIError(400, "'prompt' must be a string, a list of token ids, or a list of one of those",
                           param="prompt", code="invalid_type")
        if isinstance(prompt, list) and any(not 0 <= t < engine.llm.n_vocab() for t in prompt):
            raise APIError(400, f"token ids must be in [0, {engine.llm.n_vocab()})", param="prompt",
                           code="invalid_value")
    model = _check_model(model_ids, fields)
    fields.pop("n", None)
    fields.pop("stream_options", None)
    max_tokens = fields.get("max_tokens")
    draft_max = _draft_max(fields)
    cache_prompt = fields.pop("cache_prompt", True)
    job = _make(lambda: engine.completion_job(prompt, model=model, **fields), "prompt", body)
    job.draft_max = draft_max
    job.cache_prompt = cache_prompt
    _check_max_tokens(engine, job, max_tokens)
    return job


def _reasoning_format(fields: dict[str, Any], default: str) -> str:
    """The request's reasoning_format (else the server's) as create_chat_completion's."""
    value = fields.pop("reasoning_format", None) or default
    if value not in REASONING_FORMATS:
        raise APIError(400, f"reasoning_format must be one of {', '.join(REASONING_FORMATS)}, got {value!r}",
                       param="reasoning_format", code="invalid_value")
    return "none" if value == "none" else "deepseek"


def chat_job(engine: Engine, model_ids: tuple[str, ...], body: dict[str, Any],
             reasoning_format: str = "auto") -> CompletionJob:
    """`reasoning_format`: the server's default (the request's field overrides it)."""
    fields = _typed(body, _CHAT)
    fields["reasoning_format"] = _reasoning_format(fields, reasoning_format)
    for name in ("functions", "function_call"):  # OpenAI's deprecated forms of tools / tool_choice
        if body.get(name):
            raise APIError(400, f"'{name}' is not supported: use 'tools' / 'tool_choice'", param=name,
                           code="unsupported_parameter")
    if "top_logprobs" in fields and not fields.get("logprobs"):
        raise APIError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs", code="invalid_value")
    if "messages" not in fields:
        raise APIError(400, "'messages' is required", param="messages", code="missing_required_parameter")
    messages = fields.pop("messages")
    if not messages or not all(isinstance(m, dict) for m in messages):
        raise APIError(400, "'messages' must be a non-empty list of objects", param="messages",
                       code="invalid_type")
    model = _check_model(model_ids, fields)
    fields.pop("n", None)
    fields.pop("stream_options", None)
    if "max_completion_tokens" in fields:
        fields["max_tokens"] = fields.pop("max_completion_tokens")
    max_tokens = fields.get("max_tokens")
    draft_max = _draft_max(fields)
    cache_prompt = fields.pop("cache_prompt", True)
    job = _make(lambda: engine.chat_completion_job(messages, model=model, **fields), "messages", body)
    job.draft_max = draft_max
    job.cache_prompt = cache_prompt
    _check_max_tokens(engine, job, max_tokens)
    return job
