"""The cost-weighted choice of (threshold, cut) behind the options-on-holdout figures."""

from __future__ import annotations

from benchmarks.semantic_options_holdout import choose_weighted
from benchmarks.semantic_quality import Tally


def _grid(cells: dict[tuple[float, float], tuple[int, int]]) -> dict:
    """(threshold, cut) -> (hits, false hits), split over two categories to check the totals."""
    out = {}
    for key, (hits, false) in cells.items():
        out[key] = {
            "code": Tally(possible=100, hits=hits // 2, false_hits=false // 2),
            "math": Tally(possible=100, hits=hits - hits // 2, false_hits=false - false // 2),
        }
    return out


def test_heavier_false_hit_cost_moves_to_the_stricter_setting():
    grid = _grid({(0.70, 0.5): (120, 20), (0.75, 0.5): (100, 10), (0.85, 0.5): (60, 2)})
    # correct - k x false: k=1 -> 80 / 80 / 56 (tie: the stricter 0.75 wins); k=3 -> 40 / 60 / 52;
    # k=10 -> -100 / -20 / 38.
    assert choose_weighted(grid, 0.0) == (0.70, 0.5)
    assert choose_weighted(grid, 1.0) == (0.75, 0.5)
    assert choose_weighted(grid, 3.0) == (0.75, 0.5)
    assert choose_weighted(grid, 10.0) == (0.85, 0.5)


def test_ties_go_to_the_higher_cut():
    grid = _grid({(0.75, 0.5): (50, 10), (0.75, 0.8): (50, 10)})
    assert choose_weighted(grid, 3.0) == (0.75, 0.8)
