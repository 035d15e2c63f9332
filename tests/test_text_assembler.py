"""TextAssembler: streamed text equals the non-streamed result, UTF-8 and stop strings included."""
from __future__ import annotations

import random
from typing import Sequence

import pytest

from pybonsai.text import TextAssembler


def reference(data: bytes, stops: Sequence[str]) -> str:
    """The non-streamed result: decode everything, cut at the earliest stop string."""
    text = data.decode("utf-8", errors="replace")
    cut = min([i for i in (text.find(s) for s in stops if s) if i != -1], default=len(text))
    return text[:cut]


def stream(pieces: Sequence[bytes], stops: Sequence[str] = ()) -> tuple[list[str], TextAssembler]:
    """Push pieces until stopped; return every returned chunk (finish() last) and the assembler."""
    assembler = TextAssembler(stops)
    out = []
    for piece in pieces:
        out.append(assembler.push(piece))
        if assembler.stopped:
            break
    out.append(assembler.finish())
    return out, assembler


TEXT = "héllo 🦙 世界"


def test_no_stop_strings_emits_immediately():
    assembler = TextAssembler()
    assert assembler.push(b"Hello") == "Hello"
    assert assembler.push(b", world") == ", world"
    assert assembler.finish() == ""
    assert assembler.text == "Hello, world"
    assert not assembler.stopped and assembler.stop_reason is None and assembler.matched_stop is None


def test_multibyte_one_byte_at_a_time():
    data = TEXT.encode("utf-8")
    assembler = TextAssembler()
    chunks = [assembler.push(data[i:i + 1]) for i in range(len(data))]
    assert "".join(chunks) + assembler.finish() == TEXT
    assert all("\ufffd" not in c for c in chunks)
    # A character is returned by the push that completes it, never earlier or in halves.
    assert chunks[:3] == ["h", "", "é"]


@pytest.mark.parametrize("split", range(len(TEXT.encode("utf-8")) + 1))
def test_multibyte_split_at_every_byte_position(split):
    data = TEXT.encode("utf-8")
    out, assembler = stream([data[:split], data[split:]])
    assert "".join(out) == TEXT == assembler.text


def test_stop_string_spanning_pieces():
    out, assembler = stream([b"Hello <", b"/s", b"> more", b"never seen"], ["</s>"])
    assert out == ["Hello ", "", "", ""]
    assert assembler.stopped and assembler.stop_reason == "stop" and assembler.matched_stop == "</s>"
    assert assembler.text == "Hello "

    assembler = TextAssembler(["</s>"])
    assert assembler.push(b"</s>tail") == ""
    assert assembler.push(b"after") == "" and assembler.finish() == ""


def test_held_prefix_released_when_it_does_not_become_a_stop():
    assembler = TextAssembler(["</s>"])
    assert assembler.push(b"a<") == "a"
    assert assembler.held == "<"
    assert assembler.push(b"/") == ""
    assert assembler.push(b"x") == "</x"
    assert assembler.push(b"<") == ""
    assert assembler.finish() == "<"
    assert assembler.text == "a</x<" and not assembler.stopped


def test_stop_at_the_very_start():
    out, assembler = stream([b"</s>", b"text"], ["</s>"])
    assert out == ["", ""] and assembler.text == "" and assembler.stopped


def test_stop_inside_one_piece_keeps_text_before_it():
    out, assembler = stream([b"one two STOP three"], ["STOP"])
    assert "".join(out) == "one two " and assembler.matched_stop == "STOP"


def test_overlapping_stop_candidates_cut_at_the_same_place():
    out, assembler = stream([b"xa", b"b", b"cd"], ["abc", "ab"])
    assert "".join(out) == "x"
    assert assembler.matched_stop == "ab"  # complete first; both start at the same index


def test_earliest_stop_wins_among_several():
    out, assembler = stream([b"hello world"], ["world", "lo"])
    assert "".join(out) == "hel" and assembler.matched_stop == "lo"


