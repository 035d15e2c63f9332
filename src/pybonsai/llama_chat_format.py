"""llama-cpp-python's `llama_chat_format` API (`from llama_cpp.llama_chat_format import ...`):
chat formatters, the handler registry, the named text formats (pybonsai.chat_formats), and
handlers made from a formatter that run `llama.create_completion` and reshape its result as a
chat completion.

Templates render in pybonsai's sandboxed, bounded jinja2 environment (pybonsai.chat). The image
chat handlers (llava, moondream, mtmd, ...) and the functionary and chatml-function-calling
handlers exist under their names but raise NotImplementedError: pybonsai runs text-only models,
and those prompt formats are not implemented. Importing this module does not load the compiled
core; a handler loads what it needs when it runs."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Union

from . import llama_types
from .chat import ChatTemplate, _strftime_now, _tojson
from .chat_formats import (
    CHAT_FORMATS, CHATML_BOS_TOKEN, CHATML_CHAT_TEMPLATE, CHATML_EOS_TOKEN, LLAMA3_INSTRUCT_CHAT_TEMPLATE,
    MISTRAL_INSTRUCT_BOS_TOKEN, MISTRAL_INSTRUCT_CHAT_TEMPLATE, MISTRAL_INSTRUCT_EOS_TOKEN,
    MIXTRAL_INSTRUCT_CHAT_TEMPLATE, ChatFormatterResponse, format_alpaca, format_baichuan, format_baichuan2,
    format_chatglm3, format_chatml, format_gemma, format_intel, format_llama2, format_llama3,
    format_mistral_instruct, format_mistrallite, format_oasst_llama, format_open_orca, format_openbuddy,
    format_openchat, format_phind, format_pygmalion, format_qwen, format_redpajama_incite, format_saiga,
    format_snoozy, format_vicuna, format_zephyr,
)

__all__ = [
    "CHATML_CHAT_TEMPLATE", "CHATML_BOS_TOKEN", "CHATML_EOS_TOKEN", "MISTRAL_INSTRUCT_CHAT_TEMPLATE",
    "MISTRAL_INSTRUCT_BOS_TOKEN", "MISTRAL_INSTRUCT_EOS_TOKEN", "MIXTRAL_INSTRUCT_CHAT_TEMPLATE",
    "LLAMA3_INSTRUCT_CHAT_TEMPLATE", "LlamaChatCompletionHandler", "LlamaChatCompletionHandlerNotFoundException",
    "LlamaChatCompletionHandlerRegistry", "get_chat_completion_handler", "register_chat_completion_handler",
    "ChatFormatterResponse", "ChatFormatter", "Jinja2ChatFormatter", "chat_formatter_to_chat_completion_handler",
    "hf_autotokenizer_to_chat_formatter", "hf_autotokenizer_to_chat_completion_handler",
    "hf_tokenizer_config_to_chat_formatter", "hf_tokenizer_config_to_chat_completion_handler",
    "guess_chat_format_from_gguf_metadata", "register_chat_format",
    "format_llama2", "format_llama3", "format_alpaca", "format_qwen", "format", "format_vicuna",
    "format_oasst_llama", "format_baichuan2", "format_baichuan", "format_openbuddy", "format_redpajama_incite",
    "format_snoozy", "format_phind", "format_intel", "format_open_orca", "format_mistrallite", "format_zephyr",
    "format_pygmalion", "format_chatml", "format_mistral_instruct", "format_chatglm3", "format_openchat",
    "format_saiga", "format_gemma",
    "functionary_chat_handler", "functionary_v1_v2_chat_handler", "chatml_function_calling",
    "Llava15ChatHandler", "MTMDChatHandler", "Gemma4ChatHandler", "ObsidianChatHandler", "MoondreamChatHandler",
    "Llava16ChatHandler", "NanoLlavaChatHandler", "Llama3VisionAlphaChatHandler", "Llama3VisionAlpha",
    "MiniCPMv26ChatHandler", "Qwen25VLChatHandler",
]

Messages = List[llama_types.ChatCompletionRequestMessage]
Stop = Optional[Union[str, List[str]]]


# -- protocols ---------------------------------------------------------------------------------

class LlamaChatCompletionHandler(Protocol):
    """A callable that answers create_chat_completion: a chat completion dict, or (stream=True)
    an iterator of chat completion chunks. It receives the Llama as `llama=` and the request's
    arguments as keywords."""

    def __call__(self, *, llama: Any, messages: Messages,
                 functions: Optional[List[llama_types.ChatCompletionFunction]] = None,
                 function_call: Optional[llama_types.ChatCompletionRequestFunctionCall] = None,
                 tools: Optional[List[llama_types.ChatCompletionTool]] = None,
                 tool_choice: Optional[llama_types.ChatCompletionToolChoiceOption] = None,
                 temperature: float = 0.2, top_p: float = 0.95, top_k: int = 40, stream: bool = False,
                 stop: Stop = None, seed: Optional[int] = None,
                 response_format: Optional[llama_types.ChatCompletionRequestResponseFormat] = None,
                 max_tokens: Optional[int] = None, presence_penalty: float = 0.0,
                 frequency_penalty: float = 0.0, repeat_penalty: float = 1.1, model: Optional[str] = None,
                 logit_bias: Optional[Dict[str, float]] = None, min_p: float = 0.05, typical_p: float = 1.0,
                 tfs_z: float = 1.0, mirostat_mode: int = 0, mirostat_tau: float = 5.0,
                 mirostat_eta: float = 0.1, logits_processor: Any = None, grammar: Any = None,
                 logprobs: Optional[bool] = None, top_logprobs: Optional[int] = None, **kwargs: Any,
                 ) -> Union[llama_types.CreateChatCompletionResponse,
                            Iterator[llama_types.CreateChatCompletionStreamResponse]]: ...


class ChatFormatter(Protocol):
    """A callable that turns messages (keyword `messages=`) into a ChatFormatterResponse."""

    def __call__(self, *, messages: Messages, **kwargs: Any) -> ChatFormatterResponse: ...


# -- the registry ------------------------------------------------------------------------------

class LlamaChatCompletionHandlerNotFoundException(Exception):
    """No chat handler is registered under the name asked for."""


class LlamaChatCompletionHandlerRegistry:
    """The process-wide map from chat format names to handlers (every instance is the same one)."""

    _instance: Optional["LlamaChatCompletionHandlerRegistry"] = None
    _chat_handlers: Dict[str, LlamaChatCompletionHandler] = {}

    def __new__(cls) -> "LlamaChatCompletionHandlerRegistry":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def register_chat_completion_handler(self, name: str, chat_handler: LlamaChatCompletionHandler,
                                         overwrite: bool = False) -> None:
        if name in self._chat_handlers and not overwrite:
            raise ValueError(f"a chat handler named {name!r} is already registered; pass overwrite=True "
                             "to replace it")
        self._chat_handlers[name] = chat_handler

    def unregister_chat_handler(self, name: str) -> None:
        if self._chat_handlers.pop(name, None) is None:
            raise ValueError(f"no chat handler is registered under the name {name!r}")

    def get_chat_completion_handler_by_name(self, name: str) -> LlamaChatCompletionHandler:
        try:
            return self._chat_handlers[name]
        except KeyError:
            raise LlamaChatCompletionHandlerNotFoundException(
                f"Invalid chat handler: {name} (valid formats: {list(self._chat_handlers)})") from None


def get_chat_completion_handler(name: str) -> LlamaChatCompletionHandler:
    return LlamaChatCompletionHandlerRegistry().get_chat_completion_handler_by_name(name)


def register_chat_completion_handler(name: str) -> Callable[[Any], Any]:
    """Decorator: register the decorated handler under `name`."""
    def decorator(handler: Any) -> Any:
        LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(name, handler)
        return handler
    return decorator


def register_chat_format(name: str) -> Callable[[Any], Any]:
    """Decorator: register a handler made from the decorated chat formatter under `name`."""
    def decorator(formatter: Any) -> Any:
        LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(
            name, chat_formatter_to_chat_completion_handler(formatter))
        return formatter
    return decorator


# -- formatters from templates -----------------------------------------------------------------

def _stop_on_tokens(token_ids: "set[int]") -> Any:
    from .logits import StoppingCriteriaList
    return StoppingCriteriaList([lambda tokens, logits: int(tokens[-1]) in token_ids])


class Jinja2ChatFormatter:
    """A formatter that renders a Hugging Face style jinja2 chat template (pybonsai's sandbox:
    raise_exception raises, strftime_now and tojson as transformers has them). The stop string is
    the EOS token; `stop_token_ids` also stop generation on those tokens."""

    strftime_now = staticmethod(_strftime_now)
    tojson = staticmethod(_tojson)

    def __init__(self, template: str, eos_token: str, bos_token: str, add_generation_prompt: bool = True,
                 stop_token_ids: Optional[List[int]] = None):
        self.template, self.eos_token, self.bos_token = template, eos_token, bos_token
        self.add_generation_prompt = add_generation_prompt
        self.stop_token_ids = set(stop_token_ids) if stop_token_ids is not None else None
        self._template = ChatTemplate(template, bos_token=bos_token, eos_token=eos_token,
                                      name="Jinja2ChatFormatter template")

    def __call__(self, *, messages: Messages, functions: Any = None, function_call: Any = None,
                 tools: Any = None, tool_choice: Any = None, **kwargs: Any) -> ChatFormatterResponse:
        kwargs.setdefault("add_generation_prompt", self.add_generation_prompt)
        prompt = self._template.render(messages, tools=tools, functions=functions, function_call=function_call,
                                       tool_choice=tool_choice, **kwargs)
        stopping = _stop_on_tokens(self.stop_token_ids) if self.stop_token_ids is not None else None
        return ChatFormatterResponse(prompt=prompt, stop=[self.eos_token], stopping_criteria=stopping,
                                     added_special=True)

    def to_chat_handler(self) -> LlamaChatCompletionHandler:
        return chat_formatter_to_chat_completion_handler(self)


def hf_tokenizer_config_to_chat_formatter(tokenizer_config: Dict[str, Any],
                                          add_generation_prompt: bool = True) -> ChatFormatter:
    """A formatter from a tokenizer_config.json dict (its chat_template, bos_token and eos_token).
    As llama-cpp-python does, the answer is asked for by appending an empty assistant message."""
    if not isinstance(tokenizer_config, dict):
        raise TypeError(f"tokenizer_config must be a dict, got {type(tokenizer_config).__name__}")
    for key in ("chat_template", "bos_token", "eos_token"):
        if not isinstance(tokenizer_config.get(key), str):
            raise ValueError(f"tokenizer_config[{key!r}] must be a str, got {tokenizer_config.get(key)!r}")
    bos, eos = tokenizer_config["bos_token"], tokenizer_config["eos_token"]
    template = ChatTemplate(tokenizer_config["chat_template"], bos_token=bos, eos_token=eos,
                            name="tokenizer_config chat_template")

    def format_tokenizer_config(messages: Messages, **kwargs: Any) -> ChatFormatterResponse:
        if add_generation_prompt:
            messages = [*messages, {"role": "assistant", "content": ""}]
        prompt = template.render(messages, **{"add_generation_prompt": False, **kwargs})
        return ChatFormatterResponse(prompt=prompt, stop=[eos, bos], added_special=True)

    return format_tokenizer_config


def hf_tokenizer_config_to_chat_completion_handler(tokenizer_config: Dict[str, Any],
                                                   add_generation_prompt: bool = True) -> LlamaChatCompletionHandler:
    return chat_formatter_to_chat_completion_handler(
        hf_tokenizer_config_to_chat_formatter(tokenizer_config, add_generation_prompt=add_generation_prompt))


def hf_autotokenizer_to_chat_formatter(pretrained_model_name_or_path: Union[str, "os.PathLike[str]"]) -> ChatFormatter:
    """A formatter that renders with transformers' AutoTokenizer.apply_chat_template."""
    try:
        from transformers import AutoTokenizer  # type: ignore[import-not-found]
    except ImportError:
        raise ImportError("hf_autotokenizer_to_chat_formatter needs the transformers package "
                          "(pip install transformers)") from None
    tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path)

    def format_autotokenizer(messages: Messages, **kwargs: Any) -> ChatFormatterResponse:
        tokenizer.use_default_system_prompt = False
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
        return ChatFormatterResponse(prompt=prompt, stop=tokenizer.eos_token, added_special=True)

    return format_autotokenizer


