"""The gateway's fleet view against real workers: hashes agree with the worker's KV events, a
sequence gap resyncs from a fresh snapshot, a restarted worker's view is cleared then rebuilt."""

from __future__ import annotations

import asyncio

import msgspec
import orjson
from aiohttp import web

from backends.openai_upstream import UpstreamClient
from config.gateway import FleetViewConfig, UpstreamConfig
from config.worker_wire import KvEventBatch
from gateway.fleet import WorkerState
from gateway.kv_events import KvEventSubscriber
from gateway.request_tokens import RequestTokens, load_tokenizer
from gateway.worker_cache import WorkerCache

LONG = " ".join(
    f"paragraph {i} of a long shared document about paged attention." for i in range(40)
)


def gateway_tokens(cache: WorkerCache) -> RequestTokens:
    """The gateway's own hasher for this worker, built from what the worker reports."""
    assert cache.profile is not None and cache.profile.tokenizer == "byte"
    tokenizer = load_tokenizer(cache.profile.tokenizer, cache.profile.system_prompt)
    assert tokenizer is not None
    return RequestTokens(cache.profile, tokenizer)


async def test_gateway_hashes_equal_the_workers_kv_events(stack) -> None:
    worker = await stack.worker()
    gw = await stack.gateway([worker.url])
    await stack.synced(gw)
    (cache,) = stack.caches(gw)
    messages = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": LONG},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Summarise it. " * 20},
    ]
    body = orjson.dumps({"model": stack.MODEL, "messages": messages})
    ids = gateway_tokens(cache).token_ids("chat", body)
    hashes = gateway_tokens(cache).hashes(ids, None)
    assert len(hashes) == len(ids) // 16 > 100

    reply = await stack.client(gw).chat.completions.create(
        model=stack.MODEL, messages=messages, max_tokens=1
    )
    assert reply.usage.prompt_tokens == len(ids)  # the worker tokenized it alike
    await cache.wait_until(lambda: cache.events.match(hashes) == len(hashes), stack.WAIT_S)

    # Without a system message the worker adds its default one; the gateway must too.
    bare = [{"role": "user", "content": LONG}]
    ids = gateway_tokens(cache).token_ids("chat", orjson.dumps({"model": "m", "messages": bare}))
    hashes = gateway_tokens(cache).hashes(ids, None)
    await stack.client(gw).chat.completions.create(model=stack.MODEL, messages=bare, max_tokens=1)
    await cache.wait_until(lambda: cache.events.match(hashes) == len(hashes), stack.WAIT_S)

    # Completions: text and token ids hash as the worker does.
    prompt = [7 + (i % 200) for i in range(300)]
    body = orjson.dumps({"model": stack.MODEL, "prompt": prompt})
    hashes = gateway_tokens(cache).hashes(
        gateway_tokens(cache).token_ids("completions", body), None
    )
    await stack.client(gw).completions.create(model=stack.MODEL, prompt=prompt, max_tokens=1)
    await cache.wait_until(lambda: cache.events.match(hashes) == len(hashes) == 18, stack.WAIT_S)


class GapServer:
    """A worker stand-in whose first stream skips a sequence number; the second is clean."""

    def __init__(self) -> None:
        self.connections = 0
        self.done = asyncio.Event()

    async def kv_events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.connections += 1
        if self.connections == 1:
            batches = [
                KvEventBatch(seq=5, snapshot=True, stored=[1, 2]),
                KvEventBatch(seq=6, stored=[3]),
                KvEventBatch(seq=8, stored=[4]),  # seq 7 is missing
                KvEventBatch(seq=9, stored=[5]),
            ]
        else:
            batches = [KvEventBatch(seq=20, snapshot=True, stored=[10, 11])]
        for b in batches:
            await resp.write(b": ping\n\ndata: " + msgspec.json.encode(b) + b"\n\n")
        await self.done.wait()
        return resp


async def test_sequence_gap_resets_and_resyncs_from_a_fresh_snapshot() -> None:
    server = GapServer()
    app = web.Application()
    app.router.add_get("/kv_events", server.kv_events)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    cfg = FleetViewConfig(reconnect_min_s=0.01, reconnect_max_s=0.05)
    cache = WorkerCache(WorkerState("w0", url), cfg)
    upstream = UpstreamClient(UpstreamConfig())
    sub = KvEventSubscriber(cache, upstream, cfg)
    task = asyncio.create_task(sub.run())
    try:
        await cache.wait_until(lambda: cache.events.match([10, 11]) == 2, 10.0)
    finally:
        task.cancel()
        server.done.set()
        await upstream.aclose()
        await runner.cleanup()
    assert server.connections == sub.connections == 2
    assert cache.events.match([1, 2, 3]) == 0  # the first stream's view is gone
    assert cache.events.match([10, 11]) == 2 and len(cache.events) == 2
    assert cache.publishes_events


async def test_restarted_worker_view_is_cleared_then_rebuilt(stack) -> None:
    worker = await stack.worker()
    gw = await stack.gateway([worker.url])
    await stack.synced(gw)
    (cache,) = stack.caches(gw)
    prompt = [3 + (i % 250) for i in range(160)]
    body = orjson.dumps({"model": stack.MODEL, "prompt": prompt})
    tokens = gateway_tokens(cache)
    hashes = tokens.hashes(tokens.token_ids("completions", body), None)
    client = stack.client(gw)
    await client.completions.create(model=stack.MODEL, prompt=prompt, max_tokens=1)
    await cache.wait_until(lambda: cache.events.match(hashes) == 10, stack.WAIT_S)

    port = worker.port
    await worker.close()
    await cache.wait_until(lambda: not cache.events.synced, stack.WAIT_S)
    assert len(cache.events) == 0 and cache.events.match(hashes) == 0

    await stack.worker(port=port)  # the same address, an empty cache
    await cache.wait_until(lambda: cache.events.synced, stack.WAIT_S)
    assert cache.events.match(hashes) == 0
    reply = await client.completions.create(model=stack.MODEL, prompt=prompt, max_tokens=1)
    assert reply.usage.prompt_tokens_details.cached_tokens == 0
    await cache.wait_until(lambda: cache.events.match(hashes) == 10, stack.WAIT_S)
