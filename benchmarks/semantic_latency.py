"""Lookup latency with a full index (the `latency` mode of semantic_eval.py).

The index is filled with `--entries` synthetic unit vectors in the lookup's own partition (the
filtered HNSW path, the slow one), then real prompts are looked up with the real model: one at
a time, and 64 at once. The baseline, measured in the same run, is a bare `model.encode` of one
prompt. A ticker task records the event loop's lag throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from config.semantic import IndexConfig, SemanticCacheConfig
from gateway.semantic.cache import CacheQuery, build_semantic_cache
from gateway.semantic.entries import Entry
from policies.semantic.pair_features import prompt_terms
from policies.semantic.request_rules import partition_key

PROMPTS = [
    f"how do I fix error number {i} when building project {i * 31} on linux" for i in range(400)
]


def ms(values: list[float]) -> dict[str, float]:
    arr = np.array(values) * 1000
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99))}


def fill(cache, entries: int, seed: int) -> float:  # type: ignore[no-untyped-def]
    cfg = cache.cfg
    policy = cfg.policy("code")
    key = partition_key(
        tenant="bench",
        model="m",
        system_prompt="",
        earlier_turns=[],
        policy=policy,
        temperature=0.0,
        top_p=None,
        seed=None,
    )
    rng = np.random.default_rng(seed)
    terms = prompt_terms("synthetic")
    started = time.perf_counter()
    for i in range(entries):
        vector = rng.standard_normal(cache.embedder.dim).astype(np.float32)
        vector /= np.linalg.norm(vector)
        slot = cache.index.add(vector)
        cache.table.add(
            Entry(
                slot=slot,
                partition=key,
                tenant="bench",
                category="code",
                terms=terms,
                reply=None,
                created_s=0.0,
                expires_s=1e12,
                seq=i,
            )
        )
    return time.perf_counter() - started


async def latency(args: argparse.Namespace) -> dict[str, object]:
    cfg = SemanticCacheConfig(
        index=IndexConfig(max_entries=args.entries + 1_000, initial_capacity=args.entries + 1_000)
    )
    cache = build_semantic_cache(cfg)
    fill_s = fill(cache, args.entries, args.seed)
    await cache.start()
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t - 0.001)

    def query(i: int) -> CacheQuery:
        return CacheQuery(
            tenant="bench",
            model="m",
            text=PROMPTS[i % len(PROMPTS)],
            temperature=0.0,
            category_header="code",
            cache_control="no-store",
        )

    async def timed(i: int) -> float:
        t = time.perf_counter()
        await cache.lookup(query(i))
        return time.perf_counter() - t

    baseline = []
    for i in range(args.single):
        t = time.perf_counter()
        cache.embedder.encode_now([PROMPTS[i]])
        baseline.append(time.perf_counter() - t)
    tick = asyncio.create_task(ticker())
    single = [await timed(i) for i in range(args.single)]
    single_lag = list(lags)
    lags.clear()
    concurrent: list[float] = []
    for r in range(args.rounds):
        concurrent += await asyncio.gather(*(timed(r * 64 + i) for i in range(64)))
    stop.set()
    await tick
    await cache.close()
    return {
        "entries": args.entries,
        "fill_s": fill_s,
        "baseline_encode_one": ms(baseline),
        "lookup_single": ms(single),
        "lookup_64_concurrent": ms(concurrent),
        "loop_lag_single": {"max_ms": 1000 * max(single_lag, default=0.0), **ms(single_lag or [0])},
        "loop_lag_64": {"max_ms": 1000 * max(lags, default=0.0), **ms(lags or [0])},
        "embed_batches": cache.embedder.batches,
        "embed_texts": cache.embedder.batched_texts,
    }


def print_latency(report: dict[str, object]) -> None:
    for key, value in report.items():
        print(f"{key:22s} {value}")