def hf_autotokenizer_to_chat_completion_handler(
        pretrained_model_name_or_path: Union[str, "os.PathLike[str]"]) -> LlamaChatCompletionHandler:
    return chat_formatter_to_chat_completion_handler(hf_autotokenizer_to_chat_formatter(pretrained_model_name_or_path))


def guess_chat_format_from_gguf_metadata(metadata: Dict[str, str]) -> Optional[str]:
    """The registered format whose template is exactly the GGUF's tokenizer.chat_template, if any."""
    known = {CHATML_CHAT_TEMPLATE: "chatml", MISTRAL_INSTRUCT_CHAT_TEMPLATE: "mistral-instruct",
             MIXTRAL_INSTRUCT_CHAT_TEMPLATE: "mistral-instruct", LLAMA3_INSTRUCT_CHAT_TEMPLATE: "llama-3"}
    return known.get(metadata.get("tokenizer.chat_template"))  # type: ignore[arg-type]


# -- completion -> chat completion -------------------------------------------------------------

def _chat_logprobs(logprobs: Optional[llama_types.CompletionLogprobs]) -> Optional[llama_types.ChatCompletionLogprobs]:
    """A text completion's logprobs in the chat shape (bytes are not reported)."""
    if logprobs is None:
        return None
    content = [{"token": token, "bytes": None, "logprob": logprob,
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in (top or {}).items()]}
               for token, logprob, top in zip(logprobs["tokens"], logprobs["token_logprobs"],
                                              logprobs["top_logprobs"])]
    return {"content": content, "refusal": None}  # type: ignore[typeddict-item]


