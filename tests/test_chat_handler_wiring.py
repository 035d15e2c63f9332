"""Llama(chat_format=..., chat_handler=...) applied as in llama-cpp-python: create_chat_completion
goes through the chosen handler (called with llama= and every request argument); without either
the GGUF's own template is rendered by pybonsai as before."""
from __future__ import annotations

import warnings

import pytest

import pybonsai.llama_chat_format as lcf
from pybonsai import Llama
from pybonsai.completions import render_chat_prompt

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say something."}]
OPTIONS = dict(n_ctx=256, n_threads=2, flash_attn=False)


@pytest.fixture(scope="module")
def chatml(tiny_model_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not applied" warning any more
        llm = Llama(str(tiny_model_path), chat_format="chatml", **OPTIONS)
    with llm:
        yield llm


@pytest.fixture(scope="module")
def plain(tiny_model_path):
    with Llama(str(tiny_model_path), **OPTIONS) as llm:
        yield llm


def test_chatml_renders_the_registered_format(chatml):
    result = chatml.create_chat_completion(MESSAGES, max_tokens=6, temperature=0.0)
    prompt = lcf.format_chatml(messages=MESSAGES).prompt
    expected = chatml.tokenize(prompt.encode(), add_bos=True, special=True)
    assert result["usage"]["prompt_tokens"] == len(expected)
    assert chatml.input_ids[:len(expected)].tolist() == expected
    assert result["object"] == "chat.completion" and result["id"].startswith("chatcmpl-")
    (choice,) = result["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = result["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # what the handler runs: create_completion on the formatted prompt
    direct = chatml.create_completion(prompt, max_tokens=6, temperature=0.0, stop=["<|im_end|>"])
    assert choice["message"]["content"] == direct["choices"][0]["text"]


@pytest.mark.parametrize("name, formatter", [("vicuna", lcf.format_vicuna), ("llama-2", lcf.format_llama2)])
def test_other_formats_render_their_own_prompt(plain, tiny_model_path, name, formatter):
    """Formats whose prompt differs from the GGUF's (Qwen3's ChatML-like) template."""
    with Llama(str(tiny_model_path), chat_format=name, **OPTIONS) as llm:
        result = llm.create_chat_completion(MESSAGES, max_tokens=2, temperature=0.0)
        prompt = formatter(messages=MESSAGES).prompt
        expected = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        assert result["usage"]["prompt_tokens"] == len(expected)
        assert llm.input_ids[:len(expected)].tolist() == expected  # the prompt the model evaluated
        assert prompt != render_chat_prompt(plain, MESSAGES)


def test_chatml_streams(chatml):
    whole = chatml.create_chat_completion(MESSAGES, max_tokens=6, temperature=0.0)
    chunks = list(chatml.create_chat_completion(MESSAGES, max_tokens=6, temperature=0.0, stream=True))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:])
    assert text == whole["choices"][0]["message"]["content"]


def test_positional_arguments_reach_the_handler(tiny_model_path):
    seen = {}

    def handler(**kwargs):
        seen.update(kwargs)
        return {"ok": True}

    with Llama(str(tiny_model_path), chat_handler=handler, **OPTIONS) as llm:
        assert llm.create_chat_completion(MESSAGES, None, None, None, None, 0.5, stop="x") == {"ok": True}
        assert seen["llama"] is llm and seen["messages"] == MESSAGES
        assert seen["temperature"] == 0.5 and seen["stop"] == "x" and seen["stream"] is False
        assert seen["top_k"] == 40 and seen["response_format"] is None and seen["logit_bias"] is None
        # pybonsai's own arguments only when given
        assert "enable_thinking" not in seen and "reasoning_format" not in seen
        seen.clear()
        llm.create_chat_completion(messages=MESSAGES, enable_thinking=True, tools=[{"type": "function"}])
        assert seen["enable_thinking"] is True and seen["tools"] == [{"type": "function"}]


