"""Cross-encoded pair features for the guard's logistic model (pure numpy).

The two prompts are run through the sentence encoder as ONE sequence, `[CLS] a [SEP] b [SEP]`
(token types 0 / 1), so each prompt's token states are contextualised by the other prompt; a
bi-encoder never sees the other side. From that joint pass (`JointStates`, computed by
gateway/semantic/cross_encoder.py) and the two prompts' solo sentence embeddings u and v:

- scalars: the cosine of a's and b's mean-pooled joint states; how far each side's pooled state
  moved from its solo embedding (lower and higher of the two); a soft token alignment on the
  joint states (each token's best cosine on the other side, averaged per side; the lower and
  higher side, and the worst-matched token);
- with `vectors`: the CLS state, |ja - jb| and ja * jb of the unit pooled joint states, one value
  per dimension (the model weighs which directions differ, as the bi-encoder pair head does).

With `orders == 2` the features of (a, b) and (b, a) are averaged, so the row is symmetric in the
two prompts at the price of a second joint pass. Rules for callers: `JointStates` rows are the
encoder's last-layer states, float32, without the special tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

CROSS_PREFIX = "cross_"
CROSS_SCALAR_NAMES = (
    "cross_joint_cosine",
    "cross_drift_low",
    "cross_drift_high",
    "cross_align_low",
    "cross_align_high",
    "cross_align_worst_token",
)
_VECTOR_BLOCKS = ("cross_cls_", "cross_abs_diff_", "cross_product_")


@dataclass(frozen=True, slots=True)
class JointStates:
    """One joint pass over (a, b): CLS state and each side's token states (no [SEP])."""

    cls: np.ndarray  # (dim,)
    a: np.ndarray  # (tokens of a, dim)
    b: np.ndarray  # (tokens of b, dim)


# Joint passes for a batch of (a, b) text pairs, in the order given (one forward for all).
JointEncoder = Callable[[Sequence[tuple[str, str]]], list[JointStates]]


def cross_feature_names(dim: int, vectors: bool) -> tuple[str, ...]:
    """Names of the cross features, in model order: scalars, then the vector blocks."""
    blocks = tuple(f"{p}{i}" for p in _VECTOR_BLOCKS for i in range(dim)) if vectors else ()
    return CROSS_SCALAR_NAMES + blocks


def parse_cross_names(names: tuple[str, ...]) -> tuple[int, bool, int]:
    """(dim, vectors, how many names) of the cross features ending `names`; (0, False, 0): none.
    Without the vector blocks the dimension is unknown and reads 0 with vectors False."""
    count = sum(n.startswith(CROSS_PREFIX) for n in names)
    if not count:
        return 0, False, 0
    dim = sum(n.startswith(_VECTOR_BLOCKS[0]) for n in names)
    if names[-count:] != cross_feature_names(dim, dim > 0):
        raise ValueError("cross features must come last: scalars, then cls, abs_diff, product")
    return dim, dim > 0, count


def _unit(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), 1e-9)


def _rows_unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def one_order(joint: JointStates, u: np.ndarray, v: np.ndarray, vectors: bool) -> np.ndarray:
    """Features of one joint pass; u, v: the unit solo sentence embeddings of a and b."""
    cls = np.asarray(joint.cls, dtype=np.float64)
    a = np.asarray(joint.a, dtype=np.float64).reshape(-1, len(cls))
    b = np.asarray(joint.b, dtype=np.float64).reshape(-1, len(cls))
    # A side with no word piece (an empty wording) reads as the CLS state: defined, never raises.
    a = a if len(a) else cls[None]
    b = b if len(b) else cls[None]
    ja, jb = _unit(a.mean(axis=0)), _unit(b.mean(axis=0))
    drift = sorted((float(ja @ np.asarray(u, np.float64)), float(jb @ np.asarray(v, np.float64))))
    sim = _rows_unit(a) @ _rows_unit(b).T
    best_a, best_b = sim.max(axis=1), sim.max(axis=0)
    align = sorted((float(best_a.mean()), float(best_b.mean())))
    worst = min(float(best_a.min()), float(best_b.min()))
    scalars = np.array([float(ja @ jb), *drift, *align, worst])
    if not vectors:
        return scalars
    return np.concatenate([scalars, cls, np.abs(ja - jb), ja * jb])


def cross_features(
    joints: Sequence[JointStates], u: np.ndarray, v: np.ndarray, vectors: bool
) -> np.ndarray:
    """The feature row of a pair from its joint pass (a, b), or from two, (a, b) then (b, a),
    averaged (the second pass sees b first, so u and v swap for it)."""
    if len(joints) not in (1, 2):
        raise ValueError("one joint pass (a, b), or two: (a, b) and (b, a)")
    row = one_order(joints[0], u, v, vectors)
    if len(joints) == 2:
        row = (row + one_order(joints[1], v, u, vectors)) / 2.0
    return row
