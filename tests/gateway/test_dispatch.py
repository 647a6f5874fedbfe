"""Deadline-aware dispatch: requests over the per-worker bound wait in the gateway, earliest
deadline first; a deadline that cannot be met is refused early; the queue is bounded."""

import asyncio
import time

import httpx
import pytest

from config.gateway import DispatchConfig
from gateway.dispatch import Dispatcher
from gateway.errors import ApiError
from gateway.fleet import FleetView
from gateway.keys import METRICS
from gateway.metrics import GatewayMetrics

MODEL = "sim-llama"
CHAT = "/v1/chat/completions"


def _body(max_tokens: int, stream: bool = False) -> dict:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


class Holder:
    """A long streamed request that holds the worker's only gateway slot until it ends."""

    def __init__(self, url: str, max_tokens: int) -> None:
        self.started = asyncio.Event()
        self.task = asyncio.create_task(self._run(url, max_tokens))

    async def _run(self, url: str, max_tokens: int) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            async with http.stream("POST", url + CHAT, json=_body(max_tokens, True)) as response:
                async for _ in response.aiter_lines():
                    self.started.set()


async def _waiting(gw, count: int) -> None:
    """Poll the gateway's own gauge until `count` requests wait (10 s at most)."""
    gauge = gw.app[METRICS].dispatch_waiting
    for _ in range(2000):
        if gauge._value.get() == count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{gauge._value.get()} requests waiting, not {count}")


@pytest.fixture
async def one_slot(make_worker, make_gateway):
    """A gateway allowed one request in flight to its one worker (~5 ms per token)."""
    worker = make_worker(time_scale=0.5)
    return await make_gateway(
        [worker.url], dispatch={"max_in_flight_per_worker": 1, "max_waiting": 2}
    )


async def test_waiting_requests_go_earliest_deadline_first(one_slot):
    gw = one_slot
    holder = Holder(gw.url, 100)
    await asyncio.wait_for(holder.started.wait(), 10)
    finished: list[str] = []

    async def send(name: str, deadline_ms: int | None) -> None:
        headers = {} if deadline_ms is None else {"x-kvgate-deadline-ms": str(deadline_ms)}
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(gw.url + CHAT, json=_body(3), headers=headers)
        assert response.status_code == 200, response.text
        finished.append(name)

    later = asyncio.create_task(send("no deadline", None))  # queued first...
    await _waiting(gw, 1)
    urgent = asyncio.create_task(send("deadline 20 s", 20_000))  # ...but due sooner
    await _waiting(gw, 2)
    await asyncio.wait_for(asyncio.gather(holder.task, later, urgent), 30)
    assert finished == ["deadline 20 s", "no deadline"]


async def test_a_deadline_that_cannot_be_met_is_refused_before_it_passes(one_slot):
    gw = one_slot
    holder = Holder(gw.url, 600)  # ~3 s
    await asyncio.wait_for(holder.started.wait(), 10)
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            gw.url + CHAT, json=_body(3), headers={"x-kvgate-deadline-ms": "300"}
        )
    elapsed = time.monotonic() - start
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "deadline_unmeetable" and "300 ms" in error["message"]
    assert elapsed < 1.5 and not holder.task.done()  # told long before a slot came free
    assert gw.app[METRICS].dispatch_waiting._value.get() == 0
    holder.task.cancel()


async def test_the_queue_is_bounded(one_slot):
    gw = one_slot
    holder = Holder(gw.url, 400)
    await asyncio.wait_for(holder.started.wait(), 10)
    async with httpx.AsyncClient(timeout=30) as http:
        waiters = [asyncio.create_task(http.post(gw.url + CHAT, json=_body(2))) for _ in range(2)]
        await _waiting(gw, 2)
        response = await http.post(gw.url + CHAT, json=_body(2))
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "gateway_queue_full"
        assert response.headers["Retry-After"] == "1"
        # The two that waited are served once the slot frees.
        assert [r.status_code for r in await asyncio.gather(*waiters)] == [200, 200]
    await holder.task


@pytest.mark.parametrize("value", ["soon", "-5", "0", "nan", "inf", "1e12"])
async def test_a_bad_deadline_header_is_a_400(one_slot, value):
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            one_slot.url + CHAT, json=_body(2), headers={"x-kvgate-deadline-ms": value}
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "x-kvgate-deadline-ms"


