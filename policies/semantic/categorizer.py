"""Pick a request's category: an explicit header wins, then regex rules, then nearest example.

The example fallback takes the query's embedding (already computed for the lookup), so
categorising costs one small matrix-vector product, no extra model call.
"""

from __future__ import annotations

import re

import numpy as np

from config.semantic import CategorizerConfig

CATEGORY_HEADER = "x-kvgate-category"


class Categorizer:
    def __init__(self, cfg: CategorizerConfig, example_vectors: dict[str, np.ndarray]):
        """`example_vectors[c]` holds the unit embeddings of the examples of category `c`."""
        self.cfg = cfg
        self._rules = [(re.compile(r.pattern, re.IGNORECASE), r.category) for r in cfg.rules]
        names: list[str] = []
        rows: list[np.ndarray] = []
        for category, vectors in sorted(example_vectors.items()):
            for vector in np.atleast_2d(vectors):
                names.append(category)
                rows.append(vector)
        self._example_names = names
        self._examples = np.stack(rows).astype(np.float32) if rows else None

    def by_rules(self, text: str, header: str | None = None) -> str | None:
        """The category from the header or a rule, or None when the embedding must decide."""
        if header:
            return header.strip().lower()
        for pattern, category in self._rules:
            if pattern.search(text):
                return category
        return None

    def by_example(self, vector: np.ndarray) -> str:
        if self._examples is None:
            return self.cfg.default
        similarities = self._examples @ vector
        best = int(np.argmax(similarities))
        if similarities[best] < self.cfg.example_min_similarity:
            return self.cfg.default
        return self._example_names[best]

    def categorize(self, text: str, vector: np.ndarray, header: str | None = None) -> str:
        return self.by_rules(text, header) or self.by_example(vector)
