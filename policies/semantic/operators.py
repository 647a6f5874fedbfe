"""Operators a prompt names: "3x + 7" / "3x - 7", "==" / "===", "12 & 10" / "12 ^ 10", ">" / ">>".

Operator symbols are not words, so the guard's content words never see them: two prompts that
differ only in an operator read as the same words and were served outright. This module reads
them from `PromptTerms.tokens` (lower case; every symbol its own token, so "==" arrives as
"=", "=") into a multiset of canonical operators, and `operator_changed` calls two prompts
different questions when each names an operator the other does not.

The class is closed, taken from the operator tables of C, Python, JavaScript and POSIX sh
(arithmetic, comparison, logical, bitwise and shift, assignment, redirection and pipe) plus the
maths signs × ÷ − ≠ ≤ ≥, and the few English words that name those operators ("plus", "divided
by", "modulo", "bitwise and", "greater than"). Not from an evaluation set.

Rules a reader keeps (why each symbol counts where it does):
- "&", "|", "^", "<", ">", "=" count wherever they stand: in prose they are rare and mostly
  operators ("what does > do in bash", "the & operator"); "R&D" on both sides cancels out.
- "+", "-", "*", "/", "%" count only between operands (a number, "3x", a single letter, a
  bracket): "comma-separated", "C++", "km/h", "15 % of 80" are not operators.
- "!" and "~" count only inside a longer operator ("!=", "~="): alone they are an exclamation
  and "about". Arrows ("->", "=>", "<-") are prose arrows, not operators.
- "x" between two numbers is a multiplication ("156 x 12").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

Tokens = Sequence[str]

_CHARS = frozenset("=<>!&|^~+-*/%×÷−≠≤≥")
_SIGNS = {"×": "*", "÷": "/", "−": "-", "≠": "!=", "≤": "<=", "≥": ">="}
_MULTI = frozenset(
    "== === != !== <> <= >= << >> >>> && || ** // += -= *= /= %= &= |= ^= <<= >>= **= //= "
    "~= |= &>".split()
)
_ARROWS = frozenset("-> => <- <-> --> <-- ==> <=>".split())
_ANYWHERE = frozenset("&|^<>=")
_BETWEEN = frozenset("+-*/%")
# Words naming an operator. "times" / "multiplied" / "divided" as in "6 times 7", "divided by".
_WORDS = {
    "plus": "+",
    "minus": "-",
    "times": "*",
    "multiplied": "*",
    "divided": "/",
    "modulo": "%",
    "mod": "%",
    "xor": "^",
}
# "bitwise and", "logical or", "left shift" / "shift left", ...
_QUALIFIED = {
    ("bitwise", "and"): "&",
    ("bitwise", "or"): "|",
    ("bitwise", "xor"): "^",
    ("bitwise", "not"): "~",
    ("logical", "and"): "&&",
    ("logical", "or"): "||",
    ("logical", "not"): "!",
    ("left", "shift"): "<<",
    ("shift", "left"): "<<",
    ("right", "shift"): ">>",
    ("shift", "right"): ">>",
}
_GREATER = frozenset("greater more larger bigger higher".split())
_LESS = frozenset("less fewer smaller lower".split())


def _operand(token: str) -> bool:
    # A number, a number with a variable ("3x"), a single-letter variable or a bracket.
    return bool(re.fullmatch(r"\d+(?:\.\d+)?[a-z]?|[a-z]|[()\[\]]", token))


def _split_run(run: str) -> list[str]:
    """A run of symbol characters as operators, longest known first ("===" stays whole,
    ">=-" is ">=" then "-"); arrows and unknown single characters are dropped."""
    if run in _ARROWS:
        return []
    out: list[str] = []
    k = 0
    while k < len(run):
        for size in (3, 2, 1):
            piece = run[k : k + size]
            if len(piece) == size and (piece in _MULTI or size == 1):
                break
        out.append(piece)
        k += len(piece)
    return out


def operators(tokens: Tokens) -> Counter[str]:
    """The operators `tokens` names, as a multiset of canonical spellings ("×" -> "*")."""
    found: Counter[str] = Counter()
    k = 0
    n = len(tokens)
    while k < n:
        token = tokens[k]
        if token in _CHARS:
            end = k
            while end < n and tokens[end] in _CHARS:
                end += 1
            run = "".join(_SIGNS.get(t, t) for t in tokens[k:end])
            pieces = _split_run(run)
            before = tokens[k - 1] if k > 0 else ""
            after = tokens[end] if end < n else ""
            for piece in pieces:
                if len(piece) > 1 and piece not in ("++", "--"):
                    found[piece] += 1
                elif piece in _ANYWHERE:
                    found[piece] += 1
                elif piece in _BETWEEN and len(pieces) == 1:
                    if _operand(before) and _operand(after):
                        found[piece] += 1
            k = end
            continue
        nxt = tokens[k + 1] if k + 1 < n else ""
        if (token, nxt) in _QUALIFIED:
            found[_QUALIFIED[(token, nxt)]] += 1
            k += 2
            continue
        if token in _WORDS:
            found[_WORDS[token]] += 1
        elif token == "x" and k > 0 and tokens[k - 1].isdigit() and nxt.isdigit():
            found["*"] += 1
        elif (token in _GREATER or token in _LESS) and nxt == "than":
            sign = ">" if token in _GREATER else "<"
            found[sign + "=" if "equal" in tokens[k + 2 : k + 5] else sign] += 1
        k += 1
    return found


def operator_changed(a: Tokens, b: Tokens) -> bool:
    """Each side names an operator (counted) that the other does not: "1/2 × 1/3" / "1/2 ÷
    1/3", "==" / "===". One side naming more of the same operators, or naming none, is not a
    change ("x^2 + 5x + 6 = 0" / "roots of x^2 + 5x + 6", "12 + 30" / "what is 12 plus 30")."""
    x, y = operators(a), operators(b)
    return bool(x - y) and bool(y - x)
