"""llama-cpp-python's Llama API beyond generation, with its semantics: the seed chain, set_seed,
token_nl, the model-kind flags, vocab_only contexts, SentencePiece detokenization, the evaluated
token/logit views, the tokenizer object, logits_to_logprobs, MinTokensLogitsProcessor,
json_schema_to_gbnf and the prompt-lookup drafter."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from pybonsai import Llama, LlamaTokenizer, MinTokensLogitsProcessor, json_schema_to_gbnf
from pybonsai.llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding

SAMPLE = dict(max_tokens=6, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)


def _draw(llm, **kw):
    return llm.create_completion("Pick a number", **SAMPLE, **kw)["choices"][0]["text"]


@pytest.fixture(scope="module")
def spm_vocab(llama_cpp_dir):
    with Llama(llama_cpp_dir / "models" / "ggml-vocab-llama-spm.gguf", vocab_only=True) as llm:
        yield llm


def test_seed_chain_reproducible_and_moving(tiny_model_path):
    def draws(**kw):
        with Llama(tiny_model_path, n_ctx=128, **kw) as llm:
            return [_draw(llm) for _ in range(4)]
    a, b = draws(seed=1337), draws(seed=1337)
    assert a == b                       # the same Llama(seed=) and calls: the same draws
    assert len(set(a)) > 1              # successive completions move along the chain
    assert draws(seed=7) != a
    assert draws() == draws()           # the default seed is a chain too (as llama-cpp-python)
    assert draws(seed=0) == draws()     # llama-cpp-python treats seed=0 as the default


def test_seed_chain_steps_like_llama_cpp_python(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=128, seed=1337) as llm:
        _draw(llm)
        assert llm.seed == random.Random(1337).randint(0, 2**32) & 0xFFFFFFFF
        first = llm.seed
        _draw(llm)
        assert llm.seed == random.Random(first).randint(0, 2**32) & 0xFFFFFFFF
        _draw(llm, seed=42)             # seed= sets the chain
        assert llm.seed == 42


def test_set_seed_and_load_state_replay_the_draws(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=128) as llm:   # the default seed
        llm.set_seed(1337)
        saved = llm.save_state()
        n1, n2 = _draw(llm), _draw(llm)
        llm.load_state(saved)
        n3 = _draw(llm)
        assert n1 != n2 and n1 == n3
        llm.set_seed(1337)
        assert _draw(llm) == n1
        with pytest.raises(ValueError):
            llm.set_seed(-1)
        with pytest.raises(ValueError):
            llm.set_seed(2**32)


def test_token_nl_and_model_kind(tiny_model_path, tiny_hybrid_model_path, spm_vocab):
    assert spm_vocab.token_nl() == 13                     # <0x0A> in Llama's SentencePiece vocabulary
    assert spm_vocab.detokenize([spm_vocab.token_nl()]) == b"\n"
    with Llama(tiny_model_path, n_ctx=64) as llm:
        assert llm.detokenize([llm.token_nl()]) == b"\n"
        assert (llm._is_recurrent, llm._is_hybrid) == (False, False)
    with Llama(tiny_hybrid_model_path, n_ctx=64) as llm:
        assert (llm._is_recurrent, llm._is_hybrid) == (False, True)


def test_vocab_only_has_a_context_that_refuses_to_evaluate(spm_vocab):
    assert spm_vocab._ctx.ctx != 0 and spm_vocab.n_ctx() == 512
    with pytest.raises(ValueError, match="vocab_only"):
        spm_vocab.eval([1, 2])


def test_sentencepiece_detokenize_as_llama_cpp_python(spm_vocab):
    with_bos = spm_vocab.tokenize(b"Hello World")
    assert with_bos == [1, 15043, 2787]
    assert spm_vocab.detokenize(with_bos) == b"Hello World"   # BOS: the word-start space goes
    assert spm_vocab.detokenize(with_bos[1:]) == b" Hello World"  # no BOS: it stays
    assert spm_vocab.detokenize([1]) == b""
    assert spm_vocab.detokenize([1, 2], special=True) == b"<s></s>"


def test_eval_views_and_logprobs(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=64, logits_all=True) as llm:
        tokens = llm.tokenize(b"The quick brown fox")
        llm.eval(tokens)
        assert list(llm.eval_tokens) == tokens
        rows = list(llm.eval_logits)
        assert len(rows) == len(tokens) and np.allclose(rows[-1], llm.scores[len(tokens) - 1])
        lp = Llama.logits_to_logprobs(llm.scores[:len(tokens)])
        assert lp.dtype == np.float32 and np.allclose(np.exp(lp).sum(axis=-1), 1.0, atol=1e-4)
        shifted = llm.scores[:len(tokens)] - llm.scores[:len(tokens)].max(axis=-1, keepdims=True)
        want = shifted - np.log(np.exp(shifted.astype(np.float64)).sum(axis=-1, keepdims=True))
        assert np.allclose(lp, want, atol=1e-4)
    with Llama(tiny_model_path, n_ctx=64) as llm:
        llm.eval(llm.tokenize(b"Hi"))
        assert len(llm.eval_logits) == 1 and np.allclose(llm.eval_logits[0], llm.last_logits)
    assert np.all(Llama.logits_to_logprobs(np.array([-np.inf, 0.0, 0.0]))[1:] == np.float32(np.log(0.5)))


def test_tokenizer_objects(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=64) as llm:
        tok = llm.tokenizer()
        assert tok.tokenize(b"<|im_start|>hi") == llm.tokenize(b"<|im_start|>hi", special=True)  # special=True default
        assert tok.decode(tok.encode("hello world")) == "hello world"
        standalone = LlamaTokenizer.from_ggml_file(str(tiny_model_path))
        assert standalone.encode("hello") == tok.encode("hello")


def test_min_tokens_logits_processor(tiny_model_path):
    with Llama(tiny_model_path, n_ctx=128) as llm:
        eos = llm.token_eos()
        boost = lambda ids, scores: np.where(np.arange(scores.size) == eos, 1e4, scores).astype(np.float32)  # noqa: E731
        plain = llm.create_completion("Hi", max_tokens=8, temperature=0, logits_processor=[boost])
        assert plain["usage"]["completion_tokens"] == 0           # EOS at once
        held = llm.create_completion("Hi", max_tokens=8, temperature=0,
                                     logits_processor=[boost, MinTokensLogitsProcessor(3, eos)])
        assert held["usage"]["completion_tokens"] == 3            # EOS allowed from the 4th token


def test_json_schema_to_gbnf_orders_properties():
    schema = json.dumps({"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "string"}},
                         "required": ["a", "b"]})
    root = lambda g: next(line for line in g.splitlines() if line.startswith("root ::="))  # noqa: E731
    assert root(json_schema_to_gbnf(schema)).index("b-kv") < root(json_schema_to_gbnf(schema)).index("a-kv")
    ordered = root(json_schema_to_gbnf(schema, prop_order=["a"]))
    assert ordered.index("a-kv") < ordered.index("b-kv")
    with pytest.raises(ValueError):
        json_schema_to_gbnf("{not json")


def test_prompt_lookup_drafter():
    find = LlamaPromptLookupDecoding.find_candidate_pred_tokens
    assert find(np.array([1, 2, 3, 1, 2, 3, 1, 2, 3]), 3, 2).tolist() == [1, 2]
    assert find(np.array([1, 2, 3, 4]), 3, 2).tolist() == []
    assert find(np.array([7, 1, 2, 9, 9, 1, 2]), 2, 5).tolist() == [9, 9, 1, 2]   # earliest occurrence
    assert find(np.array([5, 6, 5, 8, 6]), 2, 3).tolist() == [5, 8, 6]            # falls back to 1-grams
    assert find(np.array([4]), 2, 3).tolist() == []
    drafter = LlamaPromptLookupDecoding(max_ngram_size=2, num_pred_tokens=1)
    assert isinstance(drafter, LlamaDraftModel) and drafter(np.array([1, 2, 1])).tolist() == [2]
    with pytest.raises(ValueError):
        LlamaPromptLookupDecoding(num_pred_tokens=0)
