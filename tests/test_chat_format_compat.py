"""pybonsai.llama_chat_format: llama-cpp-python's named chat formats give its prompt strings (the
expected strings below follow its formatting rules, quirks included), templates render in
pybonsai's sandbox, the handler registry, handlers made from formatters driving a real Llama
(the tiny synthetic model), and the image/functionary handlers refusing."""
from __future__ import annotations

import json
import sys

import jinja2
import pytest

import pybonsai.llama_chat_format as lcf
import pybonsai.llama_types as llama_types

SYSTEM, USER1, ANSWER1, USER2 = "You are terse.", "Hi", "Hello!", "How are you?"
CONVERSATION = [
    llama_types.ChatCompletionRequestSystemMessage(role="system", content=SYSTEM),
    llama_types.ChatCompletionRequestUserMessage(role="user", content=USER1),
    llama_types.ChatCompletionRequestAssistantMessage(role="assistant", content=ANSWER1),
    llama_types.ChatCompletionRequestUserMessage(role="user", content=USER2),
]
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                 "helpful, detailed, and polite answers to the user's questions.")
EXPECTED = {  # name: (prompt, stop)
    "chatml": ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
               "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
               "<|im_start|>assistant\n", "<|im_end|>"),
    "qwen": ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
             "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
             "<|im_start|>assistant\n", "<|endoftext|>"),
    "llama-2": ("[INST] <<SYS>>\nYou are terse.\n<</SYS>> Hi [/INST]Hello! </s><s>[INST]How are you?  [/INST]",
                None),
    "llama-3": ("<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
    "zephyr": ("<|system|>\nYou are terse.</s>\n<|user|>\n\nHi</s>\n<|assistant|>\n\nHello!</s>\n"
               "<|user|>\n\nHow are you?</s>\n<|assistant|>\n\n", "</s>"),
    "alpaca": ("You are terse.\n\n### Instruction: Hi\n\n### Response: Hello!</s>### Instruction: How are you?\n\n",
               None),
    "vicuna": (VICUNA_SYSTEM + " USER: Hi ASSISTANT: Hello!</s>USER: How are you? ASSISTANT:", None),
    "gemma": ("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
              "<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n", "<end_of_turn>\n"),
    "mistral-instruct": ("[INST] Hi [/INST]Hello!</s>[INST] How are you? [/INST]", "</s>"),
    "chatglm3": ("<|system|>\nYou are terse.<|user|>\n Hi<|assistant|>\n Hello!<|user|>\n How are you?<|assistant|>",
                 "</s>"),
    "pygmalion": ("<|system|>You are terse.\n\n<|user|>\nHi\n\n<|model|>\nHello!\n\n<|user|>\nHow are you?\n\n"
                  "<|model|>\n", "\n"),
    "oasst_llama": ("[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\n<|prompter|>Hi</s><|assistant|>Hello!</s>"
                    "<|prompter|>How are you?</s><|assistant|>", None),
    "redpajama-incite": ("You are terse.\n<human>: Hi\n<bot>: Hello!\n<human>: How are you?\n<bot>:", "<human>"),
    "saiga": ("<s>system\nYou are terse.</s><s>user\nHi</s><s>user\nHow are you?</s><s>bot", None),  # no assistant
}
FORMAT_NAMES = ["llama-2", "llama-3", "alpaca", "qwen", "vicuna", "oasst_llama", "baichuan-2", "baichuan",
                "openbuddy", "redpajama-incite", "snoozy", "phind", "intel", "open-orca", "mistrallite", "zephyr",
                "pygmalion", "chatml", "mistral-instruct", "chatglm3", "openchat", "saiga", "gemma"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_format_prompt_matches_llama_cpp_python(name):
    response = _formatter(name)(messages=CONVERSATION)
    assert (response.prompt, response.stop) == EXPECTED[name]
    assert response.added_special is False and response.stopping_criteria is None


def _formatter(name):
    from pybonsai.chat_formats import CHAT_FORMATS
    return CHAT_FORMATS[name]


def test_every_format_is_registered_under_its_name_and_function():
    for name in FORMAT_NAMES:
        assert callable(lcf.get_chat_completion_handler(name))
        response = _formatter(name)(messages=CONVERSATION)
        assert isinstance(response, lcf.ChatFormatterResponse) and isinstance(response.prompt, str)
    assert lcf.format is lcf.format_vicuna and lcf.format_chatml is _formatter("chatml")


def test_qwen_default_system_and_open_orca_quirk():
    assert lcf.format_qwen(messages=[{"role": "user", "content": "Hi"}]).prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n")
    # llama-cpp-python's open-orca maps "User"/"Assistant" roles only: OpenAI messages are left out.
    prompt = lcf.format_open_orca(messages=CONVERSATION).prompt
    assert prompt.endswith("<|end_of_turn|>\nAssistant: ") and USER1 not in prompt


def test_mistral_instruct_matches_the_jinja_template():
    """As llama-cpp-python's own test: format_mistral_instruct against Mixtral's HF template."""
    messages = [{"role": "user", "content": "Instruction"}, {"role": "assistant", "content": "Model answer"},
                {"role": "user", "content": "Follow-up instruction"}]
    response = lcf.format_mistral_instruct(messages=messages)
    reference = jinja2.Template(lcf.MIXTRAL_INSTRUCT_CHAT_TEMPLATE).render(messages=messages, bos_token="<s>",
                                                                           eos_token="</s>")
    assert ("" if response.added_special else "<s>") + response.prompt == reference
    formatter = lcf.Jinja2ChatFormatter(lcf.MIXTRAL_INSTRUCT_CHAT_TEMPLATE, eos_token="</s>", bos_token="<s>")
    rendered = formatter(messages=messages)
    assert (rendered.prompt, rendered.stop, rendered.added_special) == (reference, ["</s>"], True)


def test_jinja2_formatter_raise_exception_raises():
    formatter = lcf.Jinja2ChatFormatter(lcf.MISTRAL_INSTRUCT_CHAT_TEMPLATE, eos_token="</s>", bos_token="<s>")
    with pytest.raises(ValueError, match="Conversation roles must alternate"):
        formatter(messages=[{"role": "assistant", "content": "first"}])


def test_jinja2_formatter_generation_prompt_and_stop_tokens():
    formatter = lcf.Jinja2ChatFormatter(lcf.CHATML_CHAT_TEMPLATE, eos_token="<|im_end|>", bos_token="<s>",
                                        stop_token_ids=[7])
    response = formatter(messages=[{"role": "user", "content": "Hi"}])
    assert response.prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    (criterion,) = response.stopping_criteria
    assert criterion([1, 7], None) and not criterion([7, 1], None)
    off = lcf.Jinja2ChatFormatter(lcf.CHATML_CHAT_TEMPLATE, "<|im_end|>", "<s>", add_generation_prompt=False)
    assert off(messages=[{"role": "user", "content": "Hi"}]).prompt == "<|im_start|>user\nHi<|im_end|>\n"


MISTRAL_TOKENIZER_CONFIG = {"add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                            "tokenizer_class": "LlamaTokenizer", "chat_template": lcf.MIXTRAL_INSTRUCT_CHAT_TEMPLATE}


def test_hf_tokenizer_config_to_chat_formatter():
    formatter = lcf.hf_tokenizer_config_to_chat_formatter(json.loads(json.dumps(MISTRAL_TOKENIZER_CONFIG)))
    response = formatter(messages=[llama_types.ChatCompletionRequestUserMessage(role="user", content="Hello, world!")])
    assert response.prompt == "<s>[INST] Hello, world! [/INST]</s>"  # the appended empty assistant turn
    assert (response.stop, response.added_special) == (["</s>", "<s>"], True)
    with pytest.raises(ValueError, match="chat_template"):
        lcf.hf_tokenizer_config_to_chat_formatter({"bos_token": "<s>", "eos_token": "</s>"})


def test_hf_autotokenizer_needs_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="transformers"):
        lcf.hf_autotokenizer_to_chat_formatter("some/model")


def test_guess_chat_format_from_gguf_metadata():
    guess = lcf.guess_chat_format_from_gguf_metadata
    assert guess({"tokenizer.chat_template": lcf.CHATML_CHAT_TEMPLATE}) == "chatml"
    assert guess({"tokenizer.chat_template": lcf.MISTRAL_INSTRUCT_CHAT_TEMPLATE}) == "mistral-instruct"
    assert guess({"tokenizer.chat_template": lcf.MIXTRAL_INSTRUCT_CHAT_TEMPLATE}) == "mistral-instruct"
    assert guess({"tokenizer.chat_template": lcf.LLAMA3_INSTRUCT_CHAT_TEMPLATE}) == "llama-3"
    assert guess({"tokenizer.chat_template": "{{ messages }}"}) is None and guess({}) is None


def test_registry():
    registry = lcf.LlamaChatCompletionHandlerRegistry()
    assert registry is lcf.LlamaChatCompletionHandlerRegistry()

    @lcf.register_chat_completion_handler("pybonsai-test-custom")
    def custom(**kwargs):
        return "custom"

    try:
        assert lcf.get_chat_completion_handler("pybonsai-test-custom") is custom
        with pytest.raises(ValueError, match="already registered"):
            registry.register_chat_completion_handler("pybonsai-test-custom", custom)
        registry.register_chat_completion_handler("pybonsai-test-custom", print, overwrite=True)
        assert lcf.get_chat_completion_handler("pybonsai-test-custom") is print
    finally:
        registry.unregister_chat_handler("pybonsai-test-custom")
    with pytest.raises(lcf.LlamaChatCompletionHandlerNotFoundException, match="pybonsai-test-custom"):
        lcf.get_chat_completion_handler("pybonsai-test-custom")
    with pytest.raises(ValueError):
        registry.unregister_chat_handler("pybonsai-test-custom")


def test_register_chat_format_makes_a_handler():
    @lcf.register_chat_format("pybonsai-test-format")
    def shout(messages, **kwargs):
        return lcf.ChatFormatterResponse(prompt=messages[-1]["content"].upper())

    try:
        handler = lcf.get_chat_completion_handler("pybonsai-test-format")
        assert handler is not shout and callable(handler) and shout(messages=[{"content": "a"}]).prompt == "A"
    finally:
        lcf.LlamaChatCompletionHandlerRegistry().unregister_chat_handler("pybonsai-test-format")


@pytest.mark.parametrize("name", ["Llava15ChatHandler", "Llava16ChatHandler", "MoondreamChatHandler",
                                  "NanoLlavaChatHandler", "Llama3VisionAlphaChatHandler", "Llama3VisionAlpha",
                                  "MiniCPMv26ChatHandler", "Qwen25VLChatHandler", "MTMDChatHandler",
                                  "Gemma4ChatHandler", "ObsidianChatHandler"])
def test_image_handlers_refuse(name):
    with pytest.raises(NotImplementedError, match="text-only"):
        getattr(lcf, name)(clip_model_path="mmproj.gguf")


@pytest.mark.parametrize("name", ["functionary", "functionary-v1", "functionary-v2", "chatml-function-calling"])
def test_function_calling_handlers_refuse(name):
    with pytest.raises(NotImplementedError, match="not implemented"):
        lcf.get_chat_completion_handler(name)(llama=None, messages=CONVERSATION)
    with pytest.raises(NotImplementedError, match="functionary"):
        lcf.functionary_v1_v2_chat_handler(llama=None, messages=CONVERSATION)


# -- handlers driving a real Llama -------------------------------------------------------------

@pytest.fixture(scope="module")
def llm(tiny_model_path):
    from pybonsai import Llama
    with Llama(str(tiny_model_path), n_ctx=512, n_threads=2, flash_attn=False, verbose=False) as model:
        yield model


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say something."}]


def _check_usage(usage):
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] and usage["prompt_tokens"] > 0