def _chat_head(piece: Dict[str, Any], kind: str) -> Dict[str, Any]:
    return {"id": "chat" + piece["id"], "object": kind, "created": piece["created"], "model": piece["model"]}


def _convert_completion_to_chat(completion: Any, stream: bool = False) -> Any:
    """create_completion's result (or stream) as a chat completion (or chat chunk stream)."""
    if stream:
        return _chunks_to_chat(completion)
    choice = completion["choices"][0]
    return {**_chat_head(completion, "chat.completion"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": choice["text"]},
                         "logprobs": _chat_logprobs(choice["logprobs"]), "finish_reason": choice["finish_reason"]}],
            "usage": completion["usage"]}


def _chunk(head: Dict[str, Any], delta: Dict[str, Any], finish_reason: Optional[str], logprobs: Any = None) -> Any:
    return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]}


def _chunks_to_chat(chunks: Iterator[Any]) -> Iterator[Any]:
    """The role first, then each text piece; the last chunk carries the finish reason (and an
    empty delta unless it still has text)."""
    for i, piece in enumerate(chunks):
        head, choice = _chat_head(piece, "chat.completion.chunk"), piece["choices"][0]
        if i == 0:
            yield _chunk(head, {"role": "assistant"}, None)
        text, finish = choice["text"], choice["finish_reason"]
        yield _chunk(head, {"content": text} if finish is None or text else {}, finish,
                     _chat_logprobs(choice["logprobs"]))


