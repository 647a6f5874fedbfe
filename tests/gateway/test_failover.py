"""Workers that die: mid-stream, before a request, and coming back."""

import asyncio

import httpx

from gateway.keys import FLEET, METRICS, PROBER

MODEL = "sim-llama"
CHAT = "/v1/chat/completions"


async def test_worker_killed_mid_stream_ends_the_stream_with_error_and_done(
    make_worker, make_gateway
):
    worker = make_worker(time_scale=0.5)  # ~5 ms a token: the stream lasts over a second
    gw = await make_gateway([worker.url])
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 400,
        "stream": True,
    }
    events: list[bytes] = []

    async def read_stream() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            async with http.stream("POST", gw.url + CHAT, json=body) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        events.append(line.encode())
                        if len(events) == 3:
                            worker.kill()

    await asyncio.wait_for(read_stream(), 20)  # a hang fails here
    assert events[-1] == b"data: [DONE]"
    assert b'"error"' in events[-2] and b"broke off" in events[-2]
    assert all(b'"error"' not in e for e in events[:3])
    # The worker is out of rotation now: the next request is refused at once.
    async with httpx.AsyncClient() as http:
        response = await http.post(gw.url + CHAT, json=body | {"stream": False})
    assert response.status_code == 503


async def test_dead_worker_is_routed_around_and_comes_back(
    make_worker, make_gateway, openai_client
):
    a, b = make_worker(), make_worker()
    gw = await make_gateway([a.url, b.url])
    fleet, metrics = gw.app[FLEET], gw.app[METRICS]
    client = openai_client(gw)
    a.kill()
    for _ in range(4):  # the first one that lands on `a` is retried on `b`, invisibly
        reply = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert reply.choices[0].message.content
    assert [w.healthy for w in fleet.workers] == [False, True]
    assert metrics.retries._value.get() == 1
    # Probes keep failing while it is down...
    await gw.app[PROBER].probe_all()
    assert [w.healthy for w in fleet.workers] == [False, True]
    # ...and the first good probe after it restarts puts it back.
    a.restart()
    await gw.app[PROBER].probe_all()
    assert [w.healthy for w in fleet.workers] == [True, True]
    sent_before = metrics.sent.labels("w0")._value.get()
    for _ in range(4):
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert metrics.sent.labels("w0")._value.get() - sent_before == 2


async def test_background_probes_bring_a_worker_back(make_worker, make_gateway):
    worker = make_worker()
    gw = await make_gateway([worker.url], health={"interval_s": 0.05, "timeout_s": 1.0})
    fleet = gw.app[FLEET]
    worker.kill()

    async def until(healthy: bool) -> None:
        while fleet.workers[0].healthy != healthy:
            await fleet.health_changed()

    await asyncio.wait_for(until(False), 10)
    worker.restart()
    await asyncio.wait_for(until(True), 10)


async def test_client_gone_mid_stream_frees_the_worker(two_workers, make_gateway):
    gw = await make_gateway([two_workers[0].url])
    fleet, metrics = gw.app[FLEET], gw.app[METRICS]
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2000,
        "stream": True,
    }
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("POST", gw.url + CHAT, json=body) as response:
            async for _ in response.aiter_lines():
                break  # hang up after the first event
    # The relay notices at its next write, the worker at its own; both within a bounded wait.
    async with httpx.AsyncClient() as http:
        for _ in range(500):
            stats = (await http.get(two_workers[0].url + "/stats")).json()
            if fleet.workers[0].in_flight == 0 and stats["pending_requests"] == 0:
                break
            await asyncio.sleep(0.01)
    assert fleet.workers[0].in_flight == 0
    assert stats["running"] == 0 and stats["pending_requests"] == 0
    assert metrics.errors.labels("client_disconnected")._value.get() == 1


async def test_client_gone_before_a_whole_reply_frees_the_worker(make_worker, make_gateway):
    worker = make_worker(time_scale=1.0)  # 4000 tokens would take ~40 s
    gw = await make_gateway([worker.url])
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000}
    async with httpx.AsyncClient(timeout=0.3) as http:
        try:
            await http.post(gw.url + CHAT, json=body)
            raise AssertionError("a 4000-token reply came back in 0.3 s")
        except httpx.ReadTimeout:
            pass  # the client gives up and closes its connection
    async with httpx.AsyncClient() as http:
        for _ in range(500):
            stats = (await http.get(worker.url + "/stats")).json()
            if gw.app[FLEET].workers[0].in_flight == 0 and stats["pending_requests"] == 0:
                break
            await asyncio.sleep(0.01)
    assert gw.app[FLEET].workers[0].in_flight == 0
    assert stats["pending_requests"] == 0


async def _occupy(worker_url: str) -> asyncio.Task[None]:
    """A long streamed request straight to the worker; returns once its first byte is in, so the
    worker holds it (its one pending slot is taken) while the test runs."""
    started = asyncio.Event()

    async def hold() -> None:
        body = {"model": MODEL, "prompt": "hold", "max_tokens": 2000, "stream": True}
        async with httpx.AsyncClient(timeout=60) as http:
            async with http.stream("POST", worker_url + "/v1/completions", json=body) as response:
                async for _ in response.aiter_bytes():
                    started.set()

    task = asyncio.create_task(hold())
    await asyncio.wait_for(started.wait(), 20)
    return task


async def test_busy_worker_503_is_retried_on_another_worker(
    make_worker, make_gateway, openai_client
):
    busy = make_worker(0.5, "--max-pending-requests", "1")
    free = make_worker()
    holder = await _occupy(busy.url)
    try:
        gw = await make_gateway([busy.url, free.url])
        client = openai_client(gw)
        for _ in range(4):  # round-robin sends two of them to the busy worker first
            reply = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
            assert reply.choices[0].message.content
        # Turned away is not failed: the busy worker stays in rotation.
        assert [w.healthy for w in gw.app[FLEET].workers] == [True, True]
        assert gw.app[METRICS].retries._value.get() == 2
    finally:
        holder.cancel()


async def test_only_worker_busy_relays_its_503_with_retry_after(make_worker, make_gateway):
    busy = make_worker(0.5, "--max-pending-requests", "1")
    holder = await _occupy(busy.url)
    try:
        gw = await make_gateway([busy.url])
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(gw.url + CHAT, json=body)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert response.json()["error"]["code"] == "worker_overloaded"
        assert gw.app[FLEET].workers[0].healthy
    finally:
        holder.cancel()