async def test_waiters_fail_at_once_when_the_last_worker_dies(make_worker, make_gateway):
    worker = make_worker(time_scale=0.5)
    gw = await make_gateway([worker.url], dispatch={"max_in_flight_per_worker": 1})
    holder = Holder(gw.url, 600)
    await asyncio.wait_for(holder.started.wait(), 10)
    async with httpx.AsyncClient(timeout=30) as http:
        waiter = asyncio.create_task(http.post(gw.url + CHAT, json=_body(2)))
        await _waiting(gw, 1)
        worker.kill()
        response = await asyncio.wait_for(waiter, 10)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_healthy_worker"
    await holder.task  # its stream ended with an error event, not a hang


async def test_arrival_check_uses_the_fastest_recent_first_token():
    metrics = GatewayMetrics()
    fleet = FleetView(["http://127.0.0.1:9"], metrics)
    now = [100.0]
    dispatch = Dispatcher(DispatchConfig(), fleet, metrics, clock=lambda: now[0])
    dispatch.check(MODEL, 100.0, 100.001)  # no history: only a past deadline is refused
    with pytest.raises(ApiError) as past:
        dispatch.check(MODEL, 99.0, 99.5)
    assert past.value.status == 504
    for ms in range(1000, 1100):  # old history, pushed out by the last 128 answers
        dispatch.record_ttft(MODEL, ms / 1000)
    for ms in range(50, 178):  # the last 128 first tokens took 50..177 ms; p10 = 62 ms
        dispatch.record_ttft(MODEL, ms / 1000)
    dispatch.check(MODEL, 100.0, 100.07)  # 70 ms: possible
    with pytest.raises(ApiError) as tight:
        dispatch.check(MODEL, 100.0, 100.055)  # 55 ms: faster than nearly every recent one
    assert tight.value.code == "deadline_unmeetable"
    dispatch.check("other-model", 100.0, 100.001)  # histories are per model


async def test_a_slot_handed_to_a_request_that_leaves_goes_to_the_next():
    metrics = GatewayMetrics()
    fleet = FleetView(["http://127.0.0.1:9"], metrics)
    (worker,) = fleet.workers
    fleet.probe_ok(worker, [MODEL])
    dispatch = Dispatcher(DispatchConfig(max_in_flight_per_worker=1), fleet, metrics)
    fleet.acquire(worker)  # the only slot is taken
    assert dispatch.must_wait(MODEL)
    first = asyncio.create_task(dispatch.wait_turn(MODEL, 0.0, None))
    second = asyncio.create_task(dispatch.wait_turn(MODEL, 1.0, None))
    third = asyncio.create_task(dispatch.wait_turn(MODEL, 2.0, None))
    await asyncio.sleep(0)
    assert dispatch.waiting == 3
    fleet.release(worker)  # handed to `first`, which is cancelled before it runs again
    first.cancel()
    for _ in range(3):  # let the woken tasks run
        await asyncio.sleep(0)
    assert first.cancelled() and second.done() and not third.done()
    # `second` got the slot but gives up before taking it (its caller failed): it wakes the rest.
    dispatch.wake(MODEL)
    for _ in range(3):
        await asyncio.sleep(0)
    assert third.done() and dispatch.waiting == 0


async def test_a_request_cancelled_before_a_slot_frees_is_skipped():
    """Cancelling a waiting task cancels its future at once, but the task leaves the queue only
    when it runs again. A slot freed in between (another cancelled request's cleanup in the same
    turn of the loop, as when clients leave a busy gateway) was handed to it: `set_result` on a
    cancelled future raised InvalidStateError out of `release`, and the slot went to nobody."""
    metrics = GatewayMetrics()
    fleet = FleetView(["http://127.0.0.1:9"], metrics)
    (worker,) = fleet.workers
    fleet.probe_ok(worker, [MODEL])
    dispatch = Dispatcher(DispatchConfig(max_in_flight_per_worker=1), fleet, metrics)
    fleet.acquire(worker)
    gone = asyncio.create_task(dispatch.wait_turn(MODEL, 0.0, None))
    after = asyncio.create_task(dispatch.wait_turn(MODEL, 1.0, 1e12))
    await asyncio.sleep(0)
    assert dispatch.waiting == 2
    gone.cancel()  # its future is cancelled now; the task has not run since
    fleet.release(worker)  # the freed slot skips it and goes to the next waiter
    for _ in range(3):
        await asyncio.sleep(0)
    assert gone.cancelled()
    assert after.done() and after.exception() is None
    assert dispatch.waiting == 0
