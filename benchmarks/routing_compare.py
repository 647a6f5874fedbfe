"""Judge a change to `lmetric` from routing_sim runs before and after it, case by case.

    python -m benchmarks.routing_compare --before b_conv.json b_agent.json ... \
        --after a_conv.json a_agent.json ... [--reference conv] [--out verdict.json]

Each `--before` file pairs with the `--after` file at the same position (the same trace, the
same cases: `python -m benchmarks.routing_sim --trace T --out F` before and after the change).
The adoption rule (decided before looking at results, issue #5 ninth session):

- over all cases, lmetric's TTFT p99 is lower in more cases than it is higher;
- no case's TTFT p99 worsens by more than 5 %;
- on the reference trace (the first pair unless `--reference` names another; matched against
  the file names): lmetric ≤ 0.5 × round-robin at ρ 0.9 wherever it was before, the best gateway
  policy in every case, and no hit ratio lower than before;
- the number of cases where lmetric is the best gateway policy does not fall.

When the runs were made with `--repeats` (several nearby load factors), the medians are
compared; the single-run p99 otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.routing_sim import POLICIES, REFERENCE

WORSEN_LIMIT = 0.05  # the rule's "no case worsens by more than 5 %"


def p99(row: dict[str, Any]) -> float:
    """The case's TTFT p99 for a policy: the median over repeats when there were any."""
    return float(row.get("ttft_p99_median_s", row["ttft_p99_s"]))


def best_gateway(policies: dict[str, dict[str, Any]]) -> str:
    """The gateway policy with the lowest TTFT p99; lmetric wins ties."""
    names = [n for n in POLICIES if n in policies]
    return min(names, key=lambda n: (p99(policies[n]), n != "lmetric"))


def compare_pair(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for b, a in zip(before["cases"], after["cases"], strict=True):
        key = (b["num_workers"], b["cache"], b["target_busy"])
        if key != (a["num_workers"], a["cache"], a["target_busy"]):
            raise SystemExit(f"cases differ: {key} vs {a['num_workers'], a['cache']}")
        pb, pa = b["policies"], a["policies"]
        rows.append(
            {
                "num_workers": b["num_workers"],
                "cache": b["cache"],
                "target_busy": b["target_busy"],
                "p99_before_s": p99(pb["lmetric"]),
                "p99_after_s": p99(pa["lmetric"]),
                "change": p99(pa["lmetric"]) / p99(pb["lmetric"]) - 1.0,
                "over_rr_before": p99(pb["lmetric"]) / p99(pb[REFERENCE]),
                "over_rr_after": p99(pa["lmetric"]) / p99(pa[REFERENCE]),
                "best_before": best_gateway(pb),
                "best_after": best_gateway(pa),
                "hit_before": pb["lmetric"]["hit_ratio"],
                "hit_after": pa["lmetric"]["hit_ratio"],
                "tpot_p99_before_s": pb["lmetric"]["tpot_p99_s"],
                "tpot_p99_after_s": pa["lmetric"]["tpot_p99_s"],
            }
        )
    return rows


def verdict(traces: dict[str, list[dict[str, Any]]], reference: str) -> dict[str, Any]:
    rows = [r for rs in traces.values() for r in rs]
    lower = sum(r["change"] < 0 for r in rows)
    higher = sum(r["change"] > 0 for r in rows)
    worst = max(rows, key=lambda r: r["change"])
    ref = traces[reference]
    ref_rr = all(
        r["over_rr_after"] <= 0.5
        for r in ref
        if r["target_busy"] >= 0.9 and r["over_rr_before"] <= 0.5
    )
    ref_best = all(r["best_after"] == "lmetric" for r in ref)
    ref_hits = all(r["hit_after"] >= r["hit_before"] for r in ref)
    best_before = sum(r["best_before"] == "lmetric" for r in rows)
    best_after = sum(r["best_after"] == "lmetric" for r in rows)
    rules = {
        "lower in more cases than higher": lower > higher,
        "no case worse by more than 5 %": worst["change"] <= WORSEN_LIMIT,
        "reference: <= 0.5 x RR at rho 0.9 where it was": ref_rr,
        "reference: best gateway policy in every case": ref_best,
        "reference: no hit ratio lower": ref_hits,
        "cases where lmetric is best do not fall": best_after >= best_before,
    }
    return {
        "cases": len(rows),
        "lower": lower,
        "higher": higher,
        "worst_change": worst["change"],
        "lmetric_best_before": best_before,
        "lmetric_best_after": best_after,
        "rules": rules,
        "adopt": all(rules.values()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, nargs="+", required=True)
    parser.add_argument("--after", type=Path, nargs="+", required=True)
    parser.add_argument("--reference", default=None, help="a part of the reference file's name")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if len(args.before) != len(args.after):
        raise SystemExit("--before and --after need the same number of files")
    traces: dict[str, list[dict[str, Any]]] = {}
    for b, a in zip(args.before, args.after, strict=True):
        traces[a.stem] = compare_pair(json.loads(b.read_text()), json.loads(a.read_text()))
    reference = next(iter(traces))
    if args.reference:
        reference = next(n for n in traces if args.reference in n)
    print(
        f"{'trace':<16}{'case':<18}{'p99 before':>11}{'after':>8}{'change':>8}{'/RR':>6}"
        f"{'best before':>22}{'best after':>22}{'hit before':>11}{'after':>7}"
    )
    for name, rows in traces.items():
        for r in rows:
            case = f"{r['num_workers']}w {r['cache'][:5]} ρ{r['target_busy']:.1f}"
            print(
                f"{name[:15]:<16}{case:<18}{r['p99_before_s']:>11.3f}{r['p99_after_s']:>8.3f}"
                f"{r['change']:>+8.1%}{r['over_rr_after']:>6.2f}{r['best_before']:>22}"
                f"{r['best_after']:>22}{r['hit_before']:>11.4f}{r['hit_after']:>7.4f}"
            )
    v = verdict(traces, reference)
    print(
        f"\nlower in {v['lower']}, higher in {v['higher']} of {v['cases']} cases; worst "
        f"{v['worst_change']:+.1%}; lmetric best in {v['lmetric_best_before']} -> "
        f"{v['lmetric_best_after']} (reference: {reference})"
    )
    for rule, ok in v["rules"].items():
        print(f"  {'pass' if ok else 'FAIL'}  {rule}")
    print("verdict:", "adopt" if v["adopt"] else "do not adopt")
    if args.out:
        args.out.write_text(json.dumps({"traces": traces, "verdict": v}, indent=1))


if __name__ == "__main__":
    main()