def test_handler_returns_a_chat_completion(llm):
    handler = lcf.chat_formatter_to_chat_completion_handler(lcf.format_chatml)
    result = handler(llama=llm, messages=MESSAGES, max_tokens=6, temperature=0.0, repeat_penalty=1.0, logprobs=True, top_logprobs=2)
    assert result["object"] == "chat.completion" and result["id"].startswith("chatcmpl-")
    assert isinstance(result["created"], int) and result["model"] == llm.model_path
    (choice,) = result["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["finish_reason"] in ("stop", "length")
    _check_usage(result["usage"])
    prompt = lcf.format_chatml(messages=MESSAGES).prompt
    assert result["usage"]["prompt_tokens"] == len(llm.tokenize(prompt.encode(), add_bos=True, special=True))
    # the same greedy text as create_completion on the formatted prompt
    plain = llm.create_completion(prompt, max_tokens=6, temperature=0.0, stop=["<|im_end|>"])
    assert choice["message"]["content"] == plain["choices"][0]["text"]
    content = choice["logprobs"]["content"]
    assert choice["logprobs"]["refusal"] is None and len(content) == result["usage"]["completion_tokens"]
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"} and entry["bytes"] is None
        assert entry["logprob"] <= 0 and 1 <= len(entry["top_logprobs"]) <= 3
        assert all(set(top) == {"token", "logprob", "bytes"} for top in entry["top_logprobs"])


def test_handler_streams_chat_chunks(llm):
    handler = lcf.get_chat_completion_handler("chatml")
    whole = handler(llama=llm, messages=MESSAGES, max_tokens=6, temperature=0.0)
    chunks = list(handler(llama=llm, messages=MESSAGES, max_tokens=6, temperature=0.0, stream=True))
    assert len(chunks) >= 3 and len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and len(c["choices"]) == 1 for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:])
    assert text == whole["choices"][0]["message"]["content"]


