"""Prompt-prefix reuse in the Engine (engine_prefix): a request starts from the longest prefix a
retained, running or RAM-saved sequence holds, and its output does not depend on that."""
from __future__ import annotations

import threading

import pytest

from pybonsai import Engine
from pybonsai.engine_prefix import MIN_SAVE_TOKENS, HostPromptCache, common_prefix, plan_prefix

WORDS = [f"w{i}" for i in range(97)]


def _text(result) -> str:
    return result["choices"][0]["text"]


def _words(n: int, seed: int) -> str:
    return " ".join(WORDS[(seed * 31 + j * 7) % 97] for j in range(n))


# -- the policy alone -----------------------------------------------------------------------------

def test_common_prefix():
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2, 3], [1, 2, 3]) == 3
    a = list(range(300))
    b = a[:200] + [-1] + a[201:]
    assert common_prefix(a, b) == 200 and common_prefix(b, a) == 200
    assert common_prefix(a, a[:150]) == 150
    assert common_prefix([5] + a, a) == 0


def test_plan_prefers_the_matching_slot_and_keeps_one_token_to_decode():
    prompt = list(range(100))
    free = [(0, [], float("-inf")), (1, list(range(80)) + [7, 7], 5.0), (2, [9] * 50, 1.0)]
    p = plan_prefix(prompt, free, [], (), reuse=True, recurrent=False, saving=False)
    assert (p.dest, p.keep, p.source, p.entry) == (0, 80, 1, None)  # shared into the empty slot: nothing lost
    p = plan_prefix(prompt, free[1:], [], (), reuse=True, recurrent=False, saving=False)
    assert (p.dest, p.keep, p.source) == (1, 80, None)  # no empty slot: cut back (2 of 82 dropped)
    held = list(range(80)) + [7] * 100
    p = plan_prefix(prompt, [(0, [], 0.0), (1, held, 5.0)], [], (), reuse=True, recurrent=False, saving=False)
    assert (p.dest, p.keep, p.source) == (0, 80, 1)  # 100 would be dropped: shared into the empty slot
    p = plan_prefix(prompt, [(0, [3] * 150, 0.0), (1, held, 5.0)], [], (), reuse=True, recurrent=False, saving=False)
    assert (p.dest, p.keep, p.source) == (1, 80, None)  # the other slot holds more than that
    # the whole prompt held: all but the last token reused
    p = plan_prefix(prompt, [(3, prompt + [1, 2], 0.0)], [], (), reuse=True, recurrent=False, saving=False)
    assert (p.dest, p.keep) == (3, 99)
    # reuse off: the cheapest slot (empty first, then least recently used), nothing kept
    p = plan_prefix(prompt, free, [], (), reuse=False, recurrent=False, saving=False)
    assert (p.dest, p.keep) == (0, 0)
    p = plan_prefix(prompt, free[1:], [], (), reuse=False, recurrent=False, saving=True)
    assert (p.dest, p.keep, p.save_dest) == (2, 0, False)  # 50 tokens: under MIN_SAVE_TOKENS


def test_plan_shares_a_short_prefix_instead_of_dropping_a_long_one():
    system = list(range(20))
    prompt = system + [500 + i for i in range(30)]
    long_chat = system + [900 + i for i in range(400)]
    free = [(0, long_chat, 2.0), (1, [], float("-inf"))]
    p = plan_prefix(prompt, free, [], (), reuse=True, recurrent=False, saving=True)
    assert (p.dest, p.keep, p.source, p.save_dest) == (1, 20, 0, False)
    # from a running sequence too
    p = plan_prefix(prompt, [(1, [], 0.0)], [(0, long_chat)], (), reuse=True, recurrent=False, saving=False)
    assert (p.dest, p.keep, p.source) == (1, 20, 0)
    # only one free slot: it is cut back (its dropped tokens saved when a RAM cache is on)
    p = plan_prefix(prompt, free[:1], [], (), reuse=True, recurrent=False, saving=True)
    assert (p.dest, p.keep, p.source, p.save_dest) == (0, 20, None, True)


