"""The tiny torch engine behind the gateway: a client that hangs up mid-stream, or while it
waits for a dispatch slot, makes the engine drop the sequence and free its blocks."""

from __future__ import annotations

import asyncio

import httpx
import orjson

from config.engine import EngineConfig
from gpu_worker.engine import TorchEngine
from gpu_worker.server import start_worker

from .harness import RawClient, Stack, dispatch_waiting, settled, until

PROMPT = "Tell me about paged attention. " * 6


def tiny_body(max_tokens: int, stream: bool) -> bytes:
    return orjson.dumps(
        {"model": "tiny", "prompt": PROMPT, "max_tokens": max_tokens, "stream": stream}
    )


async def stats(url: str) -> dict[str, int]:
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(url + "/stats")).json()


async def test_hang_ups_free_the_engines_sequences_and_blocks(stack: Stack):
    engine = TorchEngine(EngineConfig(model="tiny", device="cpu", num_blocks=128, num_threads=1))
    worker = await start_worker(engine)
    stack.workers.append(worker)
    gw = await stack.gateway([worker.url], dispatch={"max_in_flight_per_worker": 1})
    idle = await stats(worker.url)
    streaming = RawClient(gw.url, tiny_body(400, True), path="/v1/completions")
    await asyncio.wait_for(streaming.first_bytes.wait(), 20)
    waiting = RawClient(gw.url, tiny_body(4, False), path="/v1/completions")
    await dispatch_waiting(gw, 1)
    busy = await stats(worker.url)
    assert busy["running"] == 1 and busy["free_blocks"] < idle["free_blocks"]
    waiting.hang_up()
    streaming.hang_up()

    async def freed() -> bool:
        now = await stats(worker.url)
        return now["running"] == now["waiting"] == now["pending_requests"] == 0

    await until(freed, "the engine dropped the sequence")
    after = await stats(worker.url)
    # No block is held by a sequence any more (the prompt's full blocks stay cached, unreferenced),
    # and the engine stopped long before the 400 tokens asked for.
    assert after["free_blocks"] + after["cached_blocks"] == after["total_blocks"]
    assert after["num_steps"] < 400
    await settled(gw, [worker], stack.baseline)
