"""Contextual token alignment of two prompts (BERTScore-like), for the guard's broad rewrites.

Single-word vectors cannot tell which word is the key one, nor that "wife" and "husband" differ
in a poem's request: out of context they embed close. Here every word piece of one prompt is
matched to its most similar piece of the other by the cosine of the sentence model's *contextual*
token states (its last hidden layer, the same states the sentence embedding averages), and the
match is weighted by how rare the piece is (an IDF proxy: the tokenizer's vocabulary lists word
pieces roughly by corpus frequency, so rank ~ 1/frequency, Zipf). Stopwords and punctuation
weigh nothing.

Features (symmetric): the weighted F score, the lower of the two directions' weighted recall,
and the worst-matched content piece on either side (the one word that has no counterpart).
Pure numpy on vectors the caller supplies (`TokenStates`); `TokenStateCache` bounds the states
kept per text.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from policies.semantic.pair_features import _NEGATIONS, _STOPWORDS

TOKEN_FEATURE_NAMES: tuple[str, ...] = ("token_f", "token_recall_min", "token_worst")
# The vocabulary's frequency-ordered words start after the special and single-character
# entries (BERT uncased: id 1996 is "the"). Lower ids are characters: weighed as mid-frequent.
FIRST_WORD_ID = 1996
_CHARACTER_RANK = 1000
# Rank scale of the weight log(1 + rank / RANK_SCALE): "the" ~0, rank 1000 ~3, rank 28000 ~6.3.
RANK_SCALE = 50.0
# Pieces of a word longer than this many pieces count only up to it (a long URL or identifier
# must not outweigh the question).
MAX_PIECES = 64


@dataclass(frozen=True, slots=True)
class TokenStates:
    """One text's word pieces (without [CLS]/[SEP]): their vocabulary ids, strings, and unit
    contextual vectors (float32, one row per piece)."""

    ids: tuple[int, ...]
    pieces: tuple[str, ...]
    vectors: np.ndarray


TokenEncoder = Callable[[list[str]], list[TokenStates]]


def piece_weights(states: TokenStates) -> np.ndarray:
    """IDF-like weight per piece; 0 for punctuation and stopwords (whole words only)."""
    out = np.zeros(len(states.ids), dtype=np.float32)
    for k, (token_id, piece) in enumerate(zip(states.ids, states.pieces, strict=True)):
        word = piece[2:] if piece.startswith("##") else piece
        if not any(c.isalnum() for c in word):
            continue
        if not piece.startswith("##") and (word in _STOPWORDS and word not in _NEGATIONS):
            continue
        rank = token_id - FIRST_WORD_ID + 1 if token_id >= FIRST_WORD_ID else _CHARACTER_RANK
        out[k] = np.log1p(rank / RANK_SCALE)
    return out


def _directional(a: TokenStates, wa: np.ndarray, sims: np.ndarray) -> tuple[float, float]:
    """Weighted mean of each `a` piece's best match, and the worst weighted piece's match."""
    best = sims.max(axis=1)
    if wa.sum() <= 0:
        return 1.0, 1.0
    mean = float((best * wa).sum() / wa.sum())
    worst = float(best[wa > 0].min())
    return mean, worst


def token_alignment_features(a: TokenStates, b: TokenStates) -> list[float]:
    """Features in TOKEN_FEATURE_NAMES order; symmetric in (a, b)."""
    if not a.ids or not b.ids:
        return [1.0, 1.0, 1.0]
    va, vb = a.vectors[:MAX_PIECES], b.vectors[:MAX_PIECES]
    wa, wb = piece_weights(a)[:MAX_PIECES], piece_weights(b)[:MAX_PIECES]
    sims = np.clip(va @ vb.T, -1.0, 1.0)
    recall_a, worst_a = _directional(a, wa, sims)
    recall_b, worst_b = _directional(b, wb, sims.T)
    f = 2 * recall_a * recall_b / (recall_a + recall_b) if recall_a + recall_b > 0 else 0.0
    return [f, min(recall_a, recall_b), min(worst_a, worst_b)]


class TokenStateCache:
    """Token states per text, LRU-bounded at `max_texts` texts of at most MAX_PIECES pieces
    (the features read no more): with MiniLM at most ~100 KB a text, ~100 MB at the default.
    Misses are encoded in one batch. Not thread-safe: the cache calls it from its embedder
    thread only."""

    def __init__(self, encode: TokenEncoder, max_texts: int = 1024):
        self.encode = encode
        self.max_texts = max_texts
        self._states: OrderedDict[str, TokenStates] = OrderedDict()
        self.encoded_texts = 0

    def __call__(self, texts: list[str]) -> list[TokenStates]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._states))
        if missing:
            self.encoded_texts += len(missing)
            for text, states in zip(missing, self.encode(missing), strict=True):
                self._states[text] = TokenStates(
                    states.ids[:MAX_PIECES],
                    states.pieces[:MAX_PIECES],
                    np.ascontiguousarray(states.vectors[:MAX_PIECES]),
                )
        out = []
        for text in texts:
            self._states.move_to_end(text)
            out.append(self._states[text])
        while len(self._states) > self.max_texts:
            self._states.popitem(last=False)
        return out
