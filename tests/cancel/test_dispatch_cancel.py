"""Clients that hang up while their request waits for a dispatch slot, while its stream is
relayed, or all at once; and a worker killed while requests wait for its slots."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.keys import FLEET

from .harness import (
    RawClient,
    Stack,
    chat_body,
    dispatch_waiting,
    scrape,
    served,
    settled,
    until,
)

ONE_SLOT = {"max_in_flight_per_worker": 1, "max_waiting": 64}


async def streaming(client: RawClient) -> None:
    await asyncio.wait_for(client.first_bytes.wait(), 10)


async def test_hang_up_while_waiting_for_a_slot(stack: Stack):
    worker = await stack.worker()
    gw = await stack.gateway([worker.url], dispatch=ONE_SLOT)
    holder = RawClient(gw.url, chat_body("hold", 400, stream=True))
    await streaming(holder)
    gone = RawClient(gw.url, chat_body("gone", 2))
    await dispatch_waiting(gw, 1)
    kept = RawClient(gw.url, chat_body("kept", 2))
    await dispatch_waiting(gw, 2)
    gone.hang_up()
    await dispatch_waiting(gw, 1)  # the gone one left the queue at once, not when a slot came free
    holder.hang_up()  # its slot goes to the one still waiting
    status, body = await kept.result()
    assert status == 200, body
    await settled(gw, [worker], stack.baseline)
    await served(gw)


async def test_hang_up_mid_stream_closes_the_workers_connection(stack: Stack):
    worker = await stack.worker()
    gw = await stack.gateway([worker.url], dispatch=ONE_SLOT)
    client = RawClient(gw.url, chat_body("stream", 4000, stream=True))
    await streaming(client)
    assert worker.state.num_pending == 1
    client.hang_up()
    # The worker stops generating for nobody: its request is aborted long before its ~20 s end.
    await until(lambda: worker.state.num_pending == 0, "worker aborted the request", 5.0)
    await settled(gw, [worker], stack.baseline)
    await served(gw)


async def test_hang_up_while_waiting_for_the_first_token(stack: Stack):
    worker = await stack.worker(time_scale=5.0)  # ~0.4 s to the first token of a long prompt
    gw = await stack.gateway([worker.url], dispatch=ONE_SLOT)
    client = RawClient(gw.url, chat_body("x " * 2000, 4))
    await until(lambda: worker.state.num_pending == 1, "worker has the request")
    assert not client.first_bytes.is_set()
    client.hang_up()
    await settled(gw, [worker], stack.baseline)
    await served(gw)


async def test_many_hang_ups_at_once(stack: Stack):
    workers = [await stack.worker(), await stack.worker()]
    gw = await stack.gateway([w.url for w in workers], dispatch=ONE_SLOT)
    holders = [RawClient(gw.url, chat_body(f"hold {i}", 400, stream=True)) for i in range(2)]
    for h in holders:
        await streaming(h)
    waiters = [RawClient(gw.url, chat_body(f"wait {i}", 2)) for i in range(30)]
    await dispatch_waiting(gw, 30)
    for c in [*holders, *waiters]:
        c.hang_up()
    await settled(gw, workers, stack.baseline)
    assert [w.in_flight for w in gw.app[FLEET].workers] == [0, 0]
    await served(gw, 4)


async def test_hang_ups_racing_slot_hand_offs(stack: Stack):
    """Waiters hang up in the same moment their slot is handed to them: every slot handed to a
    gone request is passed on, so the ones that stay are all served."""
    workers = [await stack.worker(time_scale=0.05), await stack.worker(time_scale=0.05)]
    gw = await stack.gateway([w.url for w in workers], dispatch=ONE_SLOT)
    clients = [RawClient(gw.url, chat_body(f"r {i}", 6)) for i in range(24)]
    await until(
        lambda: sum(c.first_bytes.is_set() for c in clients) >= 2, "the first replies are in"
    )
    kept, gone = clients[::2], clients[1::2]
    for c in gone:
        if not c.task.done():
            c.hang_up()
    results = await asyncio.gather(*(c.result(20) for c in kept))
    assert [status for status, _ in results] == [200] * len(kept)
    await settled(gw, workers, stack.baseline)
    await served(gw, 2)


async def test_worker_killed_while_requests_wait_for_its_slot(stack: Stack):
    dying, staying = stack.process(), stack.process()
    gw = await stack.gateway([dying.url, staying.url], dispatch=ONE_SLOT)
    holders = [RawClient(gw.url, chat_body(f"hold {i}", 400, stream=True)) for i in range(2)]
    for h in holders:
        await streaming(h)
    waiters = [RawClient(gw.url, chat_body(f"wait {i}", 2)) for i in range(6)]
    await dispatch_waiting(gw, 6)
    dying.kill()
    # Round robin put the first holder on the dying worker: its stream ends with an error
    # event (no hang), and the dead worker's slot is out of the count.
    status, body = await holders[0].result()
    assert status == 200 and b'"error"' in body and body.rstrip().endswith(b"0")
    holders[1].hang_up()  # the other worker's slot frees: the waiters go there, one by one
    results = await asyncio.gather(*(c.result(30) for c in waiters))
    assert [s for s, _ in results] == [200] * 6
    await settled(gw, (), stack.baseline)
    assert [w.healthy for w in gw.app[FLEET].workers] == [False, True]
    await served(gw, 2)


async def test_a_slot_the_first_waiter_cannot_use_goes_to_the_next(stack: Stack):
    """A worker that turned a request away (503: full with another gateway's work) is not tried
    again by that request, which waits for another worker's slot. When the busy worker frees
    up, the gateway's slot there must go to a request that can use it, not wait behind the
    first one for a slot elsewhere."""
    shared = await stack.worker(max_pending_requests=1)  # also serves someone else
    other = await stack.worker()
    gw = await stack.gateway([shared.url, other.url], dispatch=ONE_SLOT)
    outside = RawClient(shared.url, chat_body("another gateway's request", 4000, stream=True))
    await streaming(outside)
    holder = RawClient(gw.url, chat_body("hold", 4000, stream=True))  # shared: 503, to other
    await streaming(holder)
    first = RawClient(gw.url, chat_body("first", 2))  # shared: 503; other: full -> waits
    await dispatch_waiting(gw, 1)
    outside.hang_up()  # the shared worker is free again
    await until(lambda: shared.state.num_pending == 0, "shared worker free")
    second = RawClient(gw.url, chat_body("second", 2))
    status, body = await second.result(5)  # not after the holder's ~20 s stream
    assert status == 200, body
    holder.hang_up()
    assert (await first.result())[0] == 200
    await settled(gw, [shared, other], stack.baseline)


async def test_hang_up_during_a_retry_on_another_worker(stack: Stack):
    """The first worker died unnoticed (no probe since): the request is retried on the second,
    and its client hangs up while the second computes the first token."""
    dead = stack.process()
    slow = await stack.worker(time_scale=5.0)  # ~0.4 s to the first token of a long prompt
    gw = await stack.gateway([dead.url, slow.url])
    dead.kill()
    client = RawClient(gw.url, chat_body("x " * 2000, 4))  # round robin: the dead one first
    await until(lambda: slow.state.num_pending == 1, "retried on the second worker")
    assert not client.first_bytes.is_set()
    client.hang_up()
    await settled(gw, [slow], stack.baseline)
    metrics = await scrape(gw)
    assert metrics["kvgate_upstream_retries_total"] == 1
    assert [w.healthy for w in gw.app[FLEET].workers] == [False, True]
    await served(gw)


def relaying_paused() -> bool:
    """The relay stopped reading the worker for a slow client (its drain task runs)."""
    return any(t.get_coro().__qualname__ == "_pipe.<locals>.drain" for t in asyncio.all_tasks())


def slow_network(gw) -> None:
    """Small kernel buffers on the gateway's client sockets (accepted sockets inherit the
    listening socket's): with a client that stops reading, the relay's own buffer fills and it
    pauses reading the worker."""
    for site in gw.runner.sites:
        for sock in site._server.sockets:  # noqa: SLF001
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


@pytest.mark.parametrize("hangs_up", [True, False])
async def test_a_client_that_stopped_reading(stack: Stack, hangs_up: bool):
    """It hangs up, or reads nothing for `read_timeout_s` and is dropped: either way its slot
    comes free and the request waiting for it is served."""
    worker = await stack.worker(time_scale=0.02)  # ~0.2 ms a token: the client falls behind
    gw = await stack.gateway([worker.url], dispatch=ONE_SLOT, upstream={"read_timeout_s": 1.0})
    slow_network(gw)
    client = RawClient(gw.url, chat_body("flood", 7000, stream=True), stall=True)
    await until(relaying_paused, "the relay paused for the slow client")
    waiting = RawClient(gw.url, chat_body("behind it", 2))
    await dispatch_waiting(gw, 1)
    if hangs_up:
        client.hang_up()
    assert (await waiting.result())[0] == 200
    await settled(gw, [worker], stack.baseline)
    assert not relaying_paused()
    if not hangs_up:
        client.hang_up()


async def test_a_waiter_left_with_only_workers_that_turned_it_away_is_answered(stack: Stack):
    """The waiter of the test above, when the worker it waits for dies: no worker it may use
    is left, so it is answered 503 at once rather than left waiting."""
    shared = await stack.worker(max_pending_requests=1)
    other = stack.process()
    gw = await stack.gateway([shared.url, other.url], dispatch=ONE_SLOT)
    outside = RawClient(shared.url, chat_body("another gateway's request", 4000, stream=True))
    await streaming(outside)
    holder = RawClient(gw.url, chat_body("hold", 4000, stream=True))  # shared: 503, to other
    await streaming(holder)
    first = RawClient(gw.url, chat_body("first", 2))
    await dispatch_waiting(gw, 1)
    other.kill()
    status, body = await first.result(5)
    assert status == 503 and b"no_healthy_worker" in body
    outside.hang_up()
    await settled(gw, [shared], stack.baseline)
    await served(gw)