def test_plan_recurrent_reuses_only_a_whole_state():
    held = list(range(40))
    free = [(0, held, 1.0), (1, [], float("-inf"))]
    p = plan_prefix(held + [1, 2, 3], free, [], (), reuse=True, recurrent=True, saving=False)
    assert (p.dest, p.keep) == (0, 40)
    p = plan_prefix(held[:30] + [1, 2, 3], free, [], (), reuse=True, recurrent=True, saving=False)
    assert p.keep == 0 and p.dest == 1
    p = plan_prefix(held[:30] + [1], [(1, [], 0.0)], [(0, held)], (), reuse=True, recurrent=True, saving=False)
    assert p.keep == 0 and p.source is None  # no sharing of recurrent states


def test_host_cache_bounds_and_supersedes():
    c = HostPromptCache(100)
    assert c.put((1, 2), b"x" * 40) and c.put((3, 4), b"y" * 40)
    assert c.put((5,), b"z" * 40)  # over 100 bytes: the least recently used goes
    assert [e.tokens for e in c.entries()] == [(3, 4), (5,)] and c.bytes == 80 and c.dropped == 1
    assert c.put((3, 4, 5), b"w" * 30)  # extends (3, 4): replaces it
    assert [e.tokens for e in c.entries()] == [(5,), (3, 4, 5)] and c.bytes == 70
    assert c.put((3,), b"v" * 10) and len(c) == 2  # already covered by (3, 4, 5)
    assert not c.put((9,), b"u" * 101)
    p = plan_prefix([3, 4, 5, 6], [(0, [], 0.0)], [], c.entries(), reuse=True, recurrent=False, saving=True)
    assert p.entry is not None and p.entry.tokens == (3, 4, 5) and p.keep == 3
    with pytest.raises(ValueError):
        HostPromptCache(-5)


# -- the engine --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plain(tiny_model_path):
    """The same engine with prefix reuse off: every request prefills its whole prompt."""
    with Engine(str(tiny_model_path), n_parallel=4, n_ctx=4096, n_threads=2, cache_prompt=False) as e:
        yield e


def _chat_turns(engine: Engine, n_turns: int, seed: int) -> list[str]:
    """A growing conversation as completions: each turn's prompt is the previous prompt, its reply
    and a new message."""
    prompt, replies = "", []
    for turn in range(n_turns):
        prompt += f"\nUser {seed}.{turn}: {_words(25, seed + turn)}\nBot:"
        reply = _text(engine.create_completion(prompt, max_tokens=12, temperature=0))
        replies.append(reply)
        prompt += reply
    return replies


def test_multi_turn_reuses_the_history_with_the_same_text(tiny_model_path, plain):
    with Engine(str(tiny_model_path), n_parallel=4, n_ctx=4096, n_threads=2) as e:
        got = _chat_turns(e, 4, seed=1)
        reused, prefilled = e.stats.prefix_reused_tokens, e.stats.prompt_tokens
        slots = e.slots_info()
    assert got == _chat_turns(plain, 4, seed=1)
    assert plain.stats.prefix_reused_tokens == 0
    # turns 2-4 found the earlier turns' tokens: most of the prompt tokens were not decoded again
    assert reused > prefilled
    # the last turn's sequence is retained: its prompt and all but its last reply token
    assert not any(s["is_processing"] for s in slots)
    assert max(s["n_cached_tokens"] for s in slots) >= reused // 3


