"""Does the embedder's precision change the cache's answers? Hit and false-hit rates at the
shipped thresholds and guard, once per precision (fp32, bf16, int8).

    python benchmarks/semantic_precision.py --data ../shared/semantic/dev_prompts.jsonl \
        [--orders 5] [--seed 0] [--out FILE]

The dev prompts are replayed through the real cache with the shipped config (lookup, insert on
a miss) in `--orders` seeded orders. A hit is false when the stored reply (its cluster) is not
the query's cluster. A precision may be the default only if these rates do not move.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config.semantic import SemanticCacheConfig  # noqa: E402
from gateway.semantic.cache import CachedReply, CacheQuery, build_semantic_cache  # noqa: E402
from gateway.semantic.text_encoder import TextEncoder, default_model_path  # noqa: E402


class _Memo:
    """Each distinct text is encoded once (in batches) for the whole quality check."""

    def __init__(self, encoder: TextEncoder, texts: list[str]):
        self.encoder = encoder
        self.vectors = dict(zip(texts, encoder.encode(texts, batch_size=32), strict=True))

    def get_embedding_dimension(self) -> int:
        return self.encoder.dim

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        missing = [t for t in texts if t not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, self.encoder.encode(missing), strict=True))
        return np.stack([self.vectors[t] for t in texts])


async def replay_shipped(rows: list[dict[str, str]], memo: _Memo, seed: int) -> dict[str, Any]:
    """Lookup-then-insert replay in a seeded order with the shipped config (thresholds, learned
    guard); hits, false hits and possible hits by labelled category."""
    cache = build_semantic_cache(SemanticCacheConfig(), model=memo)
    await cache.start()
    order = list(range(len(rows)))
    np.random.default_rng(seed).shuffle(order)
    seen: set[str] = set()
    tally: dict[str, list[int]] = {}
    try:
        for i in order:
            row = rows[i]
            t = tally.setdefault(row["category"], [0, 0, 0])  # possible, hits, false
            t[0] += row["cluster"] in seen
            query = CacheQuery(tenant="eval", model="m", text=row["prompt"], temperature=0.0)
            result = await cache.lookup(query)
            if result.status == "hit":
                assert result.reply is not None
                t[1] += 1
                t[2] += result.reply.text != row["cluster"]
            else:
                await cache.insert(result, CachedReply(text=row["cluster"]))
                seen.add(row["cluster"])
    finally:
        await cache.close()
    return tally


async def precision_check(args: argparse.Namespace, rows: list[dict[str, str]]) -> dict[str, Any]:
    """Hit and false-hit rates at the shipped thresholds and guard, per precision."""
    texts = list(dict.fromkeys(r["prompt"] for r in rows))
    examples = [t for ts in SemanticCacheConfig().categorizer.examples.values() for t in ts]
    out: dict[str, Any] = {}
    for precision in ("fp32", "bf16", "int8"):
        encoder = TextEncoder.load(default_model_path(), precision=precision)
        memo = _Memo(encoder, texts + examples)
        totals: dict[str, list[int]] = {}
        for seed in range(args.orders):
            for category, t in (await replay_shipped(rows, memo, args.seed + seed)).items():
                acc = totals.setdefault(category, [0, 0, 0])
                acc[:] = [a + b for a, b in zip(acc, t, strict=True)]
        totals["overall"] = [sum(t[j] for t in totals.values()) for j in range(3)]
        out[precision] = {
            c: {
                "possible": p,
                "hits": h,
                "false_hits": f,
                "hit_rate": round((h - f) / max(1, p), 4),
                "false_rate": round(f / max(1, h), 4),
            }
            for c, (p, h, f) in sorted(totals.items())
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/semantic/dev_prompts.jsonl")
    parser.add_argument("--orders", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    rows = [json.loads(x) for x in Path(args.data).read_text().splitlines() if x.strip()]
    report = asyncio.run(precision_check(args, rows))
    print("shipped thresholds and guard, replayed in --orders seeded orders: hit / false rate")
    for category in report["fp32"]:
        cells = "  ".join(
            f"{p} {r[category]['hit_rate']:6.1%} / {r[category]['false_rate']:5.1%}"
            for p, r in report.items()
        )
        print(f"  {category:15s} {cells}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
