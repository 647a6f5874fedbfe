"""How much of a pair's meaning sits in words only one side has, weighted by how rare they are.

The guard's cheap features count content words (Jaccard, words unique to one side) as if every
word weighed the same; "vegan" added to "name my bakery" then looks like "please" added. An
inverse document frequency (IDF) over a set of prompts weighs a rare, specific word more than a
common one. The table is fitted with the guard's model (on the model's training prompts only)
and shipped inside its weights file; a word the table has never seen gets `default`, the
weight of a word seen in no prompt (unseen words are the rare ones). Pure string work.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from policies.semantic.pair_features import PromptTerms

IDF_FEATURE_NAMES: tuple[str, ...] = ("unique_idf_share", "max_unique_idf")


@dataclass(frozen=True, slots=True)
class TermWeights:
    """IDF of stemmed content words (`PromptTerms.content`); `default` for unseen words."""

    idf: Mapping[str, float]
    default: float

    def weight(self, word: str) -> float:
        return self.idf.get(word, self.default)

    def to_dict(self) -> dict[str, object]:
        return {"default": self.default, "terms": dict(sorted(self.idf.items()))}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> TermWeights:
        terms = data["terms"]
        if not isinstance(terms, Mapping):
            raise ValueError("idf terms must be a mapping of word to weight")
        return cls({str(w): float(v) for w, v in terms.items()}, float(data["default"]))  # type: ignore[arg-type]


def fit_term_weights(contents: Iterable[frozenset[str]], min_count: int = 2) -> TermWeights:
    """Smoothed IDF, log((n + 1) / (df + 1)) + 1, over prompts' content-word sets. Words seen
    in fewer than `min_count` prompts are left out of the table (they read as `default`, the
    weight of an unseen word): that keeps the table small and says nothing item-specific."""
    docs = list(contents)
    df = Counter(word for content in docs for word in content)
    n = len(docs)
    idf = {w: math.log((n + 1) / (c + 1)) + 1.0 for w, c in df.items() if c >= min_count}
    return TermWeights(idf, math.log(n + 1) + 1.0)


def idf_features(a: PromptTerms, b: PromptTerms, weights: TermWeights) -> list[float]:
    """[IDF mass of the content words on one side only / IDF mass of all content words of the
    pair, the largest IDF of a one-sided word / `default`]; both 0.0 when the words agree.
    Symmetric in (a, b)."""
    union = a.content | b.content
    one_sided = a.content ^ b.content
    if not union or not one_sided:
        return [0.0, 0.0]
    mass = sum(weights.weight(w) for w in union)
    unique = [weights.weight(w) for w in one_sided]
    return [sum(unique) / mass, max(unique) / weights.default]
