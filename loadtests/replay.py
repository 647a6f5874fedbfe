"""Replay a slice of the Mooncake conversation trace against a running kvgate gateway.

Each trace request becomes a streamed `/v1/completions` request whose prompt is token ids built
from its `hash_ids`: block id b always expands to the same `--tokens-per-block` ids (drawn from a
RNG seeded by b), so equal ids at equal positions mean equal prefixes, as in the trace. Arrival
times follow the trace's timestamps multiplied by `--time-scale`. Bounded: at most
`--max-requests` requests, `--max-concurrency` at once, and `--max-wall-s` seconds in all
(requests still running then are cancelled and counted as unfinished).

Prints TTFT p50/p99 and the prefix hit ratio (sum of `usage.prompt_tokens_details.cached_tokens`
over sum of prompt tokens); run it once per routing policy. Example (docs/benchmarks.md):

    kvgate up --config loadtests/replay_fleet.yaml &
    python loadtests/replay.py --gateway http://127.0.0.1:8123 --label lmetric --out r.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import httpx

TRACE = Path("../shared/traces/mooncake_conversation.jsonl")  # run from the repo root
TRACE_BLOCK_TOKENS = 512  # the trace's tokens per hash id
FIRST_ID, NUM_IDS = 3, 256  # the byte tokenizer's byte ids: valid for any kvgate sim worker


def load_slice(path: Path, start_s: float, duration_s: float, max_requests: int) -> list[dict]:
    out: list[dict] = []
    with path.open() as f:
        for line in f:
            rec = json.loads(line)
            t = rec["timestamp"] / 1000.0
            if t < start_s:
                continue
            if t >= start_s + duration_s or len(out) >= max_requests:
                break
            out.append(rec)
    return out


class PromptBuilder:
    """Token ids for hash ids; each block's ids are made once and kept (bounded by the slice)."""

    def __init__(self, tokens_per_block: int) -> None:
        self.tokens_per_block = tokens_per_block
        self._blocks: dict[int, list[int]] = {}

    def block(self, hash_id: int) -> list[int]:
        ids = self._blocks.get(hash_id)
        if ids is None:
            rng = random.Random(hash_id * 1_000_003 + 17)
            ids = [FIRST_ID + rng.randrange(NUM_IDS) for _ in range(self.tokens_per_block)]
            self._blocks[hash_id] = ids
        return ids

    def prompt(self, rec: dict) -> list[int]:
        n = max(1, math.ceil(rec["input_length"] * self.tokens_per_block / TRACE_BLOCK_TOKENS))
        ids: list[int] = []
        for h in rec["hash_ids"]:
            ids += self.block(h)
        return ids[:n]


