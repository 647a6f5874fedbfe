"""Semantic cache evaluation: hit quality (threshold sweep, guard on/off) and lookup latency.

    python benchmarks/semantic_eval.py quality [--data ../shared/semantic/dev_prompts.jsonl]
        [--folds 5] [--seed 0] [--out FILE] [--write-weights policies/semantic/guard_weights.json]
        [--alignment] [--tokens] [--margin M]
        [--[no-]typo-vocab] [--pair-head] [--cross scalars|vectors] [--cross-orders 1|2]
    python benchmarks/semantic_eval.py holdout [--data ../shared/semantic/dev_prompts.jsonl]
        [--holdout benchmarks/data/holdout_prompts.jsonl] [--orders 5] [--[no-]typo-vocab]
        [--pair-head] [--cross scalars|vectors] [--cross-orders 1|2] [--out FILE]
        [--weights FILE [--threshold T] [--cut C] [--pair-weights PAIR.safetensors]]
    python benchmarks/semantic_eval.py contrast [--data ...] [--holdout ...] [--min-cosine 0.7]
    python benchmarks/semantic_eval.py latency [--entries 100000] [--out FILE]

quality and holdout take `--checks none|all|NAME,...` (the guard's contrast checks; default:
the shipped config's).

Quality (benchmarks/semantic_quality.py): prompts are replayed in a seeded random order through
the real SemanticCache; guard, probability cut and thresholds are learned on some cluster groups
and scored on the others (k-fold by group). Holdout (benchmarks/semantic_holdout.py): guards,
cuts and thresholds chosen on the dev set, scored on an independent prompt set. Contrast: what
each contrast check vetoes, pair by pair (benchmarks/semantic_contrast.py). Latency:
benchmarks/semantic_latency.py. The shipped guard weights are fitted on pooled prompt sets and
judged leave-one-set-out by benchmarks/semantic_pooled.py (`quality --write-weights` writes the
older dev-only recipe).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.semantic_quality import print_quality, quality  # noqa: E402
from config.semantic import SemanticCacheConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["quality", "holdout", "contrast", "latency"])
    parser.add_argument("--data", default="../shared/semantic/dev_prompts.jsonl")
    parser.add_argument("--holdout", default="benchmarks/data/holdout_prompts.jsonl")
    parser.add_argument("--orders", type=int, default=5, help="holdout: seeded replay orders")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--ef-search", type=int, default=0, help="latency: HNSW ef (0: config)")
    parser.add_argument("--write-weights", default="")
    parser.add_argument(
        "--alignment",
        action="store_true",
        help="quality: give the guard model the content-word alignment features (experiment)",
    )
    parser.add_argument(
        "--tokens",
        action="store_true",
        help="quality: give the guard model the contextual token alignment features (experiment)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=None,
        help="quality: held-out runner-up margin row at this margin (default: chosen per fold)",
    )
    parser.add_argument(
        "--typo-vocab",
        action=argparse.BooleanOptionalAction,
        default=SemanticCacheConfig().guard.typo_vocabulary,
        help="quality and holdout: never fold two whole vocabulary words as a typo "
        "(guard.typo_vocabulary; default: as the shipped config)",
    )
    parser.add_argument(
        "--pair-head",
        action="store_true",
        help="quality: give the guard model the pair head (|u-v|, u*v of the embeddings)",
    )
    parser.add_argument(
        "--cross",
        choices=["off", "scalars", "vectors"],
        default="off",
        help="quality/holdout: give the guard model cross-encoded pair features (experiment)",
    )
    parser.add_argument(
        "--cross-orders",
        type=int,
        choices=[1, 2],
        default=1,
        help="with --cross: joint passes (a, b) only, or (a, b) and (b, a) averaged",
    )
    parser.add_argument(
        "--checks",
        default=None,
        help="quality/holdout: the guard's contrast checks, none|all|NAME,... (default: shipped)",
    )
    parser.add_argument("--weights", default="", help="holdout: also score this guard weights file")
    parser.add_argument("--threshold", type=float, default=None, help="holdout: for --weights")
    parser.add_argument("--cut", type=float, default=None, help="holdout: for --weights")
    parser.add_argument(
        "--pair-weights", default="", help="holdout: the fine-tuned pair model a --weights reads"
    )
    parser.add_argument("--min-cosine", type=float, default=0.7, help="contrast: pairs from")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.mode == "quality":
        report = asyncio.run(quality(args))
        print_quality(report)
        if args.write_weights:
            text = json.dumps(report["shipped_guard"], indent=1)
            Path(args.write_weights).write_text(text + "\n")
    elif args.mode == "holdout":
        from benchmarks.semantic_holdout import holdout, print_holdout

        report = asyncio.run(holdout(args))
        print_holdout(report)
    elif args.mode == "contrast":
        from benchmarks.semantic_contrast import contrast, print_contrast

        report = contrast(args)
        print_contrast(report)
    else:
        from benchmarks.semantic_latency import latency, print_latency

        report = asyncio.run(latency(args))
        print_latency(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
