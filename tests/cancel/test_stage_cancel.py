"""Clients that hang up while their request waits to be tokenized for routing, or for the
semantic cache's lookup (both lookup modes), and what happens to the background insert."""

from __future__ import annotations

import asyncio

import pytest

from gateway.keys import RELAY, SEMANTIC
from gateway.relay import UpstreamCall
from policies.routing import RequestView

from .harness import (
    CHAT,
    MODEL,
    RawClient,
    Stack,
    chat_body,
    dispatch_waiting,
    scrape,
    served,
    settled,
    until,
)
from .stages import (
    CATEGORIES,
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
    the slot back: the request queued behind it for a slot is served (the thread still held)."""
    gw, workers = await kv_gateway(stack, bpe, dispatch={"max_in_flight_per_worker": 1})
    holders = [RawClient(gw.url, chat_body(f"hold {i}", 4000, stream=True)) for i in range(2)]
    for h in holders:
        await asyncio.wait_for(h.first_bytes.wait(), 10)
    hold_tokenizer(gw, blocked)
    first = RawClient(gw.url, chat_body(LONG, 2))
    await dispatch_waiting(gw, 1)
    second = RawClient(gw.url, chat_body("short", 2))
    await dispatch_waiting(gw, 2)
    holders[0].hang_up()  # its slot goes to `first`, which then waits for the held thread
    await tokenize_waiting(gw, 1)
    await dispatch_waiting(gw, 1)
    first.hang_up()
    status, body = await second.result()
    assert status == 200, body
    assert not blocked.gate.is_set()
    holders[1].hang_up()
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


def cacheable(text: str, stream: bool = False) -> bytes:
    """A request whose reply the cache stores: greedy, ended by a stop string (a reply cut by
    max_tokens is never stored)."""
    return chat_body(text, 16, stream=stream, temperature=0, stop=[" "])


async def stored(gw, text: str) -> None:
    """Ask `text` once (a miss) and wait until its reply is in the cache."""
    client = RawClient(gw.url, cacheable(text))
    assert (await client.result())[0] == 200 and "x-kvgate-cache: miss" in client.head
    await gw.app[SEMANTIC].drain()


async def test_a_hit_abandons_the_parallel_open_waiting_for_a_slot(stack: Stack, st_model):
    """Parallel lookup: the worker request waits for a dispatch slot while the cache looks; the
    hit answers and the waiting open leaves the dispatch queue (no slot handed to nobody)."""
    worker = await stack.worker()
    gw = await stack.gateway(
        [worker.url],
        semantic_cache={"categories": CATEGORIES, "lookup": "parallel"},
        dispatch={"max_in_flight_per_worker": 1},
        app_options={"semantic_model": st_model},
    )
    text = "how do I reverse a list in python"
    await stored(gw, text)
    holder = RawClient(gw.url, chat_body("hold", 4000, stream=True))
    await asyncio.wait_for(holder.first_bytes.wait(), 10)
    hits = [RawClient(gw.url, cacheable(text)) for _ in range(3)]
    for c in hits:
        status, body = await c.result()
        assert status == 200 and "x-kvgate-cache: hit" in c.head, body
    await dispatch_waiting(gw, 0)
    holder.hang_up()
    await settled(gw, [worker], stack.baseline)
    await served(gw)


@pytest.mark.parametrize("lookup", ["sequential", "parallel"])
async def test_hang_ups_racing_streamed_hits(stack: Stack, st_model, lookup: str):
    gw, worker = await semantic_gateway(stack, st_model, lookup)
    text = "what does the python zip function do"
    await stored(gw, text)
    many = [RawClient(gw.url, cacheable(text, stream=True)) for _ in range(8)]
    for c in many:
        await c.connected()
        c.hang_up()
    await settled(gw, [worker], stack.baseline)
    again = RawClient(gw.url, cacheable(text, stream=True))
    assert (await again.result())[0] == 200 and "x-kvgate-cache: hit" in again.head


async def test_many_hang_ups_at_once_in_every_stage(stack: Stack, bpe, st_model, blocked):
    """Thirty clients, each waiting both for a slot (its parallel open) and for the embedder
    (its lookup), one of them then also for the tokenizer: half hang up, then the rest, with
    both threads still held."""
    gw, workers = await kv_gateway(
        stack,
        bpe,
        dispatch={"max_in_flight_per_worker": 1},
        semantic_cache={"categories": CATEGORIES, "lookup": "parallel"},
        app_options={"semantic_model": st_model},
    )
    holders = [RawClient(gw.url, chat_body(f"hold {i}", 4000, stream=True)) for i in range(2)]
    for h in holders:
        await asyncio.wait_for(h.first_bytes.wait(), 10)
    hold_embedder(gw, blocked)
    tokenizer = Blocked()
    try:
        hold_tokenizer(gw, tokenizer)
        clients = [RawClient(gw.url, chat_body(f"{i} {LONG}", 2, temperature=0)) for i in range(30)]
        await dispatch_waiting(gw, 30)
        embedder = gw.app[SEMANTIC].cache.embedder
        await until(lambda: embedder.queued > 0, "lookups queued")
        for c in clients[1::2]:
            c.hang_up()
        await dispatch_waiting(gw, 15)
        holders[0].hang_up()  # its slot goes to a live waiter, which waits for the tokenizer
        await tokenize_waiting(gw, 1)
        for c in [*clients[::2], holders[1]]:
            c.hang_up()
        await until(lambda: embedder.queued == 0, "embedding queue empty, thread still held")
        await settled(gw, workers)
    finally:
        tokenizer.release()
    blocked.release()
    await settled(gw, workers, stack.baseline)
    await served(gw, 2)


async def test_a_parallel_open_that_finishes_as_the_client_leaves_is_given_back(stack: Stack):
    """Parallel lookup, a miss: the handler awaits the worker request it opened while the cache
    looked. That open finishes in the same loop turn as the client hangs up (the handler is
    cancelled before it resumes): the opened reply is then the handler's to give back."""
    worker = await stack.worker(time_scale=0.05)
    gw = await stack.gateway([worker.url])
    relay = gw.app[RELAY]
    body = chat_body("a miss", 4)
    call = UpstreamCall(
        endpoint="chat",
        path=CHAT,
        body=body,
        headers={"Content-Type": "application/json"},
        model=MODEL,
        stream=False,
        view=RequestView(num_prompt_tokens=8),
    )
    opening = asyncio.ensure_future(relay.open(call))
    handler: asyncio.Task[object] | None = None
    # Registered before the handler awaits the open, so it runs first when the open finishes:
    # the handler is cancelled with the open already done, exactly as when the hang-up and the
    # worker's first bytes arrive together.
    opening.add_done_callback(lambda _: handler is not None and handler.cancel())
    # `forward` reads the client's request only to stream to it; this reply is not streamed.
    handler = asyncio.create_task(relay.forward(None, call, opening))  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await handler
    assert opening.done() and not opening.cancelled()  # it had opened: a worker slot was held
    await settled(gw, [worker], stack.baseline)
    await served(gw)


async def test_hang_up_of_a_hit_waiting_for_the_tokenizer(stack: Stack, bpe, st_model, blocked):
    """A hit counts its prompt's tokens for `usage` with the workers' tokenizer, in the same
    ordered queue as routing: it hangs up there, and the request behind it goes on."""
    gw, workers = await kv_gateway(
        stack,
        bpe,
        semantic_cache={"categories": CATEGORIES},
        app_options={"semantic_model": st_model},
    )
    text = "how do I read a large csv file in chunks with pandas " * 6  # tokenized ahead
    await stored(gw, text)
    hold_tokenizer(gw, blocked)
    # Upper case: the same embedding (the model is uncased), a new turn for the tokenizer.
    hit = RawClient(gw.url, cacheable(text.upper()))
    await tokenize_waiting(gw, 1)
    behind = RawClient(gw.url, chat_body("short", 2))
    await tokenize_waiting(gw, 2)
    metrics = await scrape(gw)
    hits = sum(v for k, v in metrics.items() if k.startswith("kvgate_semantic_cache_hits_total"))
    assert hits == 1  # it is the hit that waits, not a miss being routed
    hit.hang_up()
    assert (await behind.result())[0] == 200
    assert not blocked.gate.is_set()
    blocked.release()
    await settled(gw, workers, stack.baseline)
