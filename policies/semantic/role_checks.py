"""Role checks: the same words and numbers, in roles that ask another question.

The guard accepts two prompts with the same content words and numbers outright, in any order,
and its number veto only compares the two sets of numbers. Siblings that keep every word and
number but give them other roles pass both: "212 degrees Celsius on the Fahrenheit scale" /
"212 degrees Fahrenheit on the Celsius scale", "20 is what percent of 80?" / "express 80 as a
percent of 20", "8 ÷ 2 × 4" / "8 ÷ (2 × 4)". Three general readings of a role, each a check in
the contrast-check sense (True = another question; a check only ever vetoes):

- `swapped_words`: two content words trade places and every other content word stays where it
  was, unless only a symmetric connective stands between them ("TCP and UDP" / "UDP and TCP",
  "3 + 5" / "5 + 3").
- `number_roles`: a preposition (of, to, from, by, ...) governs one number on one side and
  another number on the other, both numbers being on both sides ("percent of 80" / "percent of
  20", "divide 10 by 2" / "divide 2 by 10"): the numbers traded roles.
- `grouping`: the same arithmetic (numbers and operators in the same order) grouped by brackets
  differently ("8 / 2 * 4" / "8 / (2 * 4)").
- `logic_changed`: conditions joined by "and" (&, &&) on one side and by "or" (|, ||) on the
  other ("price > 100 and qty < 5" / "price>100 | qty<5").

The word lists are closed classes (coordinating connectives, commutative operators,
prepositions). Pure string work over `PromptTerms.tokens`, microseconds per pair; each check is
symmetric in its two arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.semantic.edit_shape import stem
from policies.semantic.pair_features import _STOPWORDS

Tokens = Sequence[str]

# What may stand between two words whose order does not matter: coordination, comparison of
# two things, and the commutative arithmetic operators.
_SYMMETRIC = frozenset("and or , & / + * × · vs versus with between nor plus times".split())
# Articles and determiners around a connective ("the cat and the dog").
_DETERMINERS = frozenset("a an the".split())
# Prepositions that give a number a role ("percent of 80", "from 5 to 10", "divide by 2").
_ROLE_PREPOSITIONS = frozenset("of to from into by over than per out".split())
_MULTIPLY = frozenset("* × ·".split())
_DIVIDE = frozenset("/ ÷".split())
_ARITHMETIC = frozenset("+ - − ^ %".split()) | _MULTIPLY | _DIVIDE


def _number(token: str) -> bool:
    return token[:1].isdigit()


def _content(token: str) -> bool:
    return _number(token) or (token.isalpha() and len(token) > 1 and token not in _STOPWORDS)


def _key(token: str) -> str:
    return token if _number(token) else stem(token, keep=4)


def swapped_words(a: Tokens, b: Tokens) -> bool:
    """Two words trade places and nothing else changes among the content words ("Celsius on
    the Fahrenheit scale" / "Fahrenheit on the Celsius scale"), with more than a symmetric
    connective between them. Only a clean transposition counts: a word that moves elsewhere
    ("python: sort a list" / "sort a list in python") is a rewording, not a trade."""
    at_a = [i for i, t in enumerate(a) if _content(t)]
    keys_a = [_key(a[i]) for i in at_a]
    keys_b = [_key(t) for t in b if _content(t)]
    if keys_a == keys_b or sorted(keys_a) != sorted(keys_b):
        return False
    k = next(n for n, (x, y) in enumerate(zip(keys_a, keys_b, strict=True)) if x != y)
    x, y = keys_a[k], keys_b[k]
    if [y if t == x else x if t == y else t for t in keys_b] != keys_a:
        return False
    i, j = at_a[k], at_a[keys_a.index(y)]
    between = {t for t in a[min(i, j) + 1 : max(i, j)] if t not in _DETERMINERS}
    return not between <= _SYMMETRIC


def _number_roles(tokens: Tokens) -> dict[str, set[str]]:
    """Preposition -> the numbers it governs ("out of 80" reads as "of 80")."""
    roles: dict[str, set[str]] = {}
    for i in range(1, len(tokens)):
        if _number(tokens[i]) and tokens[i - 1] in _ROLE_PREPOSITIONS:
            roles.setdefault(tokens[i - 1], set()).add(tokens[i])
    return roles


def number_roles(a: Tokens, b: Tokens) -> bool:
    """A preposition governs different numbers on the two sides, each number being on both
    sides ("20 is what percent of 80" / "express 80 as a percent of 20")."""
    shared = {t for t in a if _number(t)} & {t for t in b if _number(t)}
    if len(shared) < 2:
        return False
    ra, rb = _number_roles(a), _number_roles(b)
    for prep in ra.keys() & rb.keys():
        x, y = ra[prep] & shared, rb[prep] & shared
        if x and y and x != y:
            return True
    return False


def _arithmetic(tokens: Tokens) -> tuple[list[str], list[str]]:
    """(numbers and operators in order, bracket groups holding an operator), with the
    operator signs read as one spelling each."""
    flat: list[str] = []
    groups: list[str] = []
    open_at: list[int] = []
    for t in tokens:
        if t == "(":
            open_at.append(len(flat))
        elif t == ")" and open_at:
            inner = flat[open_at.pop() :]
            if any(s in "*/+-^%" for s in inner) and all(
                _number(s) or s in "*/+-^%" for s in inner
            ):
                groups.append(" ".join(inner))
        elif _number(t):
            flat.append(t)
        elif t in _ARITHMETIC:
            flat.append("*" if t in _MULTIPLY else "/" if t in _DIVIDE else "-" if t == "−" else t)
    return flat, sorted(groups)


def grouping(a: Tokens, b: Tokens) -> bool:
    """The same numbers and operators, in the same order, bracketed differently."""
    flat_a, groups_a = _arithmetic(a)
    flat_b, groups_b = _arithmetic(b)
    operators = sum(1 for s in flat_a if not _number(s))
    return operators >= 2 and flat_a == flat_b and groups_a != groups_b


# Connectives that join two conditions: one class requires both, the other either.
_BOTH = frozenset("and &".split())
_EITHER = frozenset("or |".split())
_CONDITION = frozenset("< > = ≤ ≥ ≠".split())
# A connective joins conditions when a number or comparison sign is this near on each side.
_CONDITION_REACH = 4


def _joins_conditions(tokens: Tokens, k: int) -> bool:
    before = tokens[max(0, k - _CONDITION_REACH) : k]
    after = tokens[k + 1 : k + 1 + _CONDITION_REACH]
    if "between" in before:
        return False  # "between 1 and 30" is a range
    return _condition_near(before) and _condition_near(after)


def _condition_near(side: Tokens) -> bool:
    return any(_number(t) or t in _CONDITION for t in side)


def connectives(tokens: Tokens) -> set[str]:
    """"both" / "either" for each connective joining two conditions ("price > 100 and qty <
    5", "x > 0 || y > 0", "over 100 OR under 5"); "&&" and "||" count once."""
    out: set[str] = set()
    for k, t in enumerate(tokens):
        if (t in _BOTH or t in _EITHER) and _joins_conditions(tokens, k):
            out.add("both" if t in _BOTH else "either")
    return out


def logic_changed(a: Tokens, b: Tokens) -> bool:
    """One side joins its conditions with "and" (&, &&), the other with "or" (|, ||)."""
    x, y = connectives(a), connectives(b)
    return len(x) == 1 and len(y) == 1 and x != y