def test_interleaved_conversations_batched(tiny_model_path, plain):
    """Four conversations at once, each turn reusing its own history from whichever sequence
    holds it: the same texts as one at a time without reuse."""
    want = [_chat_turns(plain, 3, seed=10 * k) for k in range(4)]
    out = [None] * 4
    with Engine(str(tiny_model_path), n_parallel=4, n_ctx=4096, n_threads=2) as e:
        threads = [threading.Thread(target=lambda k=k: out.__setitem__(k, _chat_turns(e, 3, seed=10 * k)))
                   for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert e.stats.prefix_reused_tokens > 0
    assert out == want


def test_shared_system_prompt_and_cache_prompt_false(tiny_model_path, plain):
    system = "System: " + _words(120, 3) + "\n"
    # user parts long enough that cutting one back would drop more than MIN_SAVE_TOKENS: each
    # request shares the system prompt's cells into a slot of its own (seq_cp) instead
    prompts = [system + f"User: {_words(60, k)}\nBot:" for k in range(3)]
    want = [_text(plain.create_completion(p, max_tokens=10, temperature=0)) for p in prompts]
    with Engine(str(tiny_model_path), n_parallel=3, n_ctx=3072, n_threads=2) as e:
        first = _text(e.create_completion(prompts[0], max_tokens=10, temperature=0))
        before = e.stats.prefix_reused_tokens
        rest = [_text(e.create_completion(p, max_tokens=10, temperature=0)) for p in prompts[1:]]
        shared = e.stats.prefix_reused_tokens - before
        # a request may refuse the cache: it prefills everything
        n0 = e.stats.prompt_tokens
        again = e.completion_job(prompts[2], max_tokens=10, temperature=0)
        again.cache_prompt = False
        h = e.submit(again)
        no_cache = "".join(s.text for s in h.steps())
        assert e.stats.prompt_tokens - n0 == len(again.prompt_tokens)
        held = sorted(s["n_cached_tokens"] for s in e.slots_info())
    assert [first, *rest] == want and no_cache == want[2]
    n_system = len(plain.llm.tokenize(system.encode(), add_bos=True)) - 2  # (the last word may merge)
    assert shared >= 2 * n_system
    assert all(n > n_system for n in held)  # each prompt kept in its own sequence, the system part shared


def test_ram_cache_restores_an_evicted_prefix(tiny_model_path, plain):
    a = "Chat A: " + _words(150, 5) + "\nBot:"
    b = "Chat B: " + _words(150, 6) + "\nBot:"
    a2 = a + " and then" + _words(10, 7)
    want = [_text(plain.create_completion(p, max_tokens=8, temperature=0)) for p in (a, b, a2)]
    with Engine(str(tiny_model_path), n_parallel=1, n_ctx=1024, n_threads=2, cache_ram=16) as e:
        got = [_text(e.create_completion(p, max_tokens=8, temperature=0)) for p in (a, b)]
        saved, restored, held = e.saved_counts
        assert (saved, restored) == (1, 0) and held > 0  # A's state went to RAM when B took the sequence
        reused = e.stats.prefix_reused_tokens
        got.append(_text(e.create_completion(a2, max_tokens=8, temperature=0)))
        assert e.saved_counts[:2] == (2, 1)  # B saved in turn, A restored
        assert e.stats.prefix_reused_tokens - reused >= len(e.llm.tokenize(a.encode())) - 2
    assert got == want


def test_ram_cache_off_by_default_and_checked(tiny_model_path):
    with pytest.raises(ValueError, match="cache_ram"):
        Engine(str(tiny_model_path), cache_ram=-2)
    assert MIN_SAVE_TOKENS > 1


def test_hybrid_reuses_a_whole_state_only(tiny_hybrid_model_path):
    """qwen35 (Gated DeltaNet layers): a prompt that extends everything a sequence holds continues
    from its state; one that diverges inside it starts from zero; the texts match no reuse."""
    base = "Story: " + _words(40, 8)
    prompts = [base, base + " more " + _words(8, 9), base[:-20] + " other " + _words(8, 4)]

    def run(**kw):
        with Engine(str(tiny_hybrid_model_path), n_parallel=1, n_ctx=1024, n_threads=2, **kw) as e:
            texts, reused = [], []
            for i, p in enumerate(prompts):
                before = e.stats.prefix_reused_tokens
                # max_tokens=1: the sequence then holds exactly the prompt (the sampled token is not decoded)
                texts.append(_text(e.create_completion(p, max_tokens=1 if i == 0 else 6, temperature=0)))
                reused.append(e.stats.prefix_reused_tokens - before)
            return texts, reused

    texts, reused = run()
    plain_texts, plain_reused = run(cache_prompt=False)
    assert texts == plain_texts and plain_reused == [0, 0, 0]
    assert reused[1] > 40 and reused[2] == 0
