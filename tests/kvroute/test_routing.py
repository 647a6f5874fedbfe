"""KV-aware routing through the gateway over two (or three) real simulated workers."""

from __future__ import annotations

import asyncio

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from gateway.request_tokens import RequestTokens, load_tokenizer
from gateway.worker_cache import WorkerCache


def tokens_of(cache: WorkerCache) -> RequestTokens:
    assert cache.profile is not None
    tokenizer = load_tokenizer(cache.profile.tokenizer, cache.profile.system_prompt)
    assert tokenizer is not None
    return RequestTokens(cache.profile, tokenizer)


def conversation(i: int) -> list[dict[str, str]]:
    doc = " ".join(
        f"conversation {i} shares document line {j} with its later turns" for j in range(30)
    )
    return [{"role": "user", "content": doc}]


async def first_turn(stack, gw, messages) -> tuple[int, WorkerCache]:
    """Send turn one; wait until its blocks show up in some worker's events. Returns the
    prompt's cacheable tokens and the cache of the worker that holds them."""
    caches = stack.caches(gw)
    tokens = tokens_of(caches[0])
    ids = tokens.token_ids("chat", orjson.dumps({"model": "m", "messages": messages}))
    hashes = tokens.hashes(ids, None)
    reply = await stack.client(gw).chat.completions.create(
        model=stack.MODEL, messages=messages, max_tokens=4
    )
    messages.append({"role": "assistant", "content": reply.choices[0].message.content or ""})
    messages.append({"role": "user", "content": "And the next point, in detail please. " * 8})

    return len(hashes) * 16, await stack.held(caches, hashes)


async def second_turn_cached(stack, gw, messages) -> int:
    reply = await stack.client(gw).chat.completions.create(
        model=stack.MODEL, messages=messages, max_tokens=2
    )
    return reply.usage.prompt_tokens_details.cached_tokens


async def test_a_shared_prefix_goes_to_the_worker_that_holds_it(stack) -> None:
    workers = [await stack.worker(), await stack.worker()]
    gw = await stack.gateway([w.url for w in workers])  # lmetric: the default
    await stack.synced(gw)
    for i in range(4):
        messages = conversation(i)
        prefix_tokens, _ = await first_turn(stack, gw, messages)
        assert await second_turn_cached(stack, gw, messages) >= prefix_tokens


async def test_round_robin_loses_the_prefix_as_a_control(stack) -> None:
    workers = [await stack.worker(), await stack.worker()]
    gw = await stack.gateway([w.url for w in workers], routing={"type": "round_robin"})
    await stack.synced(gw)
    messages = conversation(0)
    prefix_tokens, _ = await first_turn(stack, gw, messages)
    assert await second_turn_cached(stack, gw, messages) < prefix_tokens


async def test_a_far_busier_holder_loses_the_request(stack) -> None:
    # time_scale 0.5: decode steps of ~5 ms, so the load below lasts for seconds.
    workers = [await stack.worker(time_scale=0.5), await stack.worker(time_scale=0.5)]
    gw = await stack.gateway([w.url for w in workers])
    await stack.synced(gw)
    messages = conversation(7)
    prefix_tokens, holder = await first_turn(stack, gw, messages)
    busy = next(w for w in workers if w.url == holder.worker.url)
    num_busy = 40
    direct = httpx.AsyncClient(base_url=busy.url, timeout=60)
    body = {"model": stack.MODEL, "max_tokens": 4000, "prompt": "load"}
    load = [asyncio.create_task(direct.post("/v1/completions", json=body)) for _ in range(num_busy)]
    try:
        await holder.wait_until(
            lambda: (
                holder.stats is not None and holder.stats.running + holder.stats.waiting >= num_busy
            ),
            stack.WAIT_S,
        )
        assert await second_turn_cached(stack, gw, messages) < prefix_tokens
    finally:
        for task in load:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)
        await direct.aclose()


def _sent(text: str) -> dict[str, float]:
    return {
        s.labels["worker"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "kvgate_worker_requests_total"
    }


async def test_requests_with_nothing_cached_spread_over_the_workers(stack) -> None:
    workers = [await stack.worker() for _ in range(3)]
    # No stats polls after the first (no stale load); sequential requests: every score ties.
    gw = await stack.gateway([w.url for w in workers], fleet_view={"stats_interval_s": 60})
    await stack.synced(gw)
    client = stack.client(gw)
    for i in range(6):
        prompt = [10 + i] * 64  # distinct from the first block on: nothing is shared
        await client.completions.create(model=stack.MODEL, prompt=prompt, max_tokens=1)
    async with httpx.AsyncClient() as http:
        sent = _sent((await http.get(gw.url + "/metrics")).text)
    assert sent == {"w0": 2.0, "w1": 2.0, "w2": 2.0}
