"""The committed holdout prompt set keeps the dev set's format and the shape issue #6 asks for."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from config.semantic import CATEGORIES

HOLDOUT = Path(__file__).resolve().parents[2] / "benchmarks/data/holdout_prompts.jsonl"
KINDS = {"number", "negation", "entity", "direction", "related_concept", "antonym", "qualifier"}


def test_holdout_set_shape_and_sibling_links():
    rows = [json.loads(line) for line in HOLDOUT.read_text().splitlines() if line.strip()]
    assert len(rows) >= 200
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["prompt"] for r in rows}) == len(rows)
    sizes = Counter(r["cluster"] for r in rows)
    assert len(sizes) >= 50 and all(2 <= n <= 5 for n in sizes.values())
    category = {}
    sibling = {}
    for r in rows:
        assert set(r) <= {"id", "cluster", "category", "prompt", "sibling", "sibling_kind"}
        assert r["category"] in CATEGORIES
        # A cluster has one category and one sibling (or none) on every prompt.
        assert category.setdefault(r["cluster"], r["category"]) == r["category"]
        assert sibling.setdefault(r["cluster"], r.get("sibling")) == r.get("sibling")
    for cluster, other in sibling.items():
        if other is not None:
            assert sibling[other] == cluster, cluster
    kinds = {r["sibling_kind"] for r in rows if r.get("sibling")}
    assert KINDS <= kinds
    assert set(Counter(r["category"] for r in rows)) == set(CATEGORIES)
