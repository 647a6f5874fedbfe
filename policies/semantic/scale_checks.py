"""Scale checks: two prompts at opposite ends of a scale, or naming different letters.

The antonym check knows word pairs ("largest" / "smallest"); siblings often use another word
of the same pole ("greatest perfect square" / "smallest perfect square", "densest planet" /
"least dense planet", "who came before Lincoln" / "who preceded ..." against "after").
Dimensional adjectives form a closed class of English with two poles each (big / small, high /
low, long / short, hot / cold, ...), so the check reads poles instead of pairs:

- `opposite_pole`: every scale word on one side is at the upper pole and every one on the other
  side at the lower pole (a side with both, or with none, says nothing). Degree modifiers combine
  with the adjective they modify ("least dense" is lower, "less cold" upper); alone, "most",
  "least", "more", "less" say nothing ("most affordable" / "least expensive" is one question),
  nor do "at least" / "at most". An unmarked adjective after "how" asks for a measure, not a
  pole ("how long does it take", "how tall is"), while a marked one keeps its pole ("how cold
  will it get"). Temporal order (before / preceded / prior against after / followed /
  succeeded) is a scale of its own. Words under a negation are left to `negated_word`.
- `letter_swapped`: a near-duplicate edit replaces one single letter by another ("the key of D
  major" / "E major", "vitamin C" / "vitamin D", "solve for x" / "solve for y"); the guard reads
  single letters as no content word, so nothing else sees them. "a" and "i" are words.

Pure string work over `PromptTerms.tokens`; symmetric; a check only ever vetoes.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from policies.semantic.pair_features import _NEGATIONS

Tokens = Sequence[str]

# Evaluative or verb senses stay out: "great" (good), "little" (a bit), "light" (mode, bulb),
# "close" (a file), "further" (more); their comparatives and superlatives are scale words.
_UPPER = frozenset(
    "big bigger biggest large larger largest greater greatest high higher highest tall taller "
    "tallest long longer longest heavy heavier heaviest deep deeper deepest wide wider widest "
    "thick thicker thickest hot hotter hottest warm warmer warmest fast faster fastest dense "
    "denser densest strong stronger strongest far farther farthest furthest max maximum "
    "top".split()
)
_LOWER = frozenset(
    "small smaller smallest low lower lowest short shorter shortest lighter lightest shallow "
    "shallower shallowest narrow narrower narrowest thin thinner thinnest cold colder coldest "
    "cool cooler coolest slow slower slowest sparse weak weaker weakest near nearer nearest "
    "closer closest min minimum bottom fewer fewest".split()
)
_BEFORE = frozenset("before preceded precede precedes preceding prior predecessor earlier".split())
_AFTER = frozenset("after followed succeeded succeed succeeds successor later subsequent".split())
_MODIFIERS = {"more": 1, "most": 1, "less": -1, "least": -1}
# What follows a negator is `negated_word`'s to judge (the guard's negation words).
_NEGATORS = _NEGATIONS | {"nothing"}
# Single letters that are English words.
_WORD_LETTERS = frozenset("a i".split())
# An edit this close (difflib ratio over the tokens) is a near-duplicate.
_NEAR_RATIO = 0.5


def _pole(word: str) -> tuple[str, int] | None:
    if word in _UPPER:
        return "scale", 1
    if word in _LOWER:
        return "scale", -1
    if word in _BEFORE:
        return "order", -1
    if word in _AFTER:
        return "order", 1
    return None


def poles(tokens: Tokens) -> dict[str, set[int]]:
    """Scale -> the poles its words take in `tokens` (+1 upper / after, -1 lower / before)."""
    out: dict[str, set[int]] = {}
    k = 0
    while k < len(tokens):
        word = tokens[k]
        before = tokens[k - 1] if k else ""
        if before in _NEGATORS or (k > 1 and tokens[k - 2] in _NEGATORS):
            k += 1
            continue
        if word in _MODIFIERS:
            following = _pole(tokens[k + 1]) if k + 1 < len(tokens) else None
            if following is not None and before != "at":
                scale, sign = following
                out.setdefault(scale, set()).add(sign * _MODIFIERS[word])
                k += 2
                continue
            k += 1
            continue
        found = _pole(word)
        if found is not None and not (before == "how" and found == ("scale", 1)):
            out.setdefault(found[0], set()).add(found[1])
        k += 1
    return out


def opposite_pole(a: Tokens, b: Tokens) -> bool:
    """On some scale every word of one side is at one pole and every word of the other side at
    the other ("greatest" / "smallest", "densest" / "least dense", "preceded" / "after")."""
    pa, pb = poles(a), poles(b)
    return any(
        len(pa[s]) == 1 and len(pb[s]) == 1 and pa[s] != pb[s] for s in pa.keys() & pb.keys()
    )


def _letter(token: str) -> bool:
    return len(token) == 1 and token.isalpha() and token not in _WORD_LETTERS


def letter_swapped(a: Tokens, b: Tokens) -> bool:
    """A near-duplicate in which one single letter stands where the other side has another."""
    matcher = difflib.SequenceMatcher(None, list(a), list(b), autojunk=False)
    if matcher.ratio() < _NEAR_RATIO:
        return False
    return any(
        op == "replace" and i2 - i1 == 1 and j2 - j1 == 1 and _letter(a[i1]) and _letter(b[j1])
        for op, i1, i2, j1, j2 in matcher.get_opcodes()
    )
