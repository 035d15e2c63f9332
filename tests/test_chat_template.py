"""ChatTemplate: the real Qwen3 template renders as transformers renders it, and hostile or broken
templates/messages fail fast with ChatTemplateError/TypeError."""
from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from pybonsai.chat import ChatTemplate, ChatTemplateError

HANG_GUARD_S = 30.0  # only catches hangs; real failures take milliseconds


@pytest.fixture(scope="module")
def qwen3(llama_cpp_dir: Path) -> ChatTemplate:
    source = (llama_cpp_dir / "models" / "templates" / "Qwen-Qwen3-0.6B.jinja").read_text("utf-8")
    return ChatTemplate(source)


def render(source: str, messages=None, **kwargs) -> str:
    return ChatTemplate(source, name="test.jinja").render(messages or [{"role": "user", "content": "x"}],
                                                          **kwargs)


def fails_fast(source: str, match: str, **options) -> ChatTemplateError:
    start = time.monotonic()
    with pytest.raises(ChatTemplateError, match=match) as info:
        ChatTemplate(source, name="test.jinja", **options).render([{"role": "user", "content": "x"}])
    assert time.monotonic() - start < HANG_GUARD_S
    assert str(info.value).startswith("test.jinja: ")
    return info.value


SYSTEM_USER = [{"role": "system", "content": "You are helpful."},
               {"role": "user", "content": "Héllo 🦙"}]


# -- Qwen3 -----------------------------------------------------------------------------------------

def test_qwen3_system_user_with_generation_prompt(qwen3):
    assert qwen3.render(SYSTEM_USER) == (
        "<|im_start|>system\nYou are helpful.<|im_end|>\n"
        "<|im_start|>user\nHéllo 🦙<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_qwen3_without_generation_prompt(qwen3):
    assert qwen3.render(SYSTEM_USER, add_generation_prompt=False) == (
        "<|im_start|>system\nYou are helpful.<|im_end|>\n"
        "<|im_start|>user\nHéllo 🦙<|im_end|>\n")


def test_qwen3_enable_thinking_false_adds_empty_think_block(qwen3):
    assert qwen3.render(SYSTEM_USER[1:], enable_thinking=False) == (
        "<|im_start|>user\nHéllo 🦙<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert qwen3.render(SYSTEM_USER[1:], enable_thinking=True).endswith("<|im_start|>assistant\n")


def test_qwen3_history_drops_reasoning_of_earlier_turns(qwen3):
    messages = [*SYSTEM_USER,
                {"role": "assistant", "content": "<think>\nLet me think.\n</think>\n\nHi!"},
                {"role": "user", "content": "Thanks"}]
    assert qwen3.render(messages) == (
        "<|im_start|>system\nYou are helpful.<|im_end|>\n"
        "<|im_start|>user\nHéllo 🦙<|im_end|>\n"
        "<|im_start|>assistant\nHi!<|im_end|>\n"
        "<|im_start|>user\nThanks<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_qwen3_last_assistant_turn_keeps_reasoning(qwen3):
    inline = [SYSTEM_USER[1], {"role": "assistant", "content": "<think>\nplan\n</think>\n\nHi!"}]
    field = [SYSTEM_USER[1], {"role": "assistant", "content": "Hi!", "reasoning_content": "\nplan\n"}]
    expected = ("<|im_start|>user\nHéllo 🦙<|im_end|>\n"
                "<|im_start|>assistant\n<think>\nplan\n</think>\n\nHi!<|im_end|>\n")
    assert qwen3.render(inline, add_generation_prompt=False) == expected
    assert qwen3.render(field, add_generation_prompt=False) == expected


def test_qwen3_tools_tool_calls_and_tool_responses(qwen3):
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Wetter in einer Stadt",
                                             "parameters": {"type": "object"}}}
    messages = [{"role": "user", "content": "Weather in Zürich?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": "get_weather",
                                                      "arguments": {"city": "Zürich"}}}]},
                {"role": "tool", "content": '{"sky": "sunny"}'},
                {"role": "assistant", "content": "It is sunny."}]
    assert qwen3.render(messages, tools=[tool], add_generation_prompt=False) == (
        "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query."
        "\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + json.dumps(tool, ensure_ascii=False) +
        "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWeather in Zürich?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}'
        "\n</tool_call><|im_end|>\n"
        '<|im_start|>user\n<tool_response>\n{"sky": "sunny"}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n<think>\n\n</think>\n\nIt is sunny.<|im_end|>\n")


def test_tools_are_undefined_unless_given():
    source = "{{ 'defined' if tools is defined else 'undefined' }}"
    assert render(source) == "undefined"
    assert render(source, tools=[]) == "defined"


def test_every_vendored_template_compiles_and_renders_or_fails_cleanly(llama_cpp_dir):
    paths = sorted((llama_cpp_dir / "models" / "templates").glob("*.jinja"))
    assert paths
    rendered = 0
    for path in paths:
        template = ChatTemplate(path.read_text("utf-8"), name=path.name, bos_token="<s>", eos_token="</s>")
        try:
            rendered += bool(template.render([*SYSTEM_USER, {"role": "assistant", "content": "Hi!"},
                                              {"role": "user", "content": "Bye"}]))
        except ChatTemplateError as exc:  # some templates reject this conversation on purpose
            assert str(exc).startswith(path.name + ": ")
    assert rendered >= len(paths) * 3 // 4


def test_qwen3_text_content_parts_are_joined(qwen3):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Héllo "},
                                          {"type": "text", "text": "🦙"}]}]
    assert qwen3.render(parts) == qwen3.render(SYSTEM_USER[1:])


