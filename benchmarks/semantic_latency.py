"""Lookup latency with a full index (the `latency` mode of semantic_eval.py), step by step.

    python benchmarks/semantic_eval.py latency --entries 100000 --single 200 --rounds 4 [--out F]

Every figure is also a ratio against the unmodified path measured in the same run: the fp32
`SentenceTransformer.encode` for bare encodes, and lookups whose embedder wraps that model.

1. Agreement of each precision with sentence-transformers on the dev prompts (cosine).
2. Bare encodes (no event loop), batch 1/16/64, torch threads 1/2, interleaved repeats.
3. The index is filled with `--entries` synthetic unit vectors in the lookup's own partition (the
   filtered HNSW path, the slow one) in one bulk `add_items`; search alone is timed, and its
   recall@k against exact search checked.
4. Lookups through the real cache (embed + search + guard): one at a time, and 64 at once, for
   each embedder variant, interleaved in `--rounds` repeats. Prompts are distinct real prompts
   (no repeat within a variant, and each repeat gets a fresh embedder, so the recent-text cache
   never flatters a figure). A 1 ms ticker records the event loop's lag during each phase.
Whether a precision may be the default: benchmarks/semantic_precision.py (hit and false-hit
rates at the shipped thresholds, per precision).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config.semantic import EmbedderConfig, IndexConfig, SemanticCacheConfig  # noqa: E402
from gateway.semantic.cache import (  # noqa: E402
    CacheQuery,
    SemanticCache,
    build_semantic_cache,
)  # noqa: E402
from gateway.semantic.embedder import Embedder  # noqa: E402
from gateway.semantic.entries import Entry  # noqa: E402
from gateway.semantic.text_encoder import TextEncoder, default_model_path  # noqa: E402
from policies.semantic.pair_features import prompt_terms  # noqa: E402
from policies.semantic.request_rules import partition_key  # noqa: E402

BURST = 64


@dataclass(frozen=True)
class Variant:
    name: str
    encoder: str  # "st" = the unmodified SentenceTransformer.encode; "-eager" = not traced
    num_threads: int
    max_batch: int
    max_wait_ms: float = 0.0


VARIANTS = (
    Variant("st fp32 (session 1)", "st", 2, 32, 2.0),
    Variant("direct fp32 eager b64", "fp32-eager", 1, 64),
    Variant("direct fp32 b64", "fp32", 1, 64),
    Variant("bf16 b64", "bf16", 1, 64),
    Variant("bf16 b16 (default)", "bf16", 1, 16),
    Variant("bf16 b8", "bf16", 1, 8),
    Variant("bf16 b16 2 threads", "bf16", 2, 16),
    Variant("int8 b16", "int8", 1, 16),
)


def pct(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values or [0.0]) * 1000
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 3),
        "p99_ms": round(float(np.percentile(arr, 99)), 3),
        "max_ms": round(float(arr.max()), 3),
    }


def load_texts(path: str, needed: int) -> list[str]:
    if not Path(path).is_file():
        raise SystemExit(f"prompt file not found: {path} (pass --data)")
    rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    texts = list(dict.fromkeys(r["prompt"] for r in rows))
    i = 0
    while len(texts) < needed:  # pad with distinct templated prompts
        texts.append(f"how do I fix error number {i} when building project {i * 31} on linux")
        i += 1
    return texts


def load_encoders() -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    path = default_model_path()
    encoders: dict[str, Any] = {
        "st": SentenceTransformer(path, device="cpu", local_files_only=True)
    }
    for name in ("fp32-eager", "fp32", "bf16-eager", "bf16", "int8"):
        precision, _, eager = name.partition("-")
        encoders[name] = TextEncoder.load(path, precision=precision, trace=not eager)
    return encoders


def agreement(encoders: dict[str, Any], texts: list[str]) -> dict[str, dict[str, float]]:
    kw = {"normalize_embeddings": True, "batch_size": 32, "show_progress_bar": False}
    ref = np.asarray(encoders["st"].encode(texts, **kw))
    out = {}
    for name in encoders:
        if name == "st":
            continue
        vec = encoders[name].encode(texts, batch_size=32)
        cos = (vec * ref).sum(axis=1)
        out[name] = {
            "cos_min": round(float(cos.min()), 5),
            "cos_p1": round(float(np.percentile(cos, 1)), 5),
            "cos_mean": round(float(cos.mean()), 6),
            "max_abs_diff": float(np.abs(vec - ref).max()),
        }
    return out


def bare_encodes(encoders: dict[str, Any], texts: list[str]) -> list[dict[str, Any]]:
    import torch

    rows = []
    kw = {"normalize_embeddings": True, "show_progress_bar": False}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for size, repeats in ((1, 30), (16, 6), (BURST, 3)):
            times: dict[str, list[float]] = {k: [] for k in encoders}
            for enc in encoders.values():  # warm-up (oneDNN primitive creation)
                enc.encode(texts[:size], batch_size=BURST, **kw)
            for r in range(repeats):
                batch = texts[(r * size) % 300 : (r * size) % 300 + size]
                for name, enc in encoders.items():
                    t = time.perf_counter()
                    enc.encode(batch, batch_size=BURST, **kw)
                    times[name].append(time.perf_counter() - t)
            base = float(np.median(times["st"]))
            rows.append(
                {
                    "threads": threads,
                    "batch": size,
                    **{
                        name: {
                            "p50_ms": round(1000 * float(np.median(v)), 2),
                            "speedup": round(base / float(np.median(v)), 2),
                        }
                        for name, v in times.items()
                    },
                }
            )
    torch.set_num_threads(1)
    return rows


def fill(cache: SemanticCache, entries: int, seed: int, graph_dir: str) -> tuple[bytes, float]:
    """Bulk-load `entries` seeded random unit vectors. The built graph is kept in `graph_dir`
    (keyed by everything that shapes it), so a re-run loads it in a second instead of
    rebuilding it (minutes on a busy 2-core box)."""
    policy = cache.cfg.policy("code")
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
    started = time.perf_counter()
    vectors = rng.standard_normal((entries, cache.embedder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    icfg = cache.cfg.index
    name = f"kvgate-semlat-{entries}-{seed}-{icfg.m}-{icfg.ef_construction}.hnsw"
    graph = Path(graph_dir) / name if graph_dir else None
    if graph is not None and graph.is_file():
        slots = cache.index.restore(str(graph), vectors)
    else:
        slots = cache.index.add_many(vectors, num_threads=-1)
        if graph is not None:
            cache.index.save(str(graph))
    terms = prompt_terms("synthetic")
    for i, slot in enumerate(slots.tolist()):
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
    return key, time.perf_counter() - started


def search_profile(
    cache: SemanticCache, key: bytes, queries: np.ndarray, entries: int, seed: int
) -> dict[str, Any]:
    """Search alone (as a lookup runs it: one partition holds every entry here, so without the
    membership filter), the same graph search with the filter, interleaved, and recall@k of
    HNSW against exact search."""
    terms = prompt_terms("query")
    k = cache.cfg.index.candidates
    members = cache.table.by_partition[key]
    times: list[float] = []
    filtered: list[float] = []
    for i, q in enumerate(queries):
        for run in (0, 1) if i % 2 else (1, 0):
            t = time.perf_counter()
            if run == 0:
                cache._search(q, key, terms, 2.0, 0.0)  # threshold 2: no hit, all walked
                times.append(time.perf_counter() - t)
            else:
                cache.index.search(q, k, members.__contains__)
                filtered.append(time.perf_counter() - t)
    # Recall where it matters: a query near a stored entry (cosine ~0.9, like a paraphrase
    # at the threshold) must find that entry, and HNSW's top-k should be the exact top-k.
    rng = np.random.default_rng(seed + 1)
    stored = cache.index._vectors[:entries]
    picks = rng.choice(entries, size=200, replace=False)
    noise = rng.standard_normal((200, stored.shape[1])).astype(np.float32)
    noise *= 0.48 / np.linalg.norm(noise, axis=1, keepdims=True)
    near = stored[picks] + noise
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    planted = overlap = 0
    for pick, q in zip(picks.tolist(), near, strict=True):
        exact = set(np.argsort(-(stored @ q))[:k].tolist())
        approx = {s for s, _ in cache.index.search(q, k, members.__contains__)}
        planted += pick in approx
        overlap += len(exact & approx)
    cos = float(np.median((near * stored[picks]).sum(axis=1)))
    return {
        "search": pct(times),
        "search_with_partition_filter": pct(filtered),
        "k": k,
        "query_cosine_to_planted": round(cos, 3),
        "planted_found": planted / 200,
        "recall_at_k_vs_exact": overlap / (200 * k),
    }


async def run_variants(
    cache: SemanticCache, encoders: dict[str, Any], texts: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    per_round = args.single // args.rounds
    lags: dict[tuple[str, str], list[float]] = {}
    single: dict[str, list[float]] = {v.name: [] for v in VARIANTS}
    burst: dict[str, list[float]] = {v.name: [] for v in VARIANTS}
    batches: dict[str, list[int]] = {v.name: [0, 0] for v in VARIANTS}
    phase: list[tuple[str, str]] = [("idle", "idle")]
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.setdefault(phase[0], []).append(time.perf_counter() - t - 0.001)

    async def timed(text: str) -> float:
        query = CacheQuery(
            tenant="bench",
            model="m",
            text=text,
            temperature=0.0,
            category_header="code",
            cache_control="no-store",
        )
        t = time.perf_counter()
        result = await cache.lookup(query)
        assert result.status == "miss", result  # synthetic entries never match a prompt
        return time.perf_counter() - t

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(2.0)  # the machine's own scheduling noise, with no lookups running
    for r in range(args.rounds):
        for v in VARIANTS:
            cfg = EmbedderConfig(  # precision and trace: the encoder object decides them
                num_threads=v.num_threads,
                max_batch=v.max_batch,
                max_wait_ms=v.max_wait_ms,
            )
            cache.embedder = Embedder(cfg, encoders[v.encoder])
            await cache.start()
            base = r * (per_round + BURST)
            phase[0] = (v.name, "single")
            for text in texts[base : base + per_round]:
                single[v.name].append(await timed(text))
            phase[0] = (v.name, "burst")
            chunk = texts[base + per_round : base + per_round + BURST]
            burst[v.name] += await asyncio.gather(*(timed(t) for t in chunk))
            phase[0] = ("idle", "idle")
            batches[v.name][0] += cache.embedder.batches
            batches[v.name][1] += cache.embedder.batched_texts
            await cache.close()
    stop.set()
    await tick
    base_single = float(np.median(single[VARIANTS[0].name]))
    base_burst = float(np.median(burst[VARIANTS[0].name]))
    out: dict[str, Any] = {"lag_idle": pct(lags.get(("idle", "idle"), []))}
    for v in VARIANTS:
        out[v.name] = {
            "single": pct(single[v.name]),
            "burst64": pct(burst[v.name]),
            "single_speedup_p50": round(base_single / float(np.median(single[v.name])), 2),
            "burst_speedup_p50": round(base_burst / float(np.median(burst[v.name])), 2),
            "lag_single": pct(lags.get((v.name, "single"), [])),
            "lag_burst": pct(lags.get((v.name, "burst"), [])),
            "batches": batches[v.name][0],
            "texts": batches[v.name][1],
        }
    return out


def flop_bound(encoder: TextEncoder, texts: list[str], bare: list[dict[str, Any]]) -> dict:
    """Work in one burst of 64 prompts, and the best measured bf16 throughput."""
    cfg = encoder.bert.config
    tokens = float(np.mean([len(e.ids) for e in encoder.tokenizer.encode_batch(texts[:BURST])]))
    h, ff, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    per_token = 2 * layers * (4 * h * h + 2 * h * ff) + 4 * layers * h * tokens  # + attention
    burst_gflop = BURST * tokens * per_token / 1e9
    best = min(
        row["bf16"]["p50_ms"] for row in bare if row["batch"] == BURST and row["threads"] == 1
    )
    return {
        "mean_tokens": round(tokens, 1),
        "gflop_per_prompt": round(tokens * per_token / 1e9, 3),
        "gflop_per_burst64": round(burst_gflop, 2),
        "bf16_burst64_encode_ms": best,
        "bf16_effective_gflops": round(burst_gflop / (best / 1000), 1),
        "gflops_needed_for_p99_40ms": round(burst_gflop / 0.040, 1),
    }


async def latency(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    texts = load_texts(args.data, args.single + BURST * args.rounds)
    encoders = load_encoders()
    report: dict[str, Any] = {"entries": args.entries, "texts": len(texts)}
    report["agreement_vs_st_fp32"] = agreement(encoders, texts[:600])
    report["bare_encode"] = bare_encodes(encoders, texts)
    report["flop_bound"] = flop_bound(encoders["bf16"], texts, report["bare_encode"])
    ef = getattr(args, "ef_search", 0) or IndexConfig().ef_search
    cfg = SemanticCacheConfig(
        index=IndexConfig(
            max_entries=args.entries + 1_000, initial_capacity=args.entries + 1_000, ef_search=ef
        )
    )
    cache = build_semantic_cache(cfg, model=encoders["bf16"])
    graph_dir = getattr(args, "graph_dir", tempfile.gettempdir())
    key, report["fill_s"] = fill(cache, args.entries, args.seed, graph_dir)
    queries = encoders["bf16"].encode(texts[:200])
    report["search_only"] = search_profile(cache, key, queries, args.entries, args.seed)
    report["lookups"] = await run_variants(cache, encoders, texts, args)
    return report


def print_latency(report: dict[str, Any]) -> None:
    print(f"entries {report['entries']}, fill {report['fill_s']:.1f} s")
    print("agreement with SentenceTransformer fp32 (dev prompts):")
    for name, row in report["agreement_vs_st_fp32"].items():
        print(f"  {name:5s} {row}")
    print("bare encode p50 ms (speed-up vs st; '-eager' = not traced):")
    for row in report["bare_encode"]:
        cells = "  ".join(
            f"{k} {v['p50_ms']:6.1f} ({v['speedup']:4.2f}x)"
            for k, v in row.items()
            if isinstance(v, dict)
        )
        print(f"  threads {row['threads']} batch {row['batch']:3d}: {cells}")
    print(f"flop bound: {report['flop_bound']}")
    print(f"search only: {report['search_only']}")
    print(
        f"{'lookup variant':22s} | {'single p50/p99 ms':>18s} | {'64-burst p50/p99 ms':>20s} | "
        f"{'x p50':>11s} | {'lag p99/max single':>18s} | {'lag p99/max burst':>18s} | batches"
    )
    print(f"event-loop lag with no lookups running: {report['lookups']['lag_idle']}")
    for name, row in report["lookups"].items():
        if name == "lag_idle":
            continue
        s, b = row["single"], row["burst64"]
        ls, lb = row["lag_single"], row["lag_burst"]
        print(
            f"{name:22s} | {s['p50_ms']:8.1f} / {s['p99_ms']:7.1f} | {b['p50_ms']:9.1f} / "
            f"{b['p99_ms']:8.1f} | {row['single_speedup_p50']:4.2f} {row['burst_speedup_p50']:5.2f}"
            f" | {ls['p99_ms']:7.2f} / {ls['max_ms']:7.2f} | {lb['p99_ms']:7.2f} / "
            f"{lb['max_ms']:7.2f} | {row['batches']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["latency"])
    parser.add_argument("--data", default="../shared/semantic/dev_prompts.jsonl")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ef-search", type=int, default=0, help="HNSW ef (0: the config's)")
    parser.add_argument("--graph-dir", default=tempfile.gettempdir(), help="'' = never cache")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    report = asyncio.run(latency(args))
    print_latency(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
