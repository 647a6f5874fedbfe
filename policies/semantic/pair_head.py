"""Sentence-pair features for the guard's logistic model: the SBERT classifier input.

Given the two prompts' unit sentence embeddings u and v (the vectors the cache already has: the
query's from its lookup, the cached prompt's from the index), the model also sees |u - v| and
u * v, one value per embedding dimension. The cosine is only their sum (u.v); the per-dimension
values let a fitted model weigh *which* directions differ, where the cosine weighs them all alike.
Pure numpy; no model call at lookup time.
"""

from __future__ import annotations

import numpy as np

_ABS_DIFF = "abs_diff_"
_PRODUCT = "product_"


def head_feature_names(dim: int) -> tuple[str, ...]:
    """Names of the pair-head features for `dim`-dimensional embeddings, in model order."""
    return tuple(f"{_ABS_DIFF}{i}" for i in range(dim)) + tuple(
        f"{_PRODUCT}{i}" for i in range(dim)
    )


def head_dim(names: tuple[str, ...]) -> int:
    """The embedding dimension whose head features end `names` (0: none)."""
    dim = sum(n.startswith(_ABS_DIFF) for n in names)
    if dim and names[-2 * dim :] != head_feature_names(dim):
        raise ValueError("pair-head features must come last, abs_diff_* then product_*")
    return dim


def head_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """|u - v| and u * v (symmetric in u and v), as one float64 row of 2 * dim values."""
    a = np.asarray(u, dtype=np.float64).ravel()
    b = np.asarray(v, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"embedding shapes differ: {a.shape} vs {b.shape}")
    return np.concatenate([np.abs(a - b), a * b])
