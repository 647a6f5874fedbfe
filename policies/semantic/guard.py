"""The false-hit guard: is a near neighbour really the same question?

Plain cosine similarity cannot tell "15 % of 80" from "15 % of 90" (similarity ~0.95). The guard
looks at the words of the pair (see pair_features) and answers with a probability that both
prompts want the same reply. `learned` mode is a logistic model over the pair features; its
weights are plain numbers (fitted by benchmarks/semantic_eval.py, cross-validated by cluster);
`rules` mode rejects any difference in numbers, negation or an antonym swap; `learned` mode
applies the same veto, then the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from policies.semantic.pair_features import FEATURE_NAMES, PromptTerms, pair_features


@dataclass(frozen=True, slots=True)
class GuardModel:
    """Logistic model over standardised pair features."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]

    def probability(self, features: list[float]) -> float:
        z = self.bias
        for x, w, m, s in zip(features, self.weights, self.mean, self.scale, strict=True):
            z += w * (x - m) / s
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def to_json(self) -> str:
        return json.dumps(
            {
                "features": list(FEATURE_NAMES),
                "weights": list(self.weights),
                "bias": self.bias,
                "mean": list(self.mean),
                "scale": list(self.scale),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> GuardModel:
        data = json.loads(text)
        if tuple(data["features"]) != FEATURE_NAMES:
            raise ValueError(f"guard weights are for features {data['features']}")
        return cls(
            weights=tuple(float(w) for w in data["weights"]),
            bias=float(data["bias"]),
            mean=tuple(float(m) for m in data["mean"]),
            scale=tuple(float(s) for s in data["scale"]),
        )


class Guard:
    """Decides whether a candidate above the similarity threshold may be served."""

    def __init__(self, mode: str, model: GuardModel | None = None, min_probability: float = 0.5):
        if mode == "learned" and model is None:
            raise ValueError("the learned guard needs a model")
        self.mode = mode
        self.model = model
        self.min_probability = min_probability

    def probability(self, cosine: float, query: PromptTerms, cached: PromptTerms) -> float:
        """Estimated probability that both prompts want the same answer."""
        if self.mode == "off":
            return 1.0
        # The same content words, numbers and negation (any order, any stopwords) are taken as
        # the same question: a linear model alone scores even identical pairs below a strict
        # cut. This admits word-order swaps ("30 C in F" / "30 F in C"), a known cost.
        if (query.content, query.numbers, query.negations) == (
            cached.content,
            cached.numbers,
            cached.negations,
        ):
            return 1.0
        features = pair_features(cosine, query, cached)
        numbers, _, negation, antonym = features[1:5]
        # Both modes veto a changed number, negation or direction word: these are the false
        # hits users notice most, and the learned model alone weighs rare ones too lightly.
        if numbers or negation or antonym:
            return 0.0
        if self.mode == "rules":
            return 1.0
        assert self.model is not None
        return self.model.probability(features)

    def accepts(self, cosine: float, query: PromptTerms, cached: PromptTerms) -> bool:
        return self.probability(cosine, query, cached) >= self.min_probability