def _tool_call(name: str, arguments: str, call_id: str, index: Optional[int] = None) -> Dict[str, Any]:
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    return call if index is None else {"index": index, **call}


def _convert_completion_to_chat_function(tool_name: str, completion: Any, stream: bool) -> Any:
    """The completion (constrained to the tool's parameters) as a call of that tool."""
    if not stream:
        choice, call_id = completion["choices"][0], f"call__0_{tool_name}_{completion['id']}"
        message = {"role": "assistant", "content": None,
                   "function_call": {"name": tool_name, "arguments": choice["text"]},
                   "tool_calls": [_tool_call(tool_name, choice["text"], call_id)]}
        return {**_chat_head(completion, "chat.completion"),
                "choices": [{"index": 0, "message": message, "logprobs": _chat_logprobs(choice["logprobs"]),
                             "finish_reason": "tool_calls"}],
                "usage": completion["usage"]}
    return _function_chunks(tool_name, completion)


def _function_chunks(tool_name: str, chunks: Iterator[Any]) -> Iterator[Any]:
    first = None
    empty = {"role": None, "content": None, "function_call": None, "tool_calls": None}
    for piece in chunks:
        head, choice = _chat_head(piece, "chat.completion.chunk"), piece["choices"][0]
        if first is None:
            first, call_id = head, f"call__0_{tool_name}_{piece['id']}"
            yield _chunk(head, {**empty, "role": "assistant"}, None)
        delta = {**empty, "function_call": {"name": tool_name, "arguments": choice["text"]},
                 "tool_calls": [_tool_call(tool_name, choice["text"], call_id, index=0)]}
        yield _chunk(head, delta, None, _chat_logprobs(choice["logprobs"]))
    if first is not None:
        yield _chunk(first, empty, "tool_calls")


