"""A pair's difference direction matched against known pairs (session 6 experiment; numpy).

A reversal said in other words (negation, antonym, direction) may move the sentence embedding
along a direction that recurs across topics, as "not" or "from ... to" does. For prompts with
unit embeddings u and v, d is the unit difference u - v; a `PairBank` holds the directions of
training pairs and whether each pair's two prompts wanted different answers. The feature is the
share of different-answer pairs among the `k` bank pairs most parallel to d (|d . d'|: a pair
has no order). Rules for callers: u and v are the same model's unit embeddings as the bank's;
an empty bank reads 0.5 (no evidence either way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KNN_FEATURE_NAMES = ("knn_different_share",)
DEFAULT_K = 10


def unit_directions(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Unit rows of u - v (rows of two (n, dim) arrays, or two single vectors as one row)."""
    d = np.atleast_2d(np.asarray(u, np.float64) - np.asarray(v, np.float64))
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)


def different_share(
    directions: np.ndarray, bank: np.ndarray, different: np.ndarray, k: int
) -> np.ndarray:
    """Per row of `directions`, the share of `different` among its `k` most parallel bank rows."""
    if not len(bank):
        return np.full(len(directions), 0.5)
    sim = np.abs(directions @ bank.T)
    k = min(k, bank.shape[0])
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    return np.asarray(different, dtype=np.float64)[top].mean(axis=1)


@dataclass(frozen=True, eq=False)
class PairBank:
    """Training pairs' unit difference directions and their labels (different answers)."""

    directions: np.ndarray  # (n, dim), unit rows
    different: np.ndarray  # (n,) bool
    k: int = DEFAULT_K

    def share(self, u: np.ndarray, v: np.ndarray) -> float:
        return float(
            different_share(unit_directions(u, v), self.directions, self.different, self.k)[0]
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "k": self.k,
            "different": [bool(x) for x in self.different],
            "directions": np.round(self.directions, 4).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> PairBank:
        directions = np.asarray(data["directions"], dtype=np.float64)
        different = np.asarray(data["different"], dtype=bool)
        if directions.ndim != 2 or len(directions) != len(different):
            raise ValueError("pair bank: one direction row per label")
        return cls(
            unit_directions(directions, np.zeros_like(directions)), different, int(data["k"])
        )  # type: ignore[call-overload]
