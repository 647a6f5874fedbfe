"""Gateway shutdown with requests in each place: every client gets an answer or a closed
connection promptly, the workers drop what nobody will read, and nothing is left running."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.keys import SEMANTIC

from .harness import RawClient, Stack, chat_body, gauge, scrape, until
from .stages import (
    CATEGORIES,
    LONG,
    Blocked,
    hold_embedder,
    hold_tokenizer,
    in_thread_queue,
    kv_gateway,
    tokenize_waiting,
)

GRACE_S = 1.0  # shutdown_timeout_s of these gateways: replies in progress get this long


async def stop(stack: Stack, gw) -> float:
    """Stop `gw` (it leaves the stack's list); how long that took."""
    stack.gateways.remove(gw)
    started = time.monotonic()
    await asyncio.wait_for(gw.stop(), 4 * GRACE_S + 5)
    return time.monotonic() - started


async def test_shutdown_answers_dispatch_waiters_and_cuts_long_streams(stack: Stack):
    worker = await stack.worker()
    gw = await stack.gateway(
        [worker.url],
        dispatch={"max_in_flight_per_worker": 1},
        shutdown_timeout_s=GRACE_S,
    )
    holder = RawClient(gw.url, chat_body("hold", 4000, stream=True))  # ~20 s of stream
    await asyncio.wait_for(holder.first_bytes.wait(), 10)
    waiters = [RawClient(gw.url, chat_body(f"wait {i}", 2)) for i in range(3)]

    async def queued() -> bool:
        return gauge(await scrape(gw), "kvgate_dispatch_waiting") == 3

    await until(queued, "3 requests waiting for the slot")
    stopping = asyncio.create_task(stop(stack, gw))
    # The waiters are told at once (503, retry: another gateway, or this one restarted), while
    # the stream in progress still runs...
    for c in waiters:
        status, body = await c.result(GRACE_S + 5)
        assert status == 503 and b"gateway_shutting_down" in body
        assert "retry-after: 1" in c.head
    assert not holder.task.done()
    # ...the stream in progress gets the grace period, then the gateway ends it with the reason
    # (an error event, `[DONE]`, the body's last chunk: gateway/reply_cut.py), never a hang.
    status, body = await holder.result(GRACE_S + 5)
    assert status == 200 and body.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    assert b'"code":"gateway_shutting_down"' in body
    assert await stopping < 2 * GRACE_S + 2
    await until(lambda: worker.state.num_pending == 0, "worker dropped the cut stream", 3)


async def test_shutdown_lets_short_replies_finish(stack: Stack):
    worker = await stack.worker()
    gw = await stack.gateway([worker.url], shutdown_timeout_s=10.0)
    clients = [RawClient(gw.url, chat_body(f"short {i}", 40, stream=True)) for i in range(3)]
    for c in clients:
        await asyncio.wait_for(c.first_bytes.wait(), 10)
    assert await stop(stack, gw) < 5.0
    for c in clients:
        status, body = await c.result(1)
        assert status == 200 and body.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")


async def test_shutdown_with_requests_waiting_for_the_tokenizer(
    stack: Stack,
    bpe: object,
    blocked: Blocked,
):
    gw, workers = await kv_gateway(stack, bpe, shutdown_timeout_s=GRACE_S)
    hold_tokenizer(gw, blocked)
    clients = [RawClient(gw.url, chat_body(LONG + str(i), 2)) for i in range(3)]
    await tokenize_waiting(gw, 3)
    took_s = await stop(stack, gw)  # the thread stays held: they are cut after the grace
    assert took_s < 2 * GRACE_S + 2
    for c in clients:
        status, body = await c.result(1)
        assert status == 503 and b"gateway_shutting_down" in body  # cut after the grace
    blocked.release()
    for w in workers:
        await until(lambda w=w: w.state.num_pending == 0, "no request reached a worker")


@pytest.mark.parametrize("lookup", ["sequential", "parallel"])
async def test_shutdown_with_lookups_waiting_for_the_embedder(
    stack: Stack,
    st_model,
    blocked: Blocked,
    lookup: str,
):
    worker = await stack.worker()
    gw = await stack.gateway(
        [worker.url],
        semantic_cache={"categories": CATEGORIES, "lookup": lookup},
        shutdown_timeout_s=GRACE_S,
        app_options={"semantic_model": st_model},
    )
    hold_embedder(gw, blocked)
    first = RawClient(gw.url, chat_body("what is a monad", 50, temperature=0))
    await in_thread_queue(gw, 1)
    rest = [RawClient(gw.url, chat_body(f"what is {i}", 50, temperature=0)) for i in range(2)]
    embedder = gw.app[SEMANTIC].cache.embedder
    await until(lambda: embedder.queued == 2, "lookups queued")
    stopping = asyncio.create_task(stop(stack, gw))
    for c in [first, *rest]:
        status, body = await c.result(GRACE_S + 5)
        # Cut after the grace period (the embedder is held), with the reason.
        assert status == 503 and b"gateway_shutting_down" in body
    blocked.release()  # the embedder's thread ends its jobs; shutdown closes it
    assert await stopping < 2 * GRACE_S + 5
    await until(lambda: worker.state.num_pending == 0, "worker dropped parallel opens", 3)


async def test_shutdown_finishes_the_background_insert_of_a_reply(
    stack: Stack, st_model, blocked: Blocked
):
    worker = await stack.worker(time_scale=2.0)  # ~20 ms a token
    gw = await stack.gateway(
        [worker.url],
        semantic_cache={"categories": CATEGORIES},
        shutdown_timeout_s=GRACE_S,
        app_options={"semantic_model": st_model},
    )
    stage = gw.app[SEMANTIC]
    # Streamed to the first "." (a few words; the first word never ends with one): the lookup
    # is over by its first bytes, and the embedder is held before the reply ends and is stored.
    body = chat_body("how do I sort a dict", 400, stream=True, temperature=0, stop=["."])
    client = RawClient(gw.url, body)
    await asyncio.wait_for(client.first_bytes.wait(), 10)
    hold_embedder(gw, blocked)  # the reply's insert waits for the embedder's thread
    assert (await client.result())[0] == 200 and "x-kvgate-cache: miss" in client.head
    await until(lambda: stage._pending, "insert pending")  # noqa: SLF001
    stopping = asyncio.create_task(stop(stack, gw))
    await until(lambda: stage._pending and not stopping.done(), "shutdown waits for it")  # noqa: SLF001
    blocked.release()
    await stopping
    assert not stage._pending and stage.cache.index.live == 1  # noqa: SLF001 - stored, then closed