def _stop_list(stop: Stop) -> List[str]:
    return [] if stop is None else [stop] if isinstance(stop, str) else list(stop)


def _schema_grammar(schema: Any) -> Any:
    from .grammar import LlamaGrammar
    try:
        return LlamaGrammar.from_json_schema(schema)
    except ValueError:  # a schema the converter cannot express: any JSON value
        return LlamaGrammar.from_json_schema({})


def _as_tool_choice(function_call: Any, tool_choice: Any) -> Any:
    """The legacy function_call argument as a tool_choice."""
    if function_call in ("none", "auto"):
        return function_call
    if isinstance(function_call, dict) and "name" in function_call:
        return {"type": "function", "function": {"name": function_call["name"]}}
    return tool_choice


def chat_formatter_to_chat_completion_handler(chat_formatter: ChatFormatter) -> LlamaChatCompletionHandler:
    """A handler that formats the messages with `chat_formatter`, runs llama.create_completion on
    the prompt (the formatter's stop strings added to the request's), and returns the result as a
    chat completion, or a stream of chat chunks. response_format constrains the answer to JSON; a
    named tool_choice constrains it to the tool's parameters and returns it as a tool call."""

    def chat_completion_handler(*, llama: Any, messages: Messages, functions: Any = None, function_call: Any = None,
                                tools: Any = None, tool_choice: Any = None, temperature: float = 0.2,
                                top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05, typical_p: float = 1.0,
                                stream: bool = False, stop: Stop = None, seed: Optional[int] = None,
                                response_format: Any = None, max_tokens: Optional[int] = None,
                                presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                                repeat_penalty: float = 1.1, tfs_z: float = 1.0, mirostat_mode: int = 0,
                                mirostat_tau: float = 5.0, mirostat_eta: float = 0.1, model: Optional[str] = None,
                                logits_processor: Any = None, grammar: Any = None, logit_bias: Any = None,
                                logprobs: Optional[bool] = None, top_logprobs: Optional[int] = None,
                                **kwargs: Any) -> Any:
        result = chat_formatter(messages=messages, functions=functions, function_call=function_call, tools=tools,
                                tool_choice=tool_choice, **kwargs)
        prompt = llama.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        if result.stop is not None:
            stop = _stop_list(stop) + _stop_list(result.stop)
        if response_format is not None:
            from .grammar import LlamaGrammar
            from .json_schema import response_format_grammar
            text = response_format_grammar(response_format)
            grammar = LlamaGrammar.from_string(text) if text is not None else grammar
        if functions is not None:
            tools = [{"type": "function", "function": function} for function in functions]
        tool_choice = _as_tool_choice(function_call, tool_choice)
        tool = None
        if isinstance(tool_choice, dict) and tools is not None:
            name = tool_choice["function"]["name"]
            tool = next((t for t in tools if t["function"]["name"] == name), None)
            if tool is None:
                raise ValueError(f"Tool choice '{name}' not found in tools.")
            grammar = _schema_grammar(tool["function"].get("parameters") or {})
        completion = llama.create_completion(
            prompt=prompt, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p, typical_p=typical_p,
            logprobs=(top_logprobs or 0) if logprobs else None, stream=stream, stop=stop, seed=seed,
            max_tokens=max_tokens, presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
            repeat_penalty=repeat_penalty, tfs_z=tfs_z, mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau,
            mirostat_eta=mirostat_eta, model=model, logits_processor=logits_processor,
            stopping_criteria=result.stopping_criteria, grammar=grammar, logit_bias=logit_bias)
        if tool is not None:
            return _convert_completion_to_chat_function(tool["function"]["name"], completion, stream)
        return _convert_completion_to_chat(completion, stream=stream)

    return chat_completion_handler


