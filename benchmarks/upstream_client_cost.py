"""CPU per streamed reply read by the gateway's own worker pool, aiohttp's client and httpx's.

    python benchmarks/upstream_client_cost.py --requests 400 --concurrency 32 --repeats 3

Why the gateway reads workers' replies the way it does (docs/architecture.md, section 0):
relaying a streamed reply is mostly reading its chunks, so the client's CPU per chunk is the
gateway's added latency on a small box. Each client reads the same replies (64-token chat streams
from `kvgate sim-worker`) as raw chunks, pooled, `concurrency` at a time, in an order rotated
repeat by repeat; the figures are this process's CPU per request (median of the repeats) and each
one's ratio to aiohttp's. `pool` is backends/worker_conn.py with a callback per chunk (`pipe`),
as the relay uses it; aiohttp and httpx are read with their usual `async for`-style loops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backends.worker_conn import WorkerPool  # noqa: E402
from benchmarks.gateway_overhead import spawn_sim_worker, stop, stream_body  # noqa: E402

CLIENTS = ("pool", "aiohttp", "httpx")
PATH = "/v1/chat/completions"


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _run(n: int, concurrency: int, one: Callable[[], Awaitable[int]]) -> tuple[float, int]:
    """CPU seconds and chunks for `n` calls of `one`, `concurrency` at a time."""
    todo = iter(range(n))
    chunks = 0

    async def client() -> None:
        nonlocal chunks
        for _ in todo:
            got = await one()  # not `chunks += await ...`: that reads `chunks` before the await
            chunks += got

    start = _cpu_s()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return _cpu_s() - start, chunks


async def _measure(args: argparse.Namespace, base: str) -> dict[str, object]:
    body = stream_body(args.model, args.max_tokens)
    headers = {"Content-Type": "application/json"}
    url = base + PATH
    cpu: dict[str, list[float]] = {name: [] for name in CLIENTS}
    per_request: dict[str, float] = {}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    limits = httpx.Limits(max_connections=args.concurrency)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60, connect=5)) as client,
    ):
        pool = WorkerPool(5.0, 60.0, args.concurrency, 30.0)

        async def with_aiohttp() -> int:
            chunks = 0
            async with session.post(url, data=body, headers=headers) as reply:
                while await reply.content.readany():
                    chunks += 1
            return chunks

        async def with_httpx() -> int:
            chunks = 0
            async with client.stream("POST", url, content=body, headers=headers) as reply:
                async for _ in reply.aiter_raw():
                    chunks += 1
            return chunks

        async def with_pool() -> int:
            chunks = 0

            def count(chunk: bytes) -> None:
                nonlocal chunks
                chunks += 1

            reply = await pool.post(base, PATH, body, headers)
            try:
                await reply.pipe(count)
            finally:
                reply.close()
            return chunks

        ways = {"pool": with_pool, "aiohttp": with_aiohttp, "httpx": with_httpx}
        for one in ways.values():  # warm every pool
            await _run(args.concurrency, args.concurrency, one)
        for i in range(args.repeats):
            order = list(ways.items())
            for name, one in order[i % 3 :] + order[: i % 3]:
                cpu_s, chunks = await _run(args.requests, args.concurrency, one)
                cpu[name].append(1e3 * cpu_s / args.requests)
                per_request[f"{name}_chunks_per_request"] = chunks / args.requests
    pool.close()
    med = {name: statistics.median(values) for name, values in cpu.items()}
    return {
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "cpu_ms_per_request": cpu,
        "median_cpu_ms_per_request": med,
        "over_aiohttp": {name: med[name] / med["aiohttp"] for name in CLIENTS},
    } | per_request


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=400, help="per client library per repeat")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="sim-llama")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    worker, base = spawn_sim_worker(args.model, 1.0)
    try:
        result = uvloop.run(_measure(args, base))
    finally:
        stop([worker])
    med = result["median_cpu_ms_per_request"]
    ratio = result["over_aiohttp"]
    print(f"{'client':<10}{'cpu ms/request (median)':>26}{'/ aiohttp':>11}{'chunks/request':>16}")
    for name in CLIENTS:
        chunks = result[f"{name}_chunks_per_request"]
        print(f"{name:<10}{med[name]:>26.3f}{ratio[name]:>11.2f}{chunks:>16.1f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
