"""The second blind holdout set keeps the dev set's format and every sibling link is two-way."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from config.semantic import CATEGORIES

HOLDOUT2 = Path(__file__).resolve().parents[2] / "benchmarks/data/holdout2_prompts.jsonl"
KINDS = {
    "number",
    "negation",
    "entity",
    "direction",
    "related_concept",
    "antonym",
    "qualifier",
    "operator",
}
FIELDS = {"id", "cluster", "category", "prompt", "sibling", "sibling_kind"}


def load_rows() -> list[dict]:
    return [json.loads(line) for line in HOLDOUT2.read_text().splitlines() if line.strip()]


def test_ids_prompts_and_categories():
    rows = load_rows()
    assert len(rows) >= 300
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(re.fullmatch(r"k\d{4}", r["id"]) for r in rows)
    assert len({r["prompt"].strip().lower() for r in rows}) == len(rows)
    for r in rows:
        assert set(r) <= FIELDS and {"id", "cluster", "category", "prompt"} <= set(r), r["id"]
        assert r["category"] in CATEGORIES, r["id"]
        assert isinstance(r["prompt"], str) and r["prompt"].strip(), r["id"]
        # A sibling always comes with its kind, and a kind never comes alone.
        assert ("sibling" in r) == ("sibling_kind" in r), r["id"]
        if "sibling_kind" in r:
            assert r["sibling_kind"] in KINDS, r["id"]
    assert set(Counter(r["category"] for r in rows)) == set(CATEGORIES)


def test_clusters_and_two_way_sibling_links():
    rows = load_rows()
    sizes = Counter(r["cluster"] for r in rows)
    assert len(sizes) >= 90
    assert all(2 <= n <= 5 for n in sizes.values()), sizes
    category: dict[str, str] = {}
    sibling: dict[str, tuple[str, str] | None] = {}
    for r in rows:
        link = (r["sibling"], r["sibling_kind"]) if "sibling" in r else None
        # Every prompt of a cluster agrees on the category and on the sibling link.
        assert category.setdefault(r["cluster"], r["category"]) == r["category"], r["id"]
        assert sibling.setdefault(r["cluster"], link) == link, r["id"]
    for cluster, link in sibling.items():
        if link is None:
            continue
        other, kind = link
        assert other != cluster
        assert other in sibling, f"{cluster} names missing sibling {other}"
        assert sibling[other] == (cluster, kind), f"{cluster} <-> {other} not symmetric"
        assert category[other] == category[cluster]
    paired = sum(link is not None for link in sibling.values())
    assert paired >= 0.7 * len(sibling)
    assert {link[1] for link in sibling.values() if link} == KINDS
