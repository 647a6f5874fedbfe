"""Operators a prompt names: "3x + 7" / "3x - 7", "==" / "===", "12 & 10" / "12 ^ 10", ">" / ">>".

Operator symbols are not words, so the guard's content words never see them: two prompts that
differ only in an operator read as the same words and were served outright. This module reads
them from `PromptTerms.tokens` (lower case; every symbol its own token, so "==" arrives as
"=", "=") into a multiset of canonical operators, and `operator_changed` calls two prompts
different questions when each names an operator the other does not.

The class is closed, taken from the operator tables of C, Python, JavaScript and POSIX sh
(arithmetic, comparison, logical, bitwise and shift, assignment, redirection and pipe) plus the
maths signs × ÷ − ≠ ≤ ≥, and the few English words that name those operators ("plus",
"divided by", "multiply", "modulo", "bitwise and", "greater than", "strict equality"). Not from
an evaluation set.

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

import difflib
import re
from collections import Counter
from collections.abc import Sequence

Tokens = Sequence[str]

_CHARS = frozenset("=<>!&|^~+-*/%@×÷−≠≤≥·⋅")
# The maths signs in their ASCII spelling; the middle dot and the dot operator multiply.
_SIGNS = {"×": "*", "·": "*", "⋅": "*", "÷": "/", "−": "-", "≠": "!=", "≤": "<=", "≥": ">="}
_MULTI = frozenset(
    "== === != !== <> <= >= << >> >>> && || ** // += -= *= /= %= &= |= ^= <<= >>= **= //= "
    "~= |= &>".split()
)
_ARROWS = frozenset("-> => <- <-> --> <-- ==> <=>".split())
_RANGES = frozenset(".. ..= ... ..<".split())
_ANYWHERE = frozenset("&|^<>=")
# Python's matrix product "@" counts between operands only ("A @ B", not "@property" or an
# address).
_BETWEEN = frozenset("+-*/%@")
# Words naming an operator. "times" / "multiplied" / "divided" as in "6 times 7", "divided by".
_WORDS = {
    "plus": "+",
    "minus": "-",
    "divided": "/",
    "squared": "^",
    "cubed": "^",
    "remainder": "%",
    "modulo": "%",
    "mod": "%",
    "xor": "^",
}
# Verbs naming an operation, counted when a number follows within three words.
_VERBS = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/"}
# "bitwise and", "logical or", "left shift" / "shift left", ...
_QUALIFIED = {
    ("double", "equals"): "==",
    ("triple", "equals"): "===",
    ("loose", "equality"): "==",
    ("strict", "equality"): "===",
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
    ("multiplied", "by"): "*",
}
# "times" / "multiplied" between two numbers or variables, number words included.
_FACTOR_WORDS = frozenset("times multiplied".split())
_NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten half halves third thirds quarter quarters "
    "squared cubed".split()
)
OP = "OP"  # marks an operator in operator_sequence (tokens are lower case)
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


def _number_like(token: str) -> bool:
    return _operand(token) or token in _NUMBER_WORDS


def _numeral(token: str) -> bool:
    return token[:1].isdigit() or token in _NUMBER_WORDS


def operator_sequence(tokens: Tokens) -> list[str]:
    """`tokens` with each operator as one item, `OP` + its canonical spelling ("×" -> "OP*",
    "=", "=" -> "OP=="), every other token as it was."""
    out: list[str] = []
    k = 0
    n = len(tokens)
    while k < n:
        token = tokens[k]
        if token == "." and tokens[k + 1 : k + 2] == (".",) and k > 0:
            # Ranges between operands: Rust's "1..5" / "1..=5", Swift's "1...5" / "1..<5".
            end = k
            while end < n and tokens[end] in (".", "=", "<"):
                end += 1
            run = "".join(tokens[k:end])
            if run in _RANGES and _operand(tokens[k - 1]) and end < n and _operand(tokens[end]):
                out.append(OP + run)
                k = end
                continue
        if token == "(" and out and out[-1] == ")":
            out.append(OP + "*")  # "(3 + 4i)(1 - 2i)": brackets side by side multiply
        if token in _CHARS:
            end = k
            while end < n and tokens[end] in _CHARS:
                end += 1
            run = "".join(_SIGNS.get(t, t) for t in tokens[k:end])
            pieces = _split_run(run)
            before = tokens[k - 1] if k > 0 else ""
            after = tokens[end] if end < n else ""
            between = len(pieces) == 1 and _operand(before) and _operand(after)
            if run == "-" and before.isdigit() and after.isdigit() and int(before) < int(after):
                between = False  # a range, "1-20"
            if run == "=" and after in ("?", ""):
                pieces = []  # "47 % 6 = ?": "what is", not an equation
            for piece in pieces:
                if len(piece) > 1 and piece not in ("++", "--"):
                    out.append(OP + piece)
                elif piece in _ANYWHERE or (piece in _BETWEEN and between):
                    out.append(OP + piece)
                else:
                    out.append(piece)
            k = end
            continue
        before = tokens[k - 1] if k > 0 else ""
        nxt = tokens[k + 1] if k + 1 < n else ""
        if (token, nxt) in _QUALIFIED:
            out.append(OP + _QUALIFIED[(token, nxt)])
            k += 2
            continue
        if token in _VERBS and any(_numeral(t) for t in tokens[k + 1 : k + 4]):
            # "add 3 and 4", "multiply one half by ...", not "add a line to a file".
            out.append(OP + _VERBS[token])
        elif token in ("divided", "divide") and "remainder" in tokens:
            out.append(OP + "%")  # "the remainder when 47 is divided by 6" is 47 mod 6
        elif token in _WORDS:
            out.append(OP + _WORDS[token])
        elif token in _FACTOR_WORDS and _number_like(before) and _number_like(nxt):
            # "6 times 7", "x squared times e", not "how many times" or "the 4 times table".
            out.append(OP + "*")
        elif token == "x" and before.isdigit() and nxt.isdigit():
            out.append(OP + "*")  # "156 x 12"
        elif (token in _GREATER or token in _LESS) and nxt == "than":
            sign = ">" if token in _GREATER else "<"
            out.append(OP + (sign + "=" if "equal" in tokens[k + 2 : k + 5] else sign))
        else:
            out.append(token)
        k += 1
    return out


def operators(tokens: Tokens) -> Counter[str]:
    """The operators `tokens` names, as a multiset of canonical spellings ("×" -> "*")."""
    return Counter(t[len(OP) :] for t in operator_sequence(tokens) if t.startswith(OP))


def operator_changed(a: Tokens, b: Tokens) -> bool:
    """Each side names an operator that the other does not ("==" / "===", "&" / "^"), or, in
    the two prompts aligned word by word, one operator stands where the other has another
    ("1/2 × 1/3" / "1/2 ÷ 1/3", "1/2 times 1/3" / "1/2 divided by 1/3"). One side naming more
    of the same operators, or none, is not a change ("x^2 + 5x + 6 = 0" / "roots of x^2 + 5x
    + 6", "12 + 30" / "what is 12 plus 30"; "x^2 e^x" / "x^2 * e^x": a product is often left
    unwritten)."""
    seq_a, seq_b = operator_sequence(a), operator_sequence(b)
    x = {t for t in seq_a if t.startswith(OP)}
    y = {t for t in seq_b if t.startswith(OP)}
    # A range ("1..5") is told only from another range ("1..=5"): against prose ("between 1
    # and 5") it is a way of writing the numbers, not an operation.
    ranges = {OP + r for r in _RANGES}
    if not (x & ranges and y & ranges):
        x, y = x - ranges, y - ranges
    if not x or not y:
        return False
    if x - y and y - x:
        return True
    matcher = difflib.SequenceMatcher(None, seq_a, seq_b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "replace":
            here = {t for t in seq_a[i1:i2] if t.startswith(OP)}
            there = {t for t in seq_b[j1:j2] if t.startswith(OP)}
            if here and there and here != there:
                return True
    return False


# ---- the session-5 reading (the default `operator` check) -----------------------------------

_ARITHMETIC_WORDS = {"plus": "+", "minus": "-", "times": "*", "multiplied": "*", "divided": "/"}
_ARITHMETIC_SYMBOLS = {"+": "+", "-": "-", "*": "*", "×": "*", "/": "/", "÷": "/"}


def _arithmetic_operand(token: str) -> bool:
    return bool(re.fullmatch(r"\d+(?:\.\d+)?[a-z]?|[a-z]|[()]", token))


def arithmetic_operators(tokens: Tokens) -> frozenset[str]:
    """Arithmetic operators between operands ("3x - 7", "x+1"), or named ("plus", "divided").
    A hyphen between words ("comma-separated", "16-year-old") is not a minus."""
    found: set[str] = set()
    for k, token in enumerate(tokens):
        if token in _ARITHMETIC_WORDS:
            found.add(_ARITHMETIC_WORDS[token])
        elif token in _ARITHMETIC_SYMBOLS and 0 < k < len(tokens) - 1:
            if _arithmetic_operand(tokens[k - 1]) and _arithmetic_operand(tokens[k + 1]):
                found.add(_ARITHMETIC_SYMBOLS[token])
    return frozenset(found)


def arithmetic_changed(a: Tokens, b: Tokens) -> bool:
    """Both sides name arithmetic operators and neither set holds the other (session 5)."""
    x, y = arithmetic_operators(a), arithmetic_operators(b)
    return bool(x and y) and not (x <= y or y <= x)
