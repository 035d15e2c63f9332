"""GBNF grammars through llama.cpp's grammar sampler, on the tiny random-weight model: its
output is noise unless constrained, so every output matching is the grammar's doing."""
from __future__ import annotations

import functools
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from pybonsai import Llama, LlamaGrammar

SEEDS = range(30)
# Arithmetic over single digits, bounded so that a completion always fits in max_tokens.
ARITH = r'''
root ::= expr "=" [0-9]{1,3}
expr ::= term (("+" | "-") term){0,3}
term ::= [0-9] | "(" [0-9] ("*" [0-9]){0,2} ")"
'''
_TERM = r"(?:[0-9]|\([0-9](?:\*[0-9]){0,2}\))"
ARITH_RE = re.compile(rf"^{_TERM}(?:[+-]{_TERM}){{0,3}}=[0-9]{{1,3}}$")


@pytest.fixture(scope="module")
def llm(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=256, n_batch=64, n_threads=1) as model:  # tiny model: threads only wait
        yield model


def test_unconstrained_output_is_noise(llm):
    """The premise of these tests: without a grammar the model does not produce the language."""
    texts = [llm.create_completion("1+1", max_tokens=8, seed=s)["choices"][0]["text"] for s in range(5)]
    assert not any(ARITH_RE.match(t) for t in texts), texts


@pytest.mark.parametrize("kind, seeds", [("str", SEEDS), ("LlamaGrammar", range(3))])
def test_every_seed_matches_the_grammar(llm, kind, seeds):
    grammar = ARITH if kind == "str" else LlamaGrammar.from_string(ARITH)
    for seed in seeds:
        out = llm.create_completion("Sum:", max_tokens=40, temperature=1.0, seed=seed, grammar=grammar)
        choice = out["choices"][0]
        assert choice["finish_reason"] == "stop", (seed, choice)
        assert ARITH_RE.match(choice["text"]), (seed, choice["text"])


def test_grammar_in_generate_streaming_and_chat(llm, tmp_path):
    path = tmp_path / "yn.gbnf"
    path.write_text('root ::= ("yes" | "no") "!"\n')
    grammar = LlamaGrammar.from_file(path)
    tokens = []
    for token in llm.generate(llm.tokenize(b"Q:"), seed=3, grammar=grammar):
        if llm.model.is_eog(token):
            break
        tokens.append(token)
        assert len(tokens) < 10
    assert llm.detokenize(tokens) in (b"yes!", b"no!")
    chunks = list(llm.create_completion("Q:", max_tokens=10, seed=4, stream=True, grammar=grammar))
    assert "".join(c["choices"][0]["text"] for c in chunks) in ("yes!", "no!")
    chat = llm.create_chat_completion([{"role": "user", "content": "ok?"}], max_tokens=10, seed=5, grammar=grammar)
    assert chat["choices"][0]["message"]["content"] in ("yes!", "no!")


def test_greedy_with_grammar_picks_the_best_allowed_token(llm):
    """temperature 0 under a grammar = argmax over the allowed tokens (checked on our side)."""
    grammar = 'root ::= [a-e]'
    out = llm.create_completion("Pick:", max_tokens=3, temperature=0, grammar=grammar)["choices"][0]["text"]
    llm.reset()
    llm.eval(llm.tokenize(b"Pick:", add_bos=True, special=True))
    allowed = {t: c for c in "abcde" for t in llm.tokenize(c.encode(), add_bos=False)}
    best = max(allowed, key=lambda t: llm.last_logits[t])
    assert out == allowed[best]


BAD_GRAMMARS = {
    "empty": ("", "empty"),
    "blank": ("   \n", "empty"),
    "undefined rule": ("root ::= foo", "Undefined rule identifier 'foo'"),
    "left recursion": ('root ::= root "a" | "a"', "left recursion"),
    "huge repetition": ('root ::= "a"{100000}', "number of repetitions exceeds sane defaults"),
    "no root": ('start ::= "a"', "does not contain a 'root' symbol"),
    "unterminated class": ("root ::= [a-", "unexpected end of input"),
    "unterminated literal": ('root ::= "abc', "unexpected end of input"),
    "bad escape": (r'root ::= "\q"', "unknown escape"),
    "deep nesting": ("root ::= " + "(" * 5000 + '"a"' + ")" * 5000, "nests parentheses"),
    "NUL": ('root ::= "a\0"', "NUL"),
}