for _name, _formatter in CHAT_FORMATS.items():
    register_chat_format(_name)(_formatter)
format = format_vicuna  # llama-cpp-python's name for its vicuna formatter


# -- handlers pybonsai refuses -----------------------------------------------------------------

def _refusing_handler(name: str, registered: List[str], why: str) -> Callable[..., Any]:
    def handler(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{name}: {why}")
    handler.__name__ = handler.__qualname__ = name
    for registered_name in registered:
        register_chat_completion_handler(registered_name)(handler)
    return handler


_FUNCTIONARY = ("functionary's prompt format and function-calling protocol are not implemented in pybonsai; "
                "use create_chat_completion(tools=...) with a model whose chat template supports tools")
functionary_chat_handler = _refusing_handler("functionary_chat_handler", ["functionary"], _FUNCTIONARY)
functionary_v1_v2_chat_handler = _refusing_handler(
    "functionary_v1_v2_chat_handler", ["functionary-v1", "functionary-v2"], _FUNCTIONARY)
chatml_function_calling = _refusing_handler(
    "chatml_function_calling", ["chatml-function-calling"],
    "the chatml-function-calling handler is not implemented in pybonsai; use create_chat_completion(tools=...), "
    "which renders tools with the model's own chat template")


class _ImageChatHandler:
    """An image chat handler of llama-cpp-python: pybonsai runs text-only models, so it refuses."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._refuse()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._refuse()

    def _refuse(self) -> None:
        raise NotImplementedError(f"{type(self).__name__}: pybonsai runs text-only models; image (multimodal) "
                                  "chat handlers are not supported")


class Llava15ChatHandler(_ImageChatHandler):
    pass


class MTMDChatHandler(_ImageChatHandler):
    pass


class Gemma4ChatHandler(MTMDChatHandler):
    pass


class ObsidianChatHandler(Llava15ChatHandler):
    pass


class MoondreamChatHandler(Llava15ChatHandler):
    pass


class Llava16ChatHandler(Llava15ChatHandler):
    pass


class NanoLlavaChatHandler(Llava15ChatHandler):
    pass


class Llama3VisionAlphaChatHandler(Llava15ChatHandler):
    pass


Llama3VisionAlpha = Llama3VisionAlphaChatHandler


class MiniCPMv26ChatHandler(Llava15ChatHandler):
    pass


class Qwen25VLChatHandler(Llava15ChatHandler):
    pass
