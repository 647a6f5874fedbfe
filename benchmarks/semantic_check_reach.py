"""What a contrast check reaches, pair by pair, with no model and no replay.

    python benchmarks/semantic_check_reach.py --sets dev=PATH,h1=PATH,... \
        [--checks operator,direction] [--out FILE]

For every prompt set: over all pairs of prompts of one cluster (the same question; a veto there
costs a hit) and all pairs across a designed sibling pair (another question; a veto there is
what the check is for), how many the check vetoes, in total and for siblings of each
`sibling_kind`. Pure string work (seconds); it says how far a rule reaches, not what the cache
serves: a vetoed pair may never have been a candidate, and the replay (semantic_pooled.py,
semantic_eval.py holdout) is the figure of record.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.semantic.contrast_checks import CHECKS  # noqa: E402
from policies.semantic.pair_features import prompt_terms  # noqa: E402


def reach(path: str, check_name: str) -> dict[str, object]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    check = CHECKS[check_name]
    tokens = {r["id"]: prompt_terms(r["prompt"]).tokens for r in rows}
    by_cluster: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_cluster[r["cluster"]].append(r)

    def vetoed(a: dict[str, str], b: dict[str, str]) -> bool:
        return check(tokens[a["id"]], tokens[b["id"]]) or check(tokens[b["id"]], tokens[a["id"]])

    same = [(a, b) for rs in by_cluster.values() for a, b in itertools.combinations(rs, 2)]
    siblings = [
        (a, b)
        for a in rows
        if a.get("sibling") in by_cluster and a["cluster"] < a["sibling"]
        for b in by_cluster[a["sibling"]]
    ]
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for a, b in siblings:
        cell = kinds[a.get("sibling_kind", "?")]
        cell[0] += vetoed(a, b)
        cell[1] += 1
    return {
        "same_cluster": [sum(vetoed(a, b) for a, b in same), len(same)],
        "siblings": [sum(v for v, _ in kinds.values()), len(siblings)],
        "by_kind": {k: v for k, v in sorted(kinds.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", required=True, help="name=path,...")
    parser.add_argument("--checks", default="operator,direction")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    report: dict[str, dict[str, object]] = {}
    for check in args.checks.split(","):
        for item in args.sets.split(","):
            name, path = item.split("=", 1)
            found = reach(path, check)
            report.setdefault(check, {})[name] = found
            same, sib = found["same_cluster"], found["siblings"]
            print(
                f"{check:12s} {name:4s} same-cluster vetoed {same[0]}/{same[1]}  "  # type: ignore[index]
                f"sibling pairs vetoed {sib[0]}/{sib[1]}  by kind {found['by_kind']}"  # type: ignore[index]
            )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
