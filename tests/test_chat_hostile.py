"""Hostile chat templates (a GGUF's tokenizer.chat_template is untrusted input): server-side
template injection attempts, output bombs, runaway loops and recursion, and operations that expand
small values into huge ones. Each must end in a ChatTemplateError or harmless text, within bounded
time and memory, and never run anything: the payloads try to create a marker file."""
from __future__ import annotations

import time
import tracemalloc

import pytest

from pybonsai import Llama
from pybonsai.chat import ChatTemplate, ChatTemplateError

TIME_BOUND_S = 20.0   # generous for a shared machine; the render deadline is 5 s
PEAK_BOUND = 64 << 20  # bytes of Python allocations during one render

MESSAGES = [{"role": "user", "content": "hello"}]

# Each payload tries to run `touch MARKER` (MARKER is replaced by a path in tmp_path) or to reach
# something from which that is possible: the jinja2 SSTI catalogue.
SSTI = [
    "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "{{ joiner.__init__.__globals__.os.system('touch MARKER') }}",
    "{{ namespace.__init__.__globals__.os.system('touch MARKER') }}",
    "{{ lipsum.__globals__['os'].popen('touch MARKER').read() }}",
    "{{ range.__init__.__globals__ }}",
    "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch MARKER') }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch MARKER') }}",
    "{{ raise_exception.__globals__['__builtins__']['open']('MARKER', 'w').write('x') }}",
    "{{ strftime_now.__globals__['datetime'] }}",
    "{{ messages.__class__.__init__.__globals__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__bases__[0].__subclasses__() }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{% if c.__name__ == 'Popen' %}"
    "{{ c('touch MARKER', shell=True) }}{% endif %}{% endfor %}",
    "{{ messages | attr('__class__') }}",
    "{{ messages | attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ ''['__cl' ~ 'ass__'] }}",
    "{{ ''.format.__globals__ }}",
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{{ '{0.__init__.__globals__}'.format(cycler) }}",
    "{{ '%s' | format(cycler.__init__.__globals__) }}",
    "{{ joiner().__call__.__globals__ }}",
    "{{ cycler(1, 2).next.__func__.__globals__ }}",
    "{% set ns = namespace() %}{% set ns.__class__ = 1 %}",
    "{% set x = [] %}{{ x.append(1) or x }}",
    "{% set d = {} %}{{ d.update({'a': 1}) }}",
    "{{ dict.__base__.__subclasses__() }}",
    "{{ messages[0].__class__.__subclasses__() }}",
    "{{ tools.__class__ if tools is defined else '' }}{{ namespace.__dict__ }}",
    "{% import 'os' as os %}{{ os.system('touch MARKER') }}",
    "{% include '/etc/passwd' %}",
    "{% extends 'MARKER' %}",
    "{{ config.__class__.__init__.__globals__['os'].popen('touch MARKER') }}",
    "{{ request.application.__self__._get_data_for_json.__globals__['json'].JSONEncoder.default }}",
    "{{ get_flashed_messages.__globals__.__builtins__.open('MARKER', 'w') }}",
    "{{ url_for.__globals__.os.popen('touch MARKER') }}",
    "{{ (0).__class__.__base__.__subclasses__() }}",
    "{{ messages.pop() }}{{ messages.clear() }}",
]

# What must never appear in text a template is allowed to produce.
LEAKS = ("<module", "Popen", "__builtins__", "<function", "<class", "<built-in", "<bound method")


def _render(source: str, **options) -> tuple[str | None, str | None]:
    try:
        return ChatTemplate(source, name="hostile.jinja", **options).render(MESSAGES), None
    except ChatTemplateError as exc:
        return None, str(exc)


@pytest.mark.parametrize("payload", SSTI)
def test_template_injection_is_refused_without_side_effects(tmp_path, payload):
    marker = tmp_path / "MARKER"
    source = payload.replace("MARKER", str(marker))
    start = time.monotonic()
    text, error = _render(source)
    assert time.monotonic() - start < TIME_BOUND_S
    assert not marker.exists(), f"the template ran code: {payload}"
    if error is not None:
        assert error.startswith("hostile.jinja: "), error
    else:  # harmless text only: no repr of a module, class or function leaked
        assert not any(leak in text for leak in LEAKS), text[:300]
    assert not marker.exists()


def test_hostile_template_from_a_model_file(tiny_model_path, tmp_path):
    """The same through the public API: a model whose template attacks, via create_chat_completion."""
    marker = tmp_path / "MARKER"
    hostile = "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}"
    with Llama(tiny_model_path, n_ctx=64, chat_template=hostile) as llm:
        with pytest.raises(ChatTemplateError, match="sandbox violation"):
            llm.create_chat_completion(MESSAGES, max_tokens=1)
        assert not marker.exists()
        # the Llama is still usable
        assert llm.create_completion("hi", max_tokens=1, temperature=0)["choices"][0]["text"] is not None


# -- bombs: every one refused within bounded time and bounded allocation ------------------------------

