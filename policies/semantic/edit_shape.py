"""How one prompt was edited into another: a word-level alignment of the two wordings.

A hard negative is usually the same sentence with a small substitution ("drop rows" / "drop
columns", "euro to dollar" / "dollar to euro"); a paraphrase rewrites more broadly. Aligning
the two token sequences (difflib opcodes) gives the edit's shape: how much is shared, how many
places changed, and which spans were replaced by which. The guard embeds the replaced spans to
tell a synonym ("biggest" / "largest") from a different thing ("Python" / "JavaScript").
Pure string work: tens of microseconds for prompts of a few dozen words.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

# Words that put two content words in a direction: "A to B", "A in B", "A into B", "A from B".
# Swapping A and B around one of them asks the opposite question (a conversion's direction).
_CONNECTORS = frozenset("to into in from than for vs versus per over by as".split())
# Typos ("celcius" / "celsius") are folded onto the other prompt's word before aligning, so a
# misspelling is not mistaken for a substitution. Only longer alphabetic words: "python3" /
# "python2" or "rows" / "cows" must stay different.
_TYPO_MIN_LEN = 5
_TYPO_MIN_RATIO = 0.8
# Direction pairs are words at most this many content words apart.
_DIRECTION_REACH = 2


@dataclass(frozen=True, slots=True)
class EditShape:
    """`ratio`: difflib's 2*matches/total over the two token lists (1.0 identical).
    `ops`: the number of changed places. `replaced`: (span of a, span of b) for every place
    where words were replaced (not only inserted or deleted), in order.
    `direction_swap`: two content words around a connector appear in opposite order."""

    ratio: float
    ops: int
    replaced: tuple[tuple[str, str], ...]
    direction_swap: bool


def stem(word: str, keep: int = 3) -> str:
    """Plural, -ing and -ed endings off, leaving at least `keep` letters ("rows" -> "row",
    "sorting" -> "sort"): enough to match inflections of one word. The guard's one stemmer."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= keep and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


def _fold_typos(
    a: tuple[str, ...], b: tuple[str, ...], known_words: frozenset[str] = frozenset()
) -> tuple[str, ...]:
    """`a` with each long word that `b` lacks replaced by `b`'s closest spelling, if close.
    Two words that are both in `known_words` (a vocabulary) are two words, not a typo
    ("remote" / "remove", "austria" / "australia"), unless they share a stem ("strings")."""
    only_a = {w for w in set(a) - set(b) if w.isalpha() and len(w) >= _TYPO_MIN_LEN}
    only_b = [w for w in set(b) - set(a) if w.isalpha() and len(w) >= _TYPO_MIN_LEN]
    if not only_a or not only_b:
        return a
    renamed: dict[str, str] = {}
    for word in only_a:
        matcher = difflib.SequenceMatcher(None, word)
        best, best_ratio = "", 0.0
        for other in sorted(only_b):
            matcher.set_seq2(other)
            if matcher.real_quick_ratio() < _TYPO_MIN_RATIO:
                continue
            ratio = matcher.ratio()
            if ratio > best_ratio:
                best, best_ratio = other, ratio
        if best_ratio < _TYPO_MIN_RATIO:
            continue
        both_known = word in known_words and best in known_words
        if not both_known or stem(word) in (stem(best), best) or stem(best) == word:
            renamed[word] = best
    return tuple(renamed.get(w, w) for w in a)


def _directed_pairs(tokens: tuple[str, ...], stopwords: frozenset[str]) -> set[tuple[str, str]]:
    content = [(k, stem(w)) for k, w in enumerate(tokens) if w.isalnum() and w not in stopwords]
    pairs: set[tuple[str, str]] = set()
    for x, (k1, w1) in enumerate(content):
        for k2, w2 in content[x + 1 : x + 1 + _DIRECTION_REACH]:
            if w1 != w2 and any(t in _CONNECTORS for t in tokens[k1 + 1 : k2]):
                pairs.add((w1, w2))
    return pairs


def direction_swapped(a: tuple[str, ...], b: tuple[str, ...], stopwords: frozenset[str]) -> bool:
    in_a = _directed_pairs(a, stopwords)
    in_b = _directed_pairs(b, stopwords)
    return any((y, x) in in_b and (x, y) not in in_b for x, y in in_a)


def edit_shape(
    a: tuple[str, ...],
    b: tuple[str, ...],
    stopwords: frozenset[str],
    known_words: frozenset[str] = frozenset(),
) -> EditShape:
    """Symmetric up to the order of each replaced pair. Tokens are lower-cased words and
    punctuation marks, as `PromptTerms.tokens` holds them. `known_words`: see _fold_typos
    (empty: any close spelling is a typo)."""
    a = _fold_typos(a, b, known_words)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    ops = 0
    replaced: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        ops += 1
        if tag == "replace":
            replaced.append((" ".join(a[i1:i2]), " ".join(b[j1:j2])))
    return EditShape(
        ratio=matcher.ratio() if a or b else 1.0,
        ops=ops,
        replaced=tuple(replaced),
        direction_swap=direction_swapped(a, b, stopwords),
    )
