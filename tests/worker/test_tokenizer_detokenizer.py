"""Byte tokenizer round trips and ChatML; incremental detokenization and stop strings (tables)."""

from __future__ import annotations

import pytest

from gpu_worker.byte_tokenizer import END_OF_TEXT, IM_END, IM_START, ByteTokenizer
from gpu_worker.detokenizer import IncrementalDetokenizer, StopMatcher

TOK = ByteTokenizer()


@pytest.mark.parametrize("text", ["", "hello", "héllo wörld", "日本語", "emoji 🙂!", "<|im_end|>"])
def test_byte_tokenizer_round_trips(text: str) -> None:
    ids = TOK.encode(text)
    assert len(ids) == len(text.encode())
    assert all(3 <= t < 259 for t in ids)  # user text never yields a special id
    assert TOK.decode(ids) == text


def test_chat_template_is_chatml_with_default_system_line() -> None:
    ids = TOK.apply_chat_template([{"role": "user", "content": "hi"}])
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert TOK.decode(ids) == expected
    assert ids.count(IM_START) == 3 and ids.count(IM_END) == 2
    own = TOK.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "u"}]
    )
    assert TOK.decode(own).startswith("<|im_start|>system\nS<|im_end|>")
    bare = ByteTokenizer(default_system_prompt="").apply_chat_template(
        [{"role": "user", "content": "u"}]
    )
    assert TOK.decode(bare).startswith("<|im_start|>user\n")
    assert TOK.eos_token_ids == {IM_END, END_OF_TEXT}


def _pieces(text: str, cuts: list[int]) -> list[list[int]]:
    ids = TOK.encode(text)
    bounds = [0, *cuts, len(ids)]
    return [ids[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# (text, token-group boundaries, stop strings, emitted per group, stopped, flushed)
DETOK_CASES = [
    ("abc", [1, 2], (), ["a", "b", "c"], False, ""),
    # "é" is 2 bytes: the first byte alone emits nothing, the second completes it.
    ("é!", [1, 2], (), ["", "é", "!"], False, ""),
    ("🙂x", [1, 2, 3, 4], (), ["", "", "", "🙂", "x"], False, ""),
    # A stop spanning tokens: a tail that may begin "low" is held until the next token decides.
    ("hello world", [3, 5, 11], ("low",), ["he", "l", "lo world"], False, ""),
    ("hello world", [3, 5, 11], ("lo w",), ["he", "l", ""], True, ""),
    ("say STOP now", [5, 7, 12], ("STOP",), ["say ", "", ""], True, ""),
    # The earliest of several stops wins; nothing after it is ever emitted.
    ("abcdef", [6], ("de", "bc"), ["a"], True, ""),
    # A held prefix that never completes is released by flush at the end.
    ("the end", [7], ("endless",), ["the "], False, "end"),
]


@pytest.mark.parametrize(("text", "cuts", "stops", "emitted", "stopped", "flushed"), DETOK_CASES)
def test_incremental_detokenizer(
    text: str,
    cuts: list[int],
    stops: tuple[str, ...],
    emitted: list[str],
    stopped: bool,
    flushed: str,
) -> None:
    detok = IncrementalDetokenizer(TOK, stops)
    got = [detok.add(group) for group in _pieces(text, cuts)]
    if stopped:
        got = got[: len(emitted)]
    assert got[: len(emitted)] == emitted
    assert detok.stopped == stopped
    assert detok.flush() == flushed


def test_stop_case_with_completion_after_character() -> None:
    # "xé": after "x", the first byte of "é" is held (incomplete), the second completes "é",
    # which is exactly the stop string: stopped, and "é" is not emitted.
    detok = IncrementalDetokenizer(TOK, ("é",))
    ids = TOK.encode("xé")
    assert detok.add(ids[:1]) == "x"
    assert detok.add(ids[1:2]) == ""
    assert detok.add(ids[2:]) == ""
    assert detok.stopped


@pytest.mark.parametrize(
    ("stops", "feeds", "out", "stopped"),
    [
        ((), ["ab", "cd"], ["ab", "cd"], False),
        (("cd",), ["ab", "c", "d", "e"], ["ab", "", "", ""], True),
        (("cd",), ["ab", "c", "x"], ["ab", "", "cx"], False),
        (("aaab",), ["aa", "aa", "b"], ["", "a", ""], True),
        (("aaab",), ["aa", "aa", "c"], ["", "a", "aaac"], False),
        (("x", "yz"), ["ay", "zx"], ["a", ""], True),
    ],
)
def test_stop_matcher(
    stops: tuple[str, ...], feeds: list[str], out: list[str], stopped: bool
) -> None:
    matcher = StopMatcher(stops)
    assert [matcher.feed(f) for f in feeds] == out
    assert matcher.stopped == stopped


def test_every_split_of_a_text_emits_the_same_prefix() -> None:
    text = "one two stop three"
    ids = TOK.encode(text)
    for cut in range(1, len(ids)):
        detok = IncrementalDetokenizer(TOK, ("stop",))
        emitted = detok.add(ids[:cut]) + detok.add(ids[cut:]) + detok.flush()
        assert emitted == "one two "
        assert detok.stopped