@pytest.mark.parametrize("name", BAD_GRAMMARS)
def test_bad_grammar_is_a_value_error_quoting_the_parser(llm, name):
    text, expected = BAD_GRAMMARS[name]
    with pytest.raises(ValueError, match=re.escape(expected)):
        llm.create_completion("x", max_tokens=4, grammar=text)
    # the model still works afterwards
    assert llm.create_completion("x", max_tokens=2, seed=0)["choices"][0]["finish_reason"] in ("length", "stop")


def test_grammar_that_matches_no_token_is_an_error_not_a_crash(llm):
    # The first token must be <|im_end|>, an end-of-generation token, which a grammar only
    # allows once complete: nothing can be sampled.
    eog = llm.tokenize(b"<|im_end|>", add_bos=False, special=True)[0]
    with pytest.raises(ValueError, match="allows no token"):
        llm.create_completion("x", max_tokens=4, grammar=f'root ::= <[{eog}]> "a"')


def test_hostile_grammars_in_a_subprocess_never_crash(tiny_model_path):
    """Grammars near llama.cpp's asserts: each must end in a Python exception or an output."""
    script = r'''
import sys
from pybonsai import Llama
llm = Llama(sys.argv[1], n_ctx=128, n_threads=1)
grammars = ['root ::= ""', 'root ::= "" | ""', 'root ::= a\na ::= b\nb ::= "x"', 'root ::= [^\x00-\U0010FFFF]',
            'root ::= ("a" | "")*', 'root ::= ("" "")*', 'root ::= [a]{0,2000}', 'root ::= <[151645]>',
            'root ::= <[999999999]>', 'root ::= !<[1]>', 'root ::= [\U0010FFFF]', 'root ::= a\na ::= a',
            'root ::= "a" root?', 'root ::= ( root )', '\n\n', 'root ::= [a-z]*[]',
            'root ::= ((("a"{40}){40}){40}){40}', 'root ::= ("a" | "a" | "a"){0,60}']
for g in grammars:
    try:
        out = llm.create_completion("x", max_tokens=6, seed=1, grammar=g)["choices"][0]
        print("ok", repr(g), repr(out["text"]), out["finish_reason"])
    except (ValueError, RuntimeError) as exc:
        print("err", repr(g), type(exc).__name__, str(exc).splitlines()[0])
print("survived")
'''
    proc = subprocess.run([sys.executable, "-c", script, str(tiny_model_path)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.rstrip().endswith("survived"), proc.stdout


def test_logit_bias_steers_and_validates(llm):
    tokens = llm.tokenize(b"Q:")
    target = llm.tokenize(b" banana", add_bos=False)[0]
    out = llm.create_completion(tokens, max_tokens=3, seed=1, logit_bias={str(target): 100})
    assert llm.tokenize(out["choices"][0]["text"].encode(), add_bos=False) == [target] * 3
    banned = llm.create_completion(tokens, max_tokens=1, temperature=0)["choices"][0]["text"]
    banned_id = llm.tokenize(banned.encode(), add_bos=False)[0]
    out = llm.create_completion(tokens, max_tokens=1, temperature=0, logit_bias={banned_id: -100})
    assert out["choices"][0]["text"] != banned
    for bad, msg in (({-1: 1}, "out of range"), ({llm.n_vocab(): 1}, "out of range"), ({"x": 1}, "token ids"),
                     ({1: float("nan")}, "finite"), ({1: "a"}, "finite")):
        with pytest.raises(ValueError, match=msg):
            llm.create_completion(tokens, max_tokens=1, logit_bias=bad)


def test_logits_processor_and_stopping_criteria(llm):
    from pybonsai import LogitsProcessorList, StoppingCriteriaList
    target = llm.tokenize(b" cat", add_bos=False)[0]
    seen = []

    def only_cat(input_ids, scores):
        seen.append((input_ids.copy(), scores.shape))
        out = np.full_like(scores, -np.inf)
        out[target] = 0.0
        return out

    def stop_after_three(input_ids, logits):
        return int(np.sum(input_ids == target)) >= 3

    prompt = llm.tokenize(b"Say:")
    out = llm.create_completion(prompt, max_tokens=10, seed=2, logits_processor=LogitsProcessorList([only_cat]),
                                stopping_criteria=StoppingCriteriaList([stop_after_three]))
    assert out["choices"][0]["text"] == " cat" * 3 and out["choices"][0]["finish_reason"] == "stop"
    assert list(seen[0][0]) == prompt and seen[0][1] == (llm.n_vocab(),)
    assert list(seen[1][0]) == prompt + [target]
    with pytest.raises(ValueError, match="shape"):
        llm.create_completion(prompt, max_tokens=2, logits_processor=lambda ids, s: s[:10])
    with pytest.raises(ValueError, match="masked every token"):
        llm.create_completion(prompt, max_tokens=2, logits_processor=lambda ids, s: np.full_like(s, -np.inf))


GRAMMAR_MEMORY_PROBE = """
import gc, json, sys
from pybonsai import Llama, LlamaGrammar
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key))
llm = Llama(sys.argv[1], n_ctx=512, n_threads=1, verbose=False)
llm.create_completion("hello", max_tokens=4, temperature=0)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current RSS
before = status("VmRSS:")
out = llm.create_completion("Once upon", max_tokens=20, temperature=0.8, seed=3,  # sampled: full masks
                            grammar=LlamaGrammar.from_string("root ::= [a-z ]+"))
peak = status("VmHWM:")
gc.collect()
print(json.dumps({"before": before, "peak": peak, "after": status("VmRSS:"), "text": out["choices"][0]["text"]}))
"""


@functools.lru_cache(maxsize=None)
def _grammar_memory(model_path) -> dict:
    probe = subprocess.run([sys.executable, "-c", GRAMMAR_MEMORY_PROBE, str(model_path)],
                           capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["text"] and set(seen["text"]) <= set("abcdefghijklmnopqrstuvwxyz ")
    return seen


@pytest.mark.skipif(sys.platform != "linux", reason="/proc and glibc's malloc_trim")
def test_a_grammar_constrained_generation_gives_its_mask_memory_back(tiny_model_path):
    """A full grammar mask over the 152k-token vocabulary allocates and frees many small blocks
    that glibc kept: the process stayed that much larger after the request. The sampler that masked
    returns them when it is freed."""
    seen = _grammar_memory(tiny_model_path)
    assert seen["after"] - seen["before"] < 20, seen


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/clear_refs")
def test_a_full_grammar_mask_needs_little_memory_while_it_runs(tiny_model_path):
    """llama.cpp's grammar allocates ~340 bytes per candidate token while it masks: one call over the
    whole 152k vocabulary raised the peak RSS by ~50 MiB (106 -> 156 MiB here). The sampler masks
    in chunks of 8,192 candidates (the same answer: each candidate is judged alone), so the peak
    stays within a few MiB of the RSS before the request."""
    seen = _grammar_memory(tiny_model_path)
    assert seen["peak"] - seen["before"] < 10, seen


@pytest.mark.parametrize("grammar, kw", [
    ("root ::= [a-z ]+", {}),
    ("root ::= [a-z ]+", {"repeat_penalty": 1.3, "frequency_penalty": 0.5, "logit_bias": {500: -2.0}}),
    (ARITH, {}),
    ('root ::= "{" [a-z]+ ":" [0-9]+ "}"', {"presence_penalty": 0.4}),
])
def test_greedy_grammar_shortcut_picks_what_the_full_mask_picks(tiny_model_path, monkeypatch, grammar, kw):
    """Greedy with a grammar masks the top logits before the whole vocabulary
    (Sampler.set_greedy_shortcut): the same tokens as masking everything, prompt after prompt."""
    import pybonsai.sampling as sampling

    def texts(llm):
        g = LlamaGrammar.from_string(grammar)
        return [llm.create_completion(f"Case {i}: ", max_tokens=16, temperature=0, grammar=g, **kw)
                ["choices"][0]["text"] for i in range(12)]

    with Llama(tiny_model_path, n_ctx=256, n_threads=1, verbose=False) as llm:
        assert sampling._never_raises(sampling.SamplingParams(temperature=0, **{
            k: v for k, v in kw.items() if k != "logit_bias"}), kw.get("logit_bias"))
        shortcut = texts(llm)
        monkeypatch.setattr(sampling, "_never_raises", lambda params, logit_bias: False)
        full = texts(llm)
    assert shortcut == full
    assert all(shortcut)


def test_greedy_grammar_shortcut_only_where_no_stage_raises_a_logit():
    from pybonsai.sampling import SamplingParams, _never_raises

    assert _never_raises(SamplingParams(temperature=0), None)
    assert _never_raises(SamplingParams(temperature=0, repeat_penalty=1.2), {3: -100.0})
    assert not _never_raises(SamplingParams(temperature=0, repeat_penalty=0.9), None)
    assert not _never_raises(SamplingParams(temperature=0, presence_penalty=-0.5), None)
    assert not _never_raises(SamplingParams(temperature=0), {3: 0.5})
