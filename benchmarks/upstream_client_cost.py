"""CPU per streamed reply read with aiohttp's client against httpx's, from one simulated worker.

    python benchmarks/upstream_client_cost.py --requests 400 --concurrency 32 --repeats 2

Why the gateway's upstream client is aiohttp (docs/architecture.md, section 0): relaying a
streamed reply is mostly reading its chunks, so the client library's CPU per chunk is the
gateway's added latency on a small box. Both clients read the same replies (64-token chat streams
from `kvgate sim-worker`) as raw chunks, pooled, `concurrency` at a time, alternating repeat by
repeat; the figure is this process's CPU per request and the ratio httpx / aiohttp.
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
from benchmarks.gateway_overhead import spawn_sim_worker, stop, stream_body  # noqa: E402


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


async def _measure(args: argparse.Namespace, url: str) -> dict[str, object]:
    body = stream_body(args.model, args.max_tokens)
    headers = {"Content-Type": "application/json"}
    cpu: dict[str, list[float]] = {"aiohttp": [], "httpx": []}
    per_request: dict[str, float] = {}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    limits = httpx.Limits(max_connections=args.concurrency)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60, connect=5)) as client,
    ):

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

        await _run(args.concurrency, args.concurrency, with_aiohttp)  # warm both pools
        await _run(args.concurrency, args.concurrency, with_httpx)
        for i in range(args.repeats):
            order = [("aiohttp", with_aiohttp), ("httpx", with_httpx)]
            for name, one in order if i % 2 == 0 else order[::-1]:
                cpu_s, chunks = await _run(args.requests, args.concurrency, one)
                cpu[name].append(1e3 * cpu_s / args.requests)
                per_request[f"{name}_chunks_per_request"] = chunks / args.requests
    med = {name: statistics.median(values) for name, values in cpu.items()}
    return {
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "cpu_ms_per_request": cpu,
        "median_cpu_ms_per_request": med,
        "httpx_over_aiohttp": med["httpx"] / med["aiohttp"],
    } | per_request


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=400, help="per client library per repeat")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--model", default="sim-llama")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    worker, base = spawn_sim_worker(args.model, 1.0)
    try:
        result = uvloop.run(_measure(args, base + "/v1/chat/completions"))
    finally:
        stop([worker])
    med = result["median_cpu_ms_per_request"]
    print(f"{'client':<10}{'cpu ms/request (median)':>26}{'chunks/request':>16}")
    for name in ("aiohttp", "httpx"):
        print(f"{name:<10}{med[name]:>26.3f}{result[f'{name}_chunks_per_request']:>16.1f}")
    print(f"httpx / aiohttp: x{result['httpx_over_aiohttp']:.2f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