def test_a_registered_handler_is_chosen_by_name(tiny_model_path):
    calls = []

    @lcf.register_chat_completion_handler("pybonsai-test-wiring")
    def handler(*, llama, messages, **kwargs):
        calls.append((llama, messages, kwargs))
        return lcf.get_chat_completion_handler("chatml")(llama=llama, messages=messages, **kwargs)

    try:
        with Llama(str(tiny_model_path), chat_format="pybonsai-test-wiring", **OPTIONS) as llm:
            result = llm.create_chat_completion(MESSAGES, max_tokens=3, temperature=0.0)
            assert result["object"] == "chat.completion"
            ((llama, messages, kwargs),) = calls
            assert llama is llm and messages == MESSAGES and kwargs["max_tokens"] == 3
    finally:
        lcf.LlamaChatCompletionHandlerRegistry().unregister_chat_handler("pybonsai-test-wiring")


def test_chat_handler_takes_precedence_over_chat_format(tiny_model_path):
    calls = []

    def handler(*, llama, messages, **kwargs):
        calls.append(llama)
        return {"answer": 42}

    with Llama(str(tiny_model_path), chat_format="llama-2", chat_handler=handler, **OPTIONS) as llm:
        assert llm.create_chat_completion(MESSAGES) == {"answer": 42}
        assert calls == [llm] and llm.chat_handler is handler


def test_unknown_chat_format_raises_naming_the_known_ones(tiny_model_path):
    with pytest.raises(ValueError, match=r"unknown chat_format 'no-such-format'.*chatml.*llama-2"):
        Llama(str(tiny_model_path), chat_format="no-such-format", **OPTIONS)


def test_a_template_the_gguf_does_not_name_is_unknown(tiny_model_path):
    with pytest.raises(ValueError, match=r"unknown chat_format 'chat_template.tool_use'"):
        Llama(str(tiny_model_path), chat_format="chat_template.tool_use", **OPTIONS)


def test_a_chat_handler_must_be_callable(tiny_model_path):
    with pytest.raises(TypeError, match="chat_handler must be callable"):
        Llama(str(tiny_model_path), chat_handler=object(), **OPTIONS)


def test_image_handlers_refuse_before_the_model_loads():
    with pytest.raises(NotImplementedError, match="text-only"):
        lcf.Llava15ChatHandler(clip_model_path="mmproj.gguf")


def test_functionary_formats_refuse_when_called(tiny_model_path):
    with Llama(str(tiny_model_path), chat_format="functionary-v2", **OPTIONS) as llm:
        with pytest.raises(NotImplementedError, match="functionary"):
            llm.create_chat_completion(MESSAGES)


@pytest.mark.parametrize("chat_format", [None, "chat_template.default"])
def test_default_is_the_ggufs_template_unchanged(plain, tiny_model_path, chat_format):
    """No chat_format (or the GGUF's default template by name): pybonsai's own rendering, the
    same greedy text, prompt and features as a Llama built without the argument."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        llm = Llama(str(tiny_model_path), chat_format=chat_format, **OPTIONS)
    with llm:
        assert llm.chat_format == chat_format
        ours = llm.create_chat_completion(MESSAGES, max_tokens=8, temperature=0.0)
        theirs = plain.create_chat_completion(MESSAGES, max_tokens=8, temperature=0.0)
        assert ours["choices"][0]["message"] == theirs["choices"][0]["message"]
        assert ours["usage"] == theirs["usage"]
        template_prompt = render_chat_prompt(llm, MESSAGES).encode()
        assert ours["usage"]["prompt_tokens"] == len(llm.tokenize(template_prompt, add_bos=False, special=True))
        # pybonsai's own arguments (only this path has them) still work
        thinking = llm.create_chat_completion(MESSAGES, max_tokens=2, temperature=0.0, enable_thinking=False)
        assert thinking["object"] == "chat.completion"