BOMBS = [
    # the reported defect: a list of 1500 references to one 1 MB string, joined
    '{{ (["a" * 1000000] * 1500) | join }}',
    '{{ ["a" * 1000000] * 1500 }}',
    '{{ (["a" * 1000000] * 1500) | tojson }}',
    '{{ (["a" * 1000000] * 1500) | string }}',
    '{% set a = "a" * 1000000 %}{{ [a, a, a, a] | join }}',
    '{% set a = "a" * 1000000 %}{{ a ~ a ~ a }}',
    '{% set a = "a" * 1000000 %}{{ a + a + a }}',
    '{% set a = "a" * 1000000 %}{{ "".join([a, a, a]) }}',
    '{% set a = "a" * 1000000 %}{{ "-".join(range(1000000) | map("string")) }}',
    '{% set a = "a" * 500000 %}{{ a.replace("a", "bbbbbbbb") }}',
    '{% set a = "a" * 500000 %}{{ a | replace("", "bbbbbbbb") }}',
    '{% set a = "\\n" * 500000 %}{{ a | indent(1000) }}',
    '{% set a = "\\n" * 500000 %}{{ a | indent("x" * 1000) }}',
    '{% set a = "ab" * 400000 %}{{ a | wordwrap(1, wrapstring="y" * 1000) }}',
    '{% set a = "{0}" * 300000 %}{{ a.format("x" * 1000) }}',
    '{% set a = "{x}" * 300000 %}{{ a.format_map({"x": "y" * 1000}) }}',
    '{% set a = "%s" * 300000 %}{{ a % ("x" * 1000,) }}',
    '{% set a = "%s" * 300000 %}{{ a | format("x" * 1000) }}',
    '{% set a = "\\t" * 500000 %}{{ a.expandtabs(1000) }}',
    '{% set a = "a" * 500000 %}{{ a.translate({97: "b" * 1000}) }}',
    '{{ lipsum(1000000) }}',
    '{% set a = "a" * 900000 %}{{ a | map("upper") | list | join }}',
    '{% for i in range(1000000) %}{{ "x" * 1000 }}{% endfor %}',
    '{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}',
    '{% set ns = namespace(s="ab") %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}',
    '{% set ns = namespace(l=["x" * 100000]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}',
    '{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}',
    '{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}',
    "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
    "{% for x in range(3) %}" * 2000 + "{% endfor %}" * 2000,
    '{{ 10 ** (10 ** 10) }}',
    '{{ (2 ** 64) ** 100000 }}',
    '{{ "%0999999999d" % 1 }}',
    '{{ range(10 ** 12) | list }}',
]


@pytest.mark.parametrize("source", BOMBS)
def test_bombs_fail_fast_and_small(source):
    tracemalloc.start()
    start = time.monotonic()
    try:
        text, error = _render(source, max_output_chars=1_000_000)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    elapsed = time.monotonic() - start
    assert error is not None, f"rendered {len(text)} characters"
    assert error.startswith("hostile.jinja: ")
    assert elapsed < TIME_BOUND_S, elapsed
    assert peak < PEAK_BOUND, f"{peak / 2**20:.0f} MiB allocated before refusing: {error}"


def test_the_join_defect_refuses_before_allocating():
    """issue 15's report: `(["a" * 1000000] * 1500) | join` raised only after allocating ~1.45 GB."""
    tracemalloc.start()
    try:
        with pytest.raises(ChatTemplateError, match="too large|exceeds"):
            ChatTemplate('{{ (["a" * 1000000] * 1500) | join }}').render(MESSAGES)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("source, expected", [
    ("{{ none }}", "None"),
    ("{{ 42 }}{{ 1.5 }}{{ true }}", "421.5True"),
    ("{{ [1, 'a'] }}", "[1, 'a']"),
    ("{{ {'k': 1} }}", "{'k': 1}"),
    ("{{ range(3) | list }}", "[0, 1, 2]"),
    ("{% set d = dict(a=1) %}{{ d.a }}", "1"),
    ("{{ 'ab' * 3 }}{{ ['x'] * 2 }}", "ababab['x', 'x']"),
    ("{{ messages | length }}", "1"),
    ("{{ ('a' * 1000) | length }}", "1000"),
])
def test_non_string_values_render_as_plain_text(source, expected):
    assert ChatTemplate(source).render(MESSAGES) == expected


def test_legitimate_large_inputs_still_render():
    """The size checks count what the caller gave: a long conversation renders in full."""
    big = [{"role": "user", "content": "word " * 100_000}, {"role": "assistant", "content": "x" * 200_000}]
    source = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content | replace('word', 'w') | trim }}"
              "{{ '\\n' }}{% endfor %}{{ messages | map(attribute='content') | join('|') | length }}")
    out = ChatTemplate(source, max_output_chars=1000).render(big)
    assert out.startswith("<|user|>w w ") and out.endswith(str(500_000 + 1 + 200_000))
