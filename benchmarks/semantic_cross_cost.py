"""Lookup latency of the real cache with two guard weights files, as a ratio (same run).

    python benchmarks/semantic_cross_cost.py --data benchmarks/data/holdout5_prompts.jsonl \
        --weights cross=/tmp/cross_weights.json [--rounds 4] [--limit 200] [--out FILE] \
        [--pair-weights PAIR.safetensors]

Each variant replays the same prompts (seeded order 0, a miss inserts its reply) through a fresh
real `SemanticCache` with the shipped config and the unmemoised embedding model, so a lookup
pays for its own embedding, spans and (with cross features) the joint pass of its candidates.
Every lookup is timed; per round the variants run in alternating order (A B, then B A, ...),
and each figure is the median over rounds of that round's per-lookup median / mean / p90. The
`default` variant is the shipped weights file; ratios are against it. On a loaded machine read
the ratios, not the milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.semantic_quality import EMBED_KWARGS, load_rows  # noqa: E402
from config.semantic import EmbedderConfig, GuardConfig, SemanticCacheConfig  # noqa: E402
from gateway.semantic.cache import (  # noqa: E402
    CachedReply,
    CacheQuery,
    SemanticCache,
    build_guard,
)
from gateway.semantic.embedder import Embedder, load_model  # noqa: E402
from policies.semantic.categorizer import Categorizer, build_categorizer  # noqa: E402


async def replay(
    texts: list[str], cfg: SemanticCacheConfig, model: object, categorizer: Categorizer
) -> tuple[list[float], int]:
    """Per-lookup seconds over `texts` through a fresh cache, and how many lookups hit."""
    known = model.whole_words() if cfg.guard.typo_vocabulary else frozenset()  # type: ignore[attr-defined]
    cache = SemanticCache(cfg, Embedder(cfg.embedder, model), categorizer, build_guard(cfg, known))
    await cache.start()
    seconds: list[float] = []
    hits = 0
    try:
        for n, text in enumerate(texts):
            query = CacheQuery(tenant="cost", model="m", text=text, temperature=0.0)
            started = time.perf_counter()
            result = await cache.lookup(query)
            seconds.append(time.perf_counter() - started)
            if result.status == "hit":
                hits += 1
            else:
                await cache.insert(result, CachedReply(text=f"reply {n}"))
    finally:
        await cache.close()
    return seconds, hits


def config(weights_path: str, pair_weights_path: str = "") -> SemanticCacheConfig:
    base = SemanticCacheConfig()
    fields = {"weights_path": weights_path, "pair_weights_path": pair_weights_path}
    guard = GuardConfig(**{**_fields(base.guard), **fields})
    # Sequential lookups have nothing to batch: no micro-batch wait.
    embedder = EmbedderConfig(**{**_fields(base.embedder), "max_wait_ms": 0.0})
    return SemanticCacheConfig(**{**_fields(base), "guard": guard, "embedder": embedder})


def _fields(struct: object) -> dict[str, object]:
    return {name: getattr(struct, name) for name in struct.__struct_fields__}  # type: ignore[attr-defined]


async def run(args: argparse.Namespace) -> dict[str, object]:
    rows = load_rows(args.data)
    random.Random(0).shuffle(rows)
    texts = [r["prompt"] for r in rows][: args.limit]
    variants = {"default": config("")}
    for spec in args.weights.split(","):
        name, path = spec.split("=", 1)
        variants[name] = config(path, args.pair_weights)
    model = load_model(SemanticCacheConfig().embedder)
    base = SemanticCacheConfig()
    categorizer = build_categorizer(
        base.categorizer,
        lambda texts: model.encode(texts, **EMBED_KWARGS),
        model.get_embedding_dimension(),  # type: ignore[attr-defined]
    )
    per: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            seconds, hits = await replay(texts, variants[name], model, categorizer)
            ms = 1000 * np.asarray(seconds)
            per[name].append(
                {
                    "median_ms": float(np.median(ms)),
                    "mean_ms": float(ms.mean()),
                    "p90_ms": float(np.percentile(ms, 90)),
                    "hits": hits,
                }
            )
            print(f"round {r} {name}: {per[name][-1]}", flush=True)
    summary: dict[str, dict[str, float]] = {}
    for name, rounds in per.items():
        summary[name] = {
            k: float(np.median([x[k] for x in rounds])) for k in ("median_ms", "mean_ms", "p90_ms")
        }
        summary[name]["hits"] = rounds[0]["hits"]
    for name in names:
        for k in ("median_ms", "mean_ms", "p90_ms"):
            summary[name][k.replace("_ms", "_ratio")] = summary[name][k] / summary["default"][k]
    return {"data": args.data, "lookups": len(texts), "rounds": per, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True, help="name=path,... against the shipped")
    parser.add_argument("--pair-weights", default="", help="fine-tuned pair model a variant reads")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print("\nvariant | per-lookup median ms | mean ms | p90 ms | ratio median / mean / p90")
    for name, s in report["summary"].items():  # type: ignore[union-attr]
        print(
            f"{name} | {s['median_ms']:.2f} | {s['mean_ms']:.2f} | {s['p90_ms']:.2f} | "
            f"{s['median_ratio']:.2f} / {s['mean_ratio']:.2f} / {s['p90_ratio']:.2f}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
