"""Operators (policies/semantic/operators.py): two prompts that differ only in an operator are
different questions, for the whole closed class (arithmetic, comparison, logical / bitwise,
shift, assignment, shell redirection), symbols or words; paraphrases that say the same
operators, or one side naming none, are not vetoed. Prompts written for this test."""

from __future__ import annotations

import pytest

from gateway.semantic.cache import shipped_guard_weights
from policies.semantic.guard import Guard, GuardModel
from policies.semantic.operators import operator_changed, operators
from policies.semantic.pair_features import prompt_terms


def tokens(text: str) -> tuple[str, ...]:
    return prompt_terms(text).tokens


DIFFERENT = [
    ("in python what is the result of 9 & 5", "in python what is the result of 9 | 5"),
    ("what does a != b mean in go", "what does a == b mean in go"),
    ("php: difference when I use == here", "php: difference when I use === here"),
    ("what does >> do in a zsh command", "what does > do in a zsh command"),
    ("java: what does x << 3 evaluate to", "java: what does x >> 3 evaluate to"),
    ("if (count >= 10) in C#", "if (count > 10) in C#"),
    ("lua: why does x = 4 differ", "lua: why does x == 4 differ"),
    ("evaluate 2/3 × 3/4", "evaluate 2/3 ÷ 3/4"),
    ("compute 81 mod 7", "compute 81 / 7"),
    ("git add . && git commit in one line", "git add . || git commit in one line"),
    ("what is 6 xor 3 in binary", "what is 6 bitwise or 3 in binary"),
    ("list ints greater than 40 in numpy", "numpy ints less than 40"),
    ("y -= 2 in python", "y += 2 in python"),
    ("simplify 4x − 9 = 3", "simplify 4x + 9 = 3"),
    ("what is 2/5 times 3/7", "what is 2/5 divided by 3/7"),
    ("multiply two fifths by three sevenths", "2/5 ÷ 3/7"),
    ("ruby: what does the double equals do", "ruby: what does the triple equals do"),
    ("strict equality in typescript", "what is == in typescript"),
]

SAME = [
    ("evaluate 2/3 × 3/4", "what is two thirds times three quarters"),
    ("compute 81 mod 7", "81 % 7 = ?"),
    ("what does >> do in a zsh command", "in zsh, `echo hey >> log.txt`: what does the >> do?"),
    ("what is 6 xor 3 in binary", "6 ^ 3 in binary"),
    ("find the roots of t^2 + 3t + 2", "solve t² + 3t + 2 = 0"),
    ("153 x 11 = ?", "what is 153 times 11"),
    ("list ints greater than 40 in numpy", "numpy: select ints > 40"),
    ("R&D budget of a startup", "research and development budget for a startup"),
    ("15% of 240", "what is 15 percent of 240"),
    ("tab-separated file to csv in pandas", "pandas convert a tsv to a comma-separated file"),
    ("what is 7 factorial!", "Compute 7 factorial"),
    ("Bob & Alice -> who pays first", "who pays first, Bob or Alice"),
    ("what is 58 mod 9", "the remainder when 58 is divided by 9"),
    ("58 % 9 = ?", "remainder of 58 divided by 9"),
    ("sum of the squares of 1-30", "add up x squared for x between 1 and 30"),
    ("how to add a column to a pandas frame", "pandas: df['c'] = df['a'] + df['b']"),
    ("how many times does 7 fit into 91", "91 / 7"),
    ("add 2/5 and 3/7", "2/5 + 3/7 = ?"),
]


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_a_changed_operator_is_another_question(a: str, b: str) -> None:
    assert operator_changed(tokens(a), tokens(b)) and operator_changed(tokens(b), tokens(a))


@pytest.mark.parametrize(("a", "b"), SAME)
def test_the_same_operators_said_otherwise_are_not_a_change(a: str, b: str) -> None:
    assert not operator_changed(tokens(a), tokens(b))
    assert not operator_changed(tokens(b), tokens(a))


def test_operators_are_read_as_canonical_runs() -> None:
    assert operators(tokens("a === b")) == {"===": 1}
    assert operators(tokens("x>=-1")) == {">=": 1}  # the minus is a sign
    assert operators(tokens("2 × 3 ÷ 4 − 1 ≠ 0")) == {"*": 1, "/": 1, "-": 1, "!=": 1}
    assert operators(tokens("numbers greater than or equal to 10")) == {">=": 1}
    assert operators(tokens("right shift by two, then shift left")) == {">>": 1, "<<": 1}
    # Not operators: arrows, an exclamation, "about", hyphens, a percent sign, C++.
    assert operators(tokens("Hi! ~5 min walk, seattle -> nyc, 30% off C++ e-books")) == {}


def test_the_guard_with_operator_class_refuses_a_pair_that_differs_only_in_an_operator() -> None:
    # Both sides have the same content words, so the default checks serve this pair
    # outright, without any model; `operator_class` (a session-6 option) refuses it.
    model = GuardModel.from_json(shipped_guard_weights())
    guard = Guard("learned", model, contrast_checks=("operator_class",))
    a, b = prompt_terms("what does a & b do in C"), prompt_terms("what does a ^ b do in C")
    assert a.content == b.content
    assert guard.probability(0.97, a, b) == 0.0
    assert Guard("learned", model, contrast_checks=("operator",)).probability(0.97, a, b) == 1.0
    same = prompt_terms("in C, what does a & b do")
    assert guard.probability(0.97, a, same) == 1.0