def test_longer_stop_starting_earlier_beats_a_complete_later_one():
    # "bc" is complete after "abc", but "abcd" (starting earlier) may still complete.
    assembler = TextAssembler(["abcd", "bc"])
    assert assembler.push(b"abc") == ""
    assert not assembler.stopped
    assert assembler.push(b"d") == ""
    assert assembler.stopped and assembler.matched_stop == "abcd" and assembler.text == ""

    assembler = TextAssembler(["abcd", "bc"])
    assert assembler.push(b"abc") + assembler.push(b"x") == "a"
    assert assembler.stopped and assembler.matched_stop == "bc"

    assembler = TextAssembler(["abcd", "bc"])
    assert assembler.push(b"abc") + assembler.finish() == "a"
    assert assembler.stopped and assembler.matched_stop == "bc"


def test_stop_string_with_multibyte_characters_split_across_pieces():
    data = "价格：世界和平".encode("utf-8")
    pieces = [data[i:i + 1] for i in range(len(data))]
    out, assembler = stream(pieces, ["世界"])
    assert "".join(out) == "价格：" and assembler.matched_stop == "世界"


def test_invalid_bytes_become_replacement_without_losing_the_rest():
    out, _ = stream([b"ab\xff", b"cd", b"\x80", b"\xc3\xa9"])
    assert "".join(out) == "ab\ufffdcd\ufffdé"
    out, _ = stream([b"x\xe4\xb8", b"y"])  # a truncated 3-byte sequence, then ASCII
    assert "".join(out) == "x\ufffdy"


def test_finish_turns_an_incomplete_tail_into_replacement():
    assembler = TextAssembler(["zz"])
    assert assembler.push(b"ok \xf0\x9f") == "ok "
    assert assembler.finish() == "\ufffd"
    assert assembler.text == "ok \ufffd"


def test_stop_argument_forms():
    assert TextAssembler("</s>").stop == ("</s>",)
    assert TextAssembler(None).stop == ()
    assert TextAssembler(["", "a", "a"]).stop == ("a",)  # empty strings ignored, duplicates merged
    with pytest.raises(TypeError):
        TextAssembler([b"bytes"])


def test_misuse_is_reported():
    assembler = TextAssembler()
    with pytest.raises(TypeError):
        assembler.push("not bytes")  # type: ignore[arg-type]
    assembler.finish()
    assert assembler.finish() == ""
    with pytest.raises(RuntimeError):
        assembler.push(b"late")


ALPHABET = ["a", "b", "c", "<", "/", ">", " ", "é", "🦙", "世"]


@pytest.mark.parametrize("seed", range(20))
def test_streamed_equals_non_streamed_over_random_chunkings(seed):
    rng = random.Random(seed)
    for _ in range(100):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
        data = bytearray(text.encode("utf-8"))
        for _ in range(rng.randint(0, 2)):  # sometimes corrupt the stream
            data.insert(rng.randint(0, len(data)), rng.choice([0xFF, 0x80, 0xE4, 0xC3]))
        stops = ["".join(rng.choice(ALPHABET[:7] + ["é"]) for _ in range(rng.randint(1, 4)))
                 for _ in range(rng.randint(0, 3))]
        pieces, i = [], 0
        while i < len(data):
            n = rng.randint(1, 6)
            pieces.append(bytes(data[i:i + n]))
            i += n
        assembler = TextAssembler(stops)
        out = []
        for piece in pieces:
            out.append(assembler.push(piece))
            # Holding back is bounded by the longest stop string: linear total work.
            assert len(assembler.held) < max((len(s) for s in stops), default=1)
            if assembler.stopped:
                break
        out.append(assembler.finish())
        expected = reference(bytes(data), stops)
        assert "".join(out) == expected == assembler.text, (text, stops, pieces)
        assert assembler.stopped == (len(expected) < len(bytes(data).decode("utf-8", "replace")))


def test_many_small_pushes_stay_fast():
    assembler = TextAssembler(["</s>", "<|im_end|>"])
    for _ in range(50_000):
        assembler.push(b"<x")
    assert assembler.finish() == ""
    assert assembler.text == "<x" * 50_000
