"""Content-word alignment of a broad rewrite: does every key word have a counterpart?

Two prompts can share most of their words and still ask different things: "circle r=5,
perimeter?" / "area of a circle if the radius is five" (a key noun without a counterpart), or
"comma separated string to list" / "list of strings into a comma separated string" (the same
words in the opposite direction). Each content word of one prompt is matched to its most
similar content word of the other, by the cosine of single-word embeddings (same model as the
prompts); a word with no close counterpart, or matched words whose order flips around a
"to"/"into"/"from", mark another question.

Word vectors come from `WordVectors`: a bounded LRU in front of the caller's batch encoder, so a
word is embedded once while it stays in use and a pair's misses go out in one batch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from policies.semantic.edit_shape import stem
from policies.semantic.pair_features import _NEGATIONS, _NUMBER_WORDS, _STOPWORDS

ALIGN_FEATURE_NAMES: tuple[str, ...] = (
    "align_min",
    "align_unmatched_max",
    "align_unmatched_min",
    "align_order_flip",
)
# A content word whose best counterpart embeds below this is "unmatched". Single MiniLM words:
# synonyms ("largest"/"biggest", "convert"/"turn") sit around 0.6-0.9, unrelated nouns < 0.4.
UNMATCHED_BELOW = 0.55
# Words counted per prompt: the first ones carry the question; bounds the pair's cost.
MAX_WORDS = 24
_FLIP_CONNECTORS = frozenset("to into from".split())


class WordVectors:
    """Unit vectors of single words, LRU-bounded at `max_words`; misses are encoded in one
    batch. `encode(texts)` must return unit vectors, one row per text. Not thread-safe: the
    cache calls it from its embedder thread only."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], max_words: int = 50_000):
        self.encode = encode
        self.max_words = max_words
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self.encoded_words = 0

    def __call__(self, words: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(w for w in words if w not in self._vectors))
        if missing:
            out = np.asarray(self.encode(missing), dtype=np.float32)
            self.encoded_words += len(missing)
            for word, vector in zip(missing, out, strict=True):
                self._vectors[word] = vector
        rows = []
        for word in words:
            self._vectors.move_to_end(word)
            rows.append(self._vectors[word])
        while len(self._vectors) > self.max_words:
            self._vectors.popitem(last=False)
        return np.stack(rows) if rows else np.zeros((0, 1), dtype=np.float32)


def content_words(tokens: tuple[str, ...]) -> list[tuple[int, str]]:
    """(position in `tokens`, word) of the alphabetic content words, in order."""
    out = []
    for k, token in enumerate(tokens):
        if not token.isalpha() or len(token) < 2:
            continue
        if token in _STOPWORDS or token in _NEGATIONS or token in _NUMBER_WORDS:
            continue
        out.append((k, token))
    return out[:MAX_WORDS]


def _similarities(
    a: list[tuple[int, str]], b: list[tuple[int, str]], vectors: WordVectors
) -> np.ndarray:
    """Word-by-word cosine matrix; words with the same stem count as identical."""
    words_a = [w for _, w in a]
    words_b = [w for _, w in b]
    need = sorted({*words_a, *words_b})
    table = dict(zip(need, vectors(need), strict=True))
    sims = np.stack([table[w] for w in words_a]) @ np.stack([table[w] for w in words_b]).T
    stems_b = [stem(w) for w in words_b]
    for i, w in enumerate(words_a):
        own = stem(w)
        for j, other in enumerate(stems_b):
            if own == other:
                sims[i, j] = 1.0
    return sims


def _order_flip(
    a: list[tuple[int, str]],
    b: list[tuple[int, str]],
    best_ab: np.ndarray,
    sims: np.ndarray,
    tokens_a: tuple[str, ...],
    tokens_b: tuple[str, ...],
) -> bool:
    """Two matched words with "to"/"into"/"from" between them on both sides, in the opposite
    order on the other side."""

    def between(tokens: tuple[str, ...], i: int, j: int) -> bool:
        lo, hi = min(i, j), max(i, j)
        return any(t in _FLIP_CONNECTORS for t in tokens[lo + 1 : hi])

    for x in range(len(a)):
        for y in range(x + 1, len(a)):
            jx, jy = int(best_ab[x]), int(best_ab[y])
            if jx == jy or sims[x, jx] < UNMATCHED_BELOW or sims[y, jy] < UNMATCHED_BELOW:
                continue
            if a[x][1] == a[y][1] or not between(tokens_a, a[x][0], a[y][0]):
                continue
            if b[jx][0] > b[jy][0] and between(tokens_b, b[jx][0], b[jy][0]):
                return True
    return False


def alignment_features(
    tokens_a: tuple[str, ...], tokens_b: tuple[str, ...], vectors: WordVectors
) -> list[float]:
    """Features in `ALIGN_FEATURE_NAMES` order, symmetric in (a, b) except the order flip,
    which is looked for from both sides. No content words on a side: a neutral row."""
    a, b = content_words(tokens_a), content_words(tokens_b)
    if not a or not b:
        return [1.0, 0.0, 0.0, 0.0]
    sims = _similarities(a, b, vectors)
    best_a = sims.max(axis=1)
    best_b = sims.max(axis=0)
    unmatched_a = float((best_a < UNMATCHED_BELOW).mean())
    unmatched_b = float((best_b < UNMATCHED_BELOW).mean())
    flip = _order_flip(a, b, sims.argmax(axis=1), sims, tokens_a, tokens_b) or _order_flip(
        b, a, sims.T.argmax(axis=1), sims.T, tokens_b, tokens_a
    )
    return [
        float(min(best_a.min(), best_b.min())),
        max(unmatched_a, unmatched_b),
        min(unmatched_a, unmatched_b),
        float(flip),
    ]
