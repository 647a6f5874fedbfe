"""Pick a request's category: an explicit header wins, then regex rules, then the embedding.

The embedding fallback takes the query's embedding (already computed for the lookup), so
categorising costs one small matrix-vector product, no extra model call. It is either a learned
`CategoryModel` (softmax regression fitted on labelled prompt sets, the default) or the nearest
of the YAML's example prompts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from config.semantic import CategorizerConfig


def named_category(header: str | None) -> str | None:
    """The category a `x-kvgate-category` value names, in its one spelling (trimmed, lower
    case); None for no value or a blank one."""
    name = (header or "").strip().lower()
    return name or None


class CategoryModel:
    """Softmax regression on a unit sentence embedding: `weights` (classes × dim), `bias`.
    Fitted offline by benchmarks/semantic_categorizer_fit.py; shipped as JSON."""

    def __init__(self, classes: Sequence[str], weights: np.ndarray, bias: np.ndarray):
        if np.ndim(weights) != 2 or len(weights) != len(classes) or len(bias) != len(classes):
            raise ValueError("category model: one row of weights and one bias per class")
        self.classes = list(classes)
        self.weights = np.asarray(weights, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)

    @classmethod
    def from_json(cls, text: str) -> CategoryModel:
        raw = json.loads(text)
        return cls(raw["classes"], np.asarray(raw["weights"]), np.asarray(raw["bias"]))

    def to_dict(self) -> dict[str, object]:
        return {
            "classes": self.classes,
            "weights": [[round(float(v), 5) for v in row] for row in self.weights],
            "bias": [round(float(v), 5) for v in self.bias],
        }

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """Class probabilities of one vector (→ 1-D) or of a batch (rows)."""
        logits = np.asarray(vectors, dtype=np.float32) @ self.weights.T + self.bias
        logits = logits - logits.max(axis=-1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=-1, keepdims=True)

    def predict(self, vector: np.ndarray) -> str:
        return self.classes[int(np.argmax(self.probabilities(vector)))]


class Categorizer:
    def __init__(
        self,
        cfg: CategorizerConfig,
        example_vectors: dict[str, np.ndarray],
        model: CategoryModel | None = None,
    ):
        """`example_vectors[c]` holds the unit embeddings of the examples of category `c`;
        `model`, when given, decides instead of the examples."""
        self.cfg = cfg
        self.model = model
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
        if named := named_category(header):
            return named
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

    def by_embedding(self, vector: np.ndarray) -> str:
        return self.model.predict(vector) if self.model is not None else self.by_example(vector)

    def categorize(self, text: str, vector: np.ndarray, header: str | None = None) -> str:
        return self.by_rules(text, header) or self.by_embedding(vector)


def shipped_category_model() -> CategoryModel:
    """The model fitted on the labelled prompt sets (category_weights.json, next to this file)."""
    text = resources.files("policies.semantic").joinpath("category_weights.json").read_text()
    return CategoryModel.from_json(text)


def build_categorizer(
    cfg: CategorizerConfig, encode: Callable[[list[str]], np.ndarray], dim: int
) -> Categorizer:
    """The categorizer `cfg` describes. `encode` gives unit embeddings of `dim` values (the
    cache's embedder): the example prompts are embedded with it, and a learned model must have
    been fitted on embeddings of the same size."""
    if cfg.method == "examples":
        examples = {name: encode(list(texts)) for name, texts in cfg.examples.items() if texts}
        return Categorizer(cfg, examples)
    if cfg.weights_path:
        model = CategoryModel.from_json(Path(cfg.weights_path).read_text())
    else:
        model = shipped_category_model()
    if model.weights.shape[1] != dim:
        raise ValueError(
            f"category weights {cfg.weights_path or 'category_weights.json'!r} are for "
            f"{model.weights.shape[1]}-dimensional embeddings, the embedder gives {dim}"
        )
    return Categorizer(cfg, {}, model)