# -- transformers-compatible environment -----------------------------------------------------------

def test_hf_helpers_and_options():
    assert render("{{ {'k': 'é', 'n': [1]} | tojson }}") == '{"k": "é", "n": [1]}'
    assert render("{{ {'k': 1} | tojson(indent=2) }}") == '{\n  "k": 1\n}'
    assert render("{{ strftime_now('%Y') }}") == str(datetime.now().year)
    assert render("{% for i in range(9) %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}") == "012"
    assert render("{% if true %}\n  {% if 1 %}a{% endif %}\n{% endif %}\n") == "a"  # trim/lstrip_blocks
    assert render("{{ bos_token }}|{{ eos_token }}") == "|"
    assert ChatTemplate("{{ bos_token }}{{ eos_token }}", bos_token="<s>", eos_token="</s>").render(
        [{"role": "user", "content": ""}]) == "<s></s>"
    assert render("{{ custom }}|{{ missing }}", custom=42) == "42|"
    assert render("{% generation %}kept{% endgeneration %}") == "kept"
    assert render("{{ '%5.1f|%s' % (2.25, 'x') }}{{ '{:>3}'.format(1) }}{{ 'ab' | center(4) }}") \
        == "  2.2|x  1 ab "
    assert render("{{ 10 ** 9 }} {{ 'ab' * 3 }}") == "1000000000 ababab"


# -- hostile and broken templates ------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__ }}",
    "{{ raise_exception.__globals__ }}",
    "{% set x = [] %}{{ x.append(1) }}",
])
def test_sandbox_violations_raise(source):
    fails_fast(source, "sandbox violation.*unsafe")


def test_syntax_error_names_template_and_line():
    with pytest.raises(ChatTemplateError, match=r"^my\.jinja: syntax error at line 2"):
        ChatTemplate("ok\n{% if %}", name="my.jinja")
    with pytest.raises(ChatTemplateError, match="syntax error"):
        ChatTemplate("{% for x in y %}")
    with pytest.raises(TypeError):
        ChatTemplate(b"{{ x }}")  # type: ignore[arg-type]


def test_raise_exception_and_undefined_calls():
    fails_fast("{{ raise_exception('Conversation roles must alternate') }}",
               "template raised an error: Conversation roles must alternate")
    fails_fast("line 1\n{{ no_such_function() }}", r"line 2\).*'no_such_function' is undefined")
    fails_fast("{% include 'other.jinja' %}", "rendering failed")
    fails_fast("{{ raise_exception | tojson }}", "not JSON serializable")


@pytest.mark.parametrize("source", [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
])
def test_runaway_computation_hits_the_time_cap(source):
    fails_fast(source, "longer than 0.5 s", timeout_s=0.5)


@pytest.mark.parametrize("source", [
    "{% for i in range(100000) %}{% for j in range(100000) %}xy{% endfor %}{% endfor %}",
    "{% set s %}{% for i in range(100000) %}{% for j in range(100000) %}xy{% endfor %}"
    "{% endfor %}{% endset %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{{ 'a' * 10**9 }}",
    "{{ 'a' | center(10**9) }}",
    "{{ 'a'.ljust(10**9) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '%999999999s' % 'a' }}",
    "{{ '%999999999s' | format('a') }}",
    "{{ lipsum(10**9) }}",
    "{{ range(10**9) | list }}",
])
def test_huge_output_or_values_hit_the_size_cap(source):
    fails_fast(source, "exceeds|produced more|too large|huge", max_output_chars=100_000)


def test_unbounded_recursion_is_an_error():
    fails_fast("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursion")


def test_output_cap_grows_with_the_input():
    big = "x" * 300_000
    out = ChatTemplate("{{ messages[0].content }}", max_output_chars=1000).render(
        [{"role": "user", "content": big}])
    assert out == big


# -- bad messages ------------------------------------------------------------------------------------

@pytest.mark.parametrize("messages, error, match", [
    ("hello", TypeError, "messages must be a list of dicts, got str"),
    ({"role": "user"}, TypeError, "messages must be a list of dicts, got dict"),
    ([], ChatTemplateError, "messages is empty"),
    ([{"role": "user", "content": "a"}, "b"], TypeError, r"messages\[1\] must be a dict, got str"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"content": "c"}],
     ChatTemplateError, r"messages\[2\] has no 'role'"),
    ([{"role": 1, "content": "a"}], TypeError, r"messages\[0\]\['role'\] must be a str"),
    ([{"role": "user", "content": 5}], TypeError, r"messages\[0\]\['content'\] must be a str or None"),
    ([{"role": "user", "content": [{"type": "image_url"}]}], TypeError, "parts must be"),
    ([{"role": "assistant", "content": "", "tool_calls": "f()"}], TypeError, "'tool_calls'.*list"),
    ([{"role": "assistant", "content": "", "reasoning_content": 3}], TypeError, "'reasoning_content'"),
])
def test_bad_messages_are_named(qwen3, messages, error, match):
    with pytest.raises(error, match=match):
        qwen3.render(messages)


def test_bad_tools_are_named(qwen3):
    with pytest.raises(TypeError, match="tools must be a list"):
        qwen3.render(SYSTEM_USER, tools={"name": "f"})
    with pytest.raises(TypeError, match=r"tools\[0\] must be a dict"):
        qwen3.render(SYSTEM_USER, tools=["f"])


def test_template_type_errors_become_chat_template_errors(qwen3):
    # Qwen3 does `'</think>' in message.content`, which fails for None content.
    with pytest.raises(ChatTemplateError, match="tokenizer.chat_template: rendering failed"):
        qwen3.render([SYSTEM_USER[1], {"role": "assistant", "content": None}])