def test_handler_from_the_models_template(llm):
    """A Jinja2ChatFormatter over the GGUF's own template: the same prompt as create_chat_completion."""
    eos = llm.token_to_piece(llm.token_eos(), special=True).decode()
    handler = lcf.Jinja2ChatFormatter(llm.chat_template, eos_token=eos, bos_token="").to_chat_handler()
    result = handler(llama=llm, messages=MESSAGES, max_tokens=4, temperature=0.0, repeat_penalty=1.0)
    native = llm.create_chat_completion(MESSAGES, max_tokens=4, temperature=0.0)
    assert result["usage"]["prompt_tokens"] == native["usage"]["prompt_tokens"]
    assert result["choices"][0]["message"]["content"] == native["choices"][0]["message"]["content"]


def test_handler_named_tool_choice_returns_a_tool_call(llm):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    handler = lcf.get_chat_completion_handler("chatml")
    result = handler(llama=llm, messages=MESSAGES, tools=tools, max_tokens=8, temperature=0.0,
                     tool_choice={"type": "function", "function": {"name": "get_weather"}})
    (choice,) = result["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert call["function"]["arguments"].startswith("{")
    with pytest.raises(ValueError, match="not found"):
        handler(llama=llm, messages=MESSAGES, tools=tools, tool_choice={"type": "function",
                                                                       "function": {"name": "other"}})
