"""Clients that hang up while their request waits to be tokenized for routing, or for the
semantic cache's lookup (both lookup modes), and what happens to the background insert."""

from __future__ import annotations

import asyncio

import pytest

from gateway.keys import SEMANTIC

from .harness import RawClient, Stack, chat_body, served, settled, until
from .stages import (
    LONG,
    Blocked,
    hold_embedder,
    hold_tokenizer,
    in_thread_queue,
    kv_gateway,
    semantic_gateway,
    tokenize_waiting,
)


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
    await settled(gw, workers, stack.baseline)
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
    await settled(gw, workers, stack.baseline)
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
    await settled(gw, workers, stack.baseline)
    await served(gw, 3)


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
    await settled(gw, [worker], stack.baseline)
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
    await settled(gw, [worker], stack.baseline)
