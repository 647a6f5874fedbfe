"""Numerals without digits ("WWII", "World War I", "the Second World War") read as digits."""

from __future__ import annotations

import pytest

from policies.semantic.guard import Guard
from policies.semantic.numerals import read_numerals, roman_value
from policies.semantic.pair_features import edit_of, prompt_terms


@pytest.mark.parametrize(
    ("numeral", "value"), [("II", 2), ("iv", 4), ("IX", 9), ("XIV", 14), ("XXXIX", 39)]
)
def test_roman_values(numeral: str, value: int) -> None:
    assert roman_value(numeral) == value


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("In what year did WWII officially finish?", {"2"}),
        ("when did ww1 end", {"1"}),
        ("What year did World War I end?", {"1"}),
        ("What year did World War II end?", {"2"}),
        ("In which year did the Second World War come to an end?", {"2"}),
        ("When did World War Two end?", {"2"}),
        ("Summarise part III of the report", {"3"}),
        ("What did Henry VIII do", {"8"}),
        # Superscripts are exponents, a run of them one number.
        ("simplify 3⁴ times 3²", {"3", "^4", "^2"}),
        ("expand (x + 1)¹⁰", {"1", "^10"}),
        # The pronoun, ordinals outside a sequence, and shouted words stay words.
        ("Can I use Python I think", set()),
        ("who was the first vice president", set()),
        ("HOW DO I MIX COLOURS", set()),
    ],
)
def test_numbers_read_from_words_and_numerals(text: str, numbers: set[str]) -> None:
    assert set(prompt_terms(text).numbers) == numbers


def test_read_numerals_leaves_other_text_alone() -> None:
    text = "How do I print without a newline in Python 3?"
    assert read_numerals(text) == text


def test_world_war_one_and_two_are_vetoed_whatever_the_spelling() -> None:
    guard = Guard("rules")
    two = ["In what year did WWII officially finish?", "When did World War Two end?"]
    one = ["when did ww1 end", "What year did World War I end?"]
    for a in two:
        for b in one:
            ta, tb = prompt_terms(a), prompt_terms(b)
            assert guard.veto(ta, tb, edit_of(ta, tb)), (a, b)
    same = prompt_terms("What year did World War II end?"), prompt_terms("when did ww2 end")
    assert not guard.veto(*same, edit_of(*same))
