"""Ways to hold a request in a stage of the gateway's path (the tokenizing thread, the
embedder's thread) and gateways set up so those stages are reached."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gateway.keys import FLEET_CACHE, SEMANTIC
from gateway.semantic.embedder import INDEX_PRIORITY
from gateway.server import RunningGateway

from .harness import Stack, gauge, scrape, until

CATEGORIES = {
    name: {"threshold": 0.75, "ttl_s": 3_600.0, "max_entries": 100}
    for name in ("code", "chat", "factual", "time_sensitive", "math")
}
LONG = "a long new turn " * 40  # over the inline cut-off below: tokenized in the thread


class Blocked:
    """Holds a gateway thread (the tokenizer's or the embedder's) with a job of the test's own,
    as a long encoding would, until `release()`."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.running = threading.Event()

    def job(self) -> None:
        self.running.set()
        self.gate.wait(30)

    def release(self) -> None:
        self.gate.set()


def hold_tokenizer(gw: RunningGateway, blocked: Blocked) -> None:
    ahead = gw.app[FLEET_CACHE].ahead
    if ahead._pool is None:  # noqa: SLF001 - made on first use; the test makes it now
        ahead._pool = ThreadPoolExecutor(1, thread_name_prefix="kvgate-tokenize")  # noqa: SLF001
    ahead._pool.submit(blocked.job)  # noqa: SLF001
    assert blocked.running.wait(10)


async def tokenize_waiting(gw: RunningGateway, count: int) -> None:
    async def check() -> bool:
        return gauge(await scrape(gw), "kvgate_tokenize_waiting") == count

    await until(check, f"{count} requests waiting to be tokenized")


async def kv_gateway(
    stack: Stack, bpe: object, **overrides: Any
) -> tuple[RunningGateway, list[Any]]:
    """Two workers behind lmetric (it reads prefix matches, so the gateway tokenizes)."""
    workers = [await stack.worker(tokenizer=bpe), await stack.worker(tokenizer=bpe)]
    gw = await stack.gateway(
        [w.url for w in workers],
        routing={"type": "lmetric"},
        fleet_view={"stats_interval_s": 0.05, "tokenize_inline_max_chars": 200},
        **overrides,
    )
    await until(lambda: all(c.profile for c in gw.app[FLEET_CACHE].workers.values()), "profiles")
    return gw, workers


async def semantic_gateway(stack: Stack, st_model: object, lookup: str, **more: Any):
    worker = await stack.worker()
    semantic = {"categories": CATEGORIES, "lookup": lookup} | more
    gw = await stack.gateway(
        [worker.url], semantic_cache=semantic, app_options={"semantic_model": st_model}
    )
    return gw, worker


def hold_embedder(gw: RunningGateway, blocked: Blocked) -> None:
    gw.app[SEMANTIC].cache.embedder.worker.submit(INDEX_PRIORITY, blocked.job)
    assert blocked.running.wait(10)


async def in_thread_queue(gw: RunningGateway, count: int) -> None:
    jobs = gw.app[SEMANTIC].cache.embedder.worker._jobs  # noqa: SLF001
    await until(lambda: jobs.qsize() == count, f"{count} jobs queued for the embedder's thread")
