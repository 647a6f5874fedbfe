"""Tie-breaking by rotation, so equal scores never pile onto `workers[0]`.

Each policy that can tie owns one `Rotation`. Among the tied indices it picks the first one at or
after a cursor (cyclically), then moves the cursor past it: a run of ties with the same tied set
is round-robin over that set, and no position is favoured when the set changes.
"""

from __future__ import annotations

from collections.abc import Sequence


class Rotation:
    def __init__(self) -> None:
        self._cursor = 0

    def pick(self, tied: Sequence[int], num_workers: int) -> int:
        """One of `tied` (ascending, non-empty indices into a list of `num_workers`)."""
        cursor = self._cursor % max(num_workers, 1)
        choice = next((i for i in tied if i >= cursor), tied[0])
        self._cursor = choice + 1
        return choice


def argmin_tied(scores: Sequence[float], rel_tol: float = 1e-9) -> list[int]:
    """Indices whose score equals the minimum (within `rel_tol` of it), ascending."""
    low = min(scores)
    slack = abs(low) * rel_tol
    return [i for i, s in enumerate(scores) if s <= low + slack]