async def one_request(
    http: httpx.AsyncClient, model: str, prompt: list[int], max_tokens: int
) -> dict[str, Any]:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    ttft_s: float | None = None
    usage: dict | None = None
    async with http.stream("POST", "/v1/completions", json=body) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return {"status": resp.status_code}
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if ttft_s is None and chunk.get("choices"):
                ttft_s = time.perf_counter() - start
            if chunk.get("usage"):
                usage = chunk["usage"]
    cached = ((usage or {}).get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return {
        "status": 200,
        "ttft_s": ttft_s,
        "prompt_tokens": (usage or {}).get("prompt_tokens", len(prompt)),
        "cached_tokens": cached or 0,
    }


def ideal_hit_ratio(trace: list[dict], builder: PromptBuilder, block_size: int) -> float:
    """Cached over prompt tokens with one unbounded cache that saw every earlier request: the
    ceiling any routing can reach on this slice (full `block_size` blocks only)."""
    seen: set[tuple[int, ...]] = set()
    cached = total = 0
    for rec in trace:
        n = len(builder.prompt(rec))
        lead = 0
        for i in range(len(rec["hash_ids"])):
            key = tuple(rec["hash_ids"][: i + 1])
            if key not in seen:
                break
            lead = i + 1
        cached += min(lead * builder.tokens_per_block, n - 1) // block_size * block_size
        total += n
        seen.update(tuple(rec["hash_ids"][: i + 1]) for i in range(len(rec["hash_ids"])))
    return cached / max(total, 1)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


async def replay(args: argparse.Namespace) -> dict[str, Any]:
    trace = load_slice(args.trace, args.start_s, args.duration_s, args.max_requests)
    builder = PromptBuilder(args.tokens_per_block)
    scale_out = args.tokens_per_block / TRACE_BLOCK_TOKENS
    limits = httpx.Limits(max_connections=args.max_concurrency)
    results: list[dict[str, Any]] = []
    gate = asyncio.Semaphore(args.max_concurrency)
    async with httpx.AsyncClient(base_url=args.gateway, timeout=60, limits=limits) as http:
        model = args.model or (await http.get("/v1/models")).json()["data"][0]["id"]
        t0 = time.perf_counter()
        first_ts = trace[0]["timestamp"] / 1000.0 if trace else 0.0

        async def fire(rec: dict) -> None:
            delay = (rec["timestamp"] / 1000.0 - first_ts) * args.time_scale
            await asyncio.sleep(max(0.0, t0 + delay - time.perf_counter()))
            prompt = builder.prompt(rec)
            max_tokens = max(
                1, min(args.max_output_tokens, round(rec["output_length"] * scale_out))
            )
            async with gate:
                try:
                    results.append(await one_request(http, model, prompt, max_tokens))
                except httpx.HTTPError as exc:
                    results.append({"status": 0, "error": type(exc).__name__})

        tasks = [asyncio.create_task(fire(rec)) for rec in trace]
        done, pending = await asyncio.wait(tasks, timeout=args.max_wall_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        wall_s = time.perf_counter() - t0
    ok = [r for r in results if r["status"] == 200 and r.get("ttft_s") is not None]
    ttfts = [r["ttft_s"] for r in ok]
    prompt_tokens = sum(r["prompt_tokens"] for r in ok)
    return {
        "label": args.label,
        "requests": len(trace),
        "ok": len(ok),
        "failed": len(results) - len(ok),
        "unfinished": len(pending),
        "wall_s": round(wall_s, 2),
        "ttft_p50_ms": round(1000 * percentile(ttfts, 0.5), 1),
        "ttft_p99_ms": round(1000 * percentile(ttfts, 0.99), 1),
        "hit_ratio": round(sum(r["cached_tokens"] for r in ok) / max(prompt_tokens, 1), 4),
        "ideal_hit_ratio": round(ideal_hit_ratio(trace, builder, args.block_size), 4),
        "prompt_tokens": prompt_tokens,
        "args": {k: str(v) for k, v in vars(args).items()},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gateway", default="http://127.0.0.1:8000", help="base URL (no /v1)")
    p.add_argument("--trace", type=Path, default=TRACE)
    p.add_argument("--model", default="", help="default: the first of /v1/models")
    p.add_argument("--label", default="", help="a name for this run (e.g. the policy)")
    p.add_argument("--start-s", type=float, default=0.0, help="where the slice starts in the trace")
    p.add_argument("--duration-s", type=float, default=120.0, help="trace seconds replayed")
    p.add_argument("--time-scale", type=float, default=0.25, help="wall s per trace s")
    p.add_argument("--tokens-per-block", type=int, default=32, help="prompt ids per trace block")
    p.add_argument("--block-size", type=int, default=16, help="the workers' (for the ideal)")
    p.add_argument("--max-output-tokens", type=int, default=64)
    p.add_argument("--max-requests", type=int, default=1000)
    p.add_argument("--max-concurrency", type=int, default=128)
    p.add_argument("--max-wall-s", type=float, default=300.0)
    p.add_argument("--out", type=Path, help="write the result as JSON here")
    args = p.parse_args(argv)
    result = asyncio.run(replay(args))
    cols = ("label", "requests", "ok", "failed", "unfinished", "wall_s")
    cols += ("ttft_p50_ms", "ttft_p99_ms", "hit_ratio", "ideal_hit_ratio")
    print(" | ".join(cols))
    print(" | ".join(str(result[c]) for c in cols))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
