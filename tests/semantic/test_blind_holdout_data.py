"""The blind holdout sets keep the dev set's format and every sibling link is two-way."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from config.semantic import CATEGORIES

DATA = Path(__file__).resolve().parents[2] / "benchmarks/data"
# (file, id pattern): each blind set has its own id letter so ids never collide across sets.
SETS = [
    ("holdout2_prompts.jsonl", r"k\d{4}"),
    ("holdout3_prompts.jsonl", r"m\d{4}"),
    ("holdout4_prompts.jsonl", r"q\d{4}"),
    ("holdout5_prompts.jsonl", r"r\d{4}"),
    ("holdout6_prompts.jsonl", r"s\d{4}"),
    ("holdout7_prompts.jsonl", r"t\d{4}"),
    ("holdout8_prompts.jsonl", r"u\d{4}"),
    ("holdout9_prompts.jsonl", r"v\d{4}"),
    ("holdout10_prompts.jsonl", r"w\d{4}"),
    ("holdout11_prompts.jsonl", r"x\d{4}"),
]
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


def load_rows(name: str) -> list[dict]:
    text = (DATA / name).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(("name", "id_pattern"), SETS)
def test_ids_prompts_and_categories(name: str, id_pattern: str):
    rows = load_rows(name)
    assert len(rows) >= 300
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(re.fullmatch(id_pattern, r["id"]) for r in rows)
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


@pytest.mark.parametrize("name", [name for name, _ in SETS])
def test_clusters_and_two_way_sibling_links(name: str):
    rows = load_rows(name)
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
