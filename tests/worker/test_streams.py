"""Long-lived streams: client disconnects, the KV event stream, and shutdown with streams open."""

from __future__ import annotations

import asyncio
import time

import httpx
import msgspec

from config.worker_wire import KvEventBatch
from gpu_worker.server import WorkerHandle
from policies.block_hash import block_hashes, extra_key

from .conftest import MODEL, make_engine, start


async def _wait_stats(
    http: httpx.AsyncClient, url: str, timeout_s: float = 5.0, **want: int
) -> dict:
    """Polls /stats until it shows `want` (the engine thread publishes stats after each step)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = (await http.get(url + "/stats")).json()
        if all(stats[k] == v for k, v in want.items()) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.01)


async def _events(lines: object) -> object:
    async for line in lines:  # type: ignore[attr-defined]
        if line.startswith("data: "):
            yield msgspec.json.decode(line[6:], type=KvEventBatch)


async def test_client_disconnect_mid_stream_aborts_the_request() -> None:
    handle = await start(make_engine(time_scale=1.0))  # ~10 ms per token: the stream lasts
    body = {"model": MODEL, "prompt": "a long answer please", "max_tokens": 5000, "stream": True}
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            async with http.stream("POST", handle.url + "/v1/completions", json=body) as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("data: "):
                        break  # one chunk arrived: the request is running
                busy = (await http.get(handle.url + "/stats")).json()
                assert busy["running"] == 1 and busy["pending_requests"] == 1
            started = time.monotonic()
            stats = await _wait_stats(http, handle.url, running=0, waiting=0, pending_requests=0)
            assert stats["running"] == 0 and stats["pending_requests"] == 0
            assert time.monotonic() - started < 2.0  # far sooner than 5000 tokens × 10 ms
            # Its blocks went back: nothing is referenced, the cache keeps the prompt blocks.
            assert (
                handle.state.engine_thread.latest_stats.free_blocks + stats["cached_blocks"]
                == stats["total_blocks"]
            )
    finally:
        await handle.close()


async def test_non_streamed_client_that_gives_up_aborts_too() -> None:
    handle = await start(make_engine(time_scale=1.0))
    body = {"model": MODEL, "prompt": "wait for me", "max_tokens": 5000}
    try:
        async with httpx.AsyncClient(timeout=0.3) as http:
            try:
                await http.post(handle.url + "/v1/completions", json=body)
            except httpx.ReadTimeout:
                pass
            else:
                raise AssertionError("the request should have outlived the client's timeout")
        async with httpx.AsyncClient(timeout=5) as http:
            stats = await _wait_stats(http, handle.url, running=0, pending_requests=0)
        assert stats["running"] == 0 and stats["pending_requests"] == 0
    finally:
        await handle.close()


async def test_kv_events_snapshot_then_consecutive_batches(worker: WorkerHandle) -> None:
    tokenizer = worker.state.engine.tokenizer
    prompts = ["kv events carry block hashes " * 6, "a second different prompt " * 5]
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("GET", worker.url + "/kv_events") as stream:
            events = _events(stream.aiter_lines())
            snapshot = await anext(events)
            assert snapshot.snapshot and snapshot.stored == [] and snapshot.removed == []
            held: set[int] = set()
            seq = snapshot.seq
            for prompt in prompts:
                expected = set(block_hashes(tokenizer.encode(prompt), 16, extra_key(MODEL)))
                resp = await http.post(
                    worker.url + "/v1/completions",
                    json={"model": MODEL, "prompt": prompt, "max_tokens": 1},
                )
                assert resp.status_code == 200
                stored: set[int] = set()
                while stored != expected:
                    batch = await asyncio.wait_for(anext(events), 5)
                    assert not batch.snapshot
                    assert batch.seq == seq + 1  # no gap
                    seq = batch.seq
                    assert not set(batch.stored) & set(batch.removed)
                    stored |= set(batch.stored)
                    assert stored <= expected
                held |= stored
        # A new subscriber's snapshot holds everything stored so far, at the latest seq.
        async with http.stream("GET", worker.url + "/kv_events") as stream:
            snapshot = await anext(_events(stream.aiter_lines()))
        assert snapshot.snapshot and set(snapshot.stored) == held and snapshot.seq == seq


async def test_eviction_shows_as_removed_events() -> None:
    handle = await start(make_engine(num_blocks=8))  # 128 tokens of cache
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            async with http.stream("GET", handle.url + "/kv_events") as stream:
                events = _events(stream.aiter_lines())
                seq = (await anext(events)).seq
                held: set[int] = set()
                ever_stored: set[int] = set()
                for i in range(4):
                    prompt = f"prompt number {i} " * 6  # ~100 tokens: 6 full blocks each
                    resp = await http.post(
                        handle.url + "/v1/completions",
                        json={"model": MODEL, "prompt": prompt, "max_tokens": 1},
                    )
                    assert resp.status_code == 200
                    stats = (await http.get(handle.url + "/stats")).json()
                    while seq < stats["kv_seq"]:  # replay the events up to this stats reading
                        batch = await asyncio.wait_for(anext(events), 5)
                        seq = batch.seq
                        assert held.isdisjoint(batch.stored)
                        assert set(batch.removed) <= held
                        held = (held - set(batch.removed)) | set(batch.stored)
                        ever_stored |= set(batch.stored)
                    assert len(held) == stats["cached_blocks"] <= 8
                assert len(ever_stored) == 4 * 6 > len(held)  # evicted blocks were reported
    finally:
        await handle.close()


async def test_close_ends_open_streams_and_joins_the_engine_thread() -> None:
    handle = await start(make_engine(time_scale=1.0))
    body = {"model": MODEL, "prompt": "never finishes", "max_tokens": 5000, "stream": True}
    async with httpx.AsyncClient(timeout=10) as http:
        async with (
            http.stream("GET", handle.url + "/kv_events") as kv,
            http.stream("POST", handle.url + "/v1/completions", json=body) as gen,
        ):
            kv_lines = kv.aiter_lines()
            gen_lines = gen.aiter_lines()
            assert (await anext(kv_lines)).startswith("data: ")
            assert (await anext(gen_lines)).startswith("data: ")
            started = time.monotonic()
            await handle.close()
            assert time.monotonic() - started < 3.0
            rest = [line async for line in gen_lines if line.startswith("data: ")]
            # The stream ends with an error event (or just ends), never hangs.
            assert not rest or "error" in rest[-1] or rest[-1] == "data: [DONE]"
            assert [line async for line in kv_lines if line.startswith("data: ")] == []
    assert not handle.state.engine_thread.alive
    assert not handle.state.engine_thread._thread.is_alive()


async def test_many_requests_with_disconnects_leave_no_block_held() -> None:
    handle = await start(make_engine(time_scale=0.1, num_blocks=64, max_batch_size=8))
    url = handle.url + "/v1/chat/completions"

    async def one(http: httpx.AsyncClient, i: int) -> None:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"shared head {i % 3} " * 8 + str(i)}],
            "max_tokens": 40,
            "stream": True,
        }
        async with http.stream("POST", url, json=body) as resp:
            assert resp.status_code == 200
            seen = 0
            async for line in resp.aiter_lines():
                seen += line.startswith("data: ")
                if i % 2 and seen == 3:
                    return  # leave mid-stream: the worker must abort and free the request

    try:
        async with httpx.AsyncClient(timeout=20) as http:
            await asyncio.gather(*(one(http, i) for i in range(24)))
            stats = await _wait_stats(http, handle.url, running=0, waiting=0, pending_requests=0)
        assert (stats["running"], stats["waiting"], stats["pending_requests"]) == (0, 0, 0)
        assert stats["free_blocks"] + stats["cached_blocks"] == stats["total_blocks"]
        pool = handle.state.engine._pool  # type: ignore[attr-defined]
        assert pool.num_private == 0 and pool.num_referenced() == 0
    finally:
        await handle.close()


async def test_first_chat_chunk_comes_with_the_first_token() -> None:
    """The role chunk is not sent on arrival: a request queued behind a full batch shows nothing
    until its first token, so a client's (or the gateway's) time to first chunk is its TTFT."""
    handle = await start(make_engine(time_scale=1.0, max_batch_size=1))  # ~10 ms per token

    def body(max_tokens: int) -> dict:
        messages = [{"role": "user", "content": "hi"}]
        return {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "stream": True}

    async def first_and_end(http: httpx.AsyncClient, max_tokens: int) -> tuple[float, float, str]:
        first, text = 0.0, ""
        async with http.stream(
            "POST", handle.url + "/v1/chat/completions", json=body(max_tokens)
        ) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: ") and not first:
                    first = time.monotonic()
                    text = line
        return first, time.monotonic(), text

    try:
        async with httpx.AsyncClient(timeout=20) as http:
            long_one = asyncio.create_task(first_and_end(http, 60))  # holds the only slot
            await _wait_stats(http, handle.url, running=1)
            queued = asyncio.create_task(first_and_end(http, 3))
            (_, long_end, _), (queued_first, _, first_line) = await asyncio.gather(long_one, queued)
        assert queued_first >= long_end - 0.05  # nothing arrived while it waited for the slot
        assert '"role":"assistant"' in first_line
    finally:
        await handle.close()
