"""A seeded, bounded fuzz of every HTTP surface: the gateway (semantic cache on) over two
simulated workers, and a worker serving the tiny torch model, hit directly.

Rule under test (issue #2): bad input gets OpenAI's error JSON and the right status, never a
500, a hang or a lost request. Each failing case is printed in full so it can be replayed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Iterable

import httpx
import openai
import pytest

from gateway.keys import SEMANTIC
from gateway.server import RunningGateway
from gpu_worker.server import WorkerHandle

from .conftest import ADMIN_KEY, API_KEY, SIM_MODEL
from .hit_cases import hit_cases, stored_bodies
from .http_cases import (
    Case,
    Target,
    byte_cases,
    field_cases,
    message_cases,
    prompt_cases,
    value_cases,
)
from .probe import Outcome, count_5xx, judge, send
from .wire_cases import admin_cases, framing_cases, header_cases, route_cases

SEED = 20_261_122
FIELD_CASES_PER_ENDPOINT = 80
CONCURRENCY = 4  # a few requests in flight at once, as real clients do; bounded


def all_cases(target: Target) -> list[Case]:
    rng = random.Random(SEED)
    makers: Iterable[Iterable[Case]] = (
        field_cases(rng, target, FIELD_CASES_PER_ENDPOINT),
        value_cases(target),
        message_cases(target),
        prompt_cases(target),
        byte_cases(target),
        header_cases(target),
        framing_cases(target),
        route_cases(target),
        admin_cases(target),
    )
    return [case for cases in makers for case in cases]


async def run_cases(url: str, target: Target, cases: list[Case]) -> list[tuple[Case, Outcome]]:
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=None, limits=limits) as http:

        async def one(case: Case) -> tuple[Case, Outcome]:
            async with gate:
                return case, await send(http, url, case, target)

        return await asyncio.gather(*(one(c) for c in cases))


def failures(results: list[tuple[Case, Outcome]]) -> list[str]:
    found = []
    for case, out in results:
        problem = judge(case, out)
        if problem is not None:
            found.append(f"{case.show()}\n    -> {problem}")
    return found


# Loggers whose ERROR records mean a bug of ours (aiohttp's own parser logs framing errors of
# clients at ERROR; those are the `json_error=False` cases).
OUR_LOGGERS = ("gateway", "gpu_worker", "backends", "policies", "asyncio")


def our_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()[:300]}"
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.split(".")[0] in OUR_LOGGERS
    ]


def report(results: list[tuple[Case, Outcome]], bad: list[str]) -> str:
    statuses = Counter(out.status for _, out in results)
    slowest = max(results, key=lambda r: r[1].elapsed_s)
    head = (
        f"{len(bad)} of {len(results)} cases broke the rule (statuses {dict(statuses)}; "
        f"slowest {slowest[1].elapsed_s:.2f} s: {slowest[0].name})"
    )
    return "\n".join([head, *bad])


async def test_gateway_fuzz(
    sim_gateway: RunningGateway, sim_workers: list[WorkerHandle], caplog: pytest.LogCaptureFixture
) -> None:
    target = Target(model=SIM_MODEL, auth=f"Bearer {API_KEY}", admin_key=ADMIN_KEY)
    results = await run_cases(sim_gateway.url, target, all_cases(target))
    results += await _hit_phase(sim_gateway, target)
    assert len(results) >= 300
    bad = failures(results)
    assert not bad, report(results, bad)

    # Nothing was lost or left behind: a valid request is served, every in-flight slot is free,
    # and the only 5xx the gateway counted are the ones seen above (deadline refusals).
    async with openai.AsyncOpenAI(
        base_url=sim_gateway.url + "/v1", api_key=API_KEY, max_retries=0, timeout=20.0
    ) as client:
        reply = await client.chat.completions.create(
            model=SIM_MODEL, messages=[{"role": "user", "content": "after the fuzz"}], max_tokens=3
        )
    assert reply.choices[0].message.content
    async with httpx.AsyncClient(timeout=10) as http:
        metrics = (await http.get(sim_gateway.url + "/metrics")).text
        for worker in sim_workers:
            stats = await _idle_stats(http, worker.url)
            assert stats["pending_requests"] == 0 and stats["running"] == 0, stats
    seen_5xx = Counter(str(out.status) for _, out in results if out.status >= 500)
    assert count_5xx(metrics) == {k: float(v) for k, v in seen_5xx.items()}, metrics
    assert not our_errors(caplog), our_errors(caplog)
    assert 'kind="internal_error"' not in metrics
    for line in metrics.splitlines():
        if line.startswith("kvgate_worker_in_flight{"):
            assert float(line.rsplit(" ", 1)[1]) == 0.0, line


async def test_worker_fuzz(tiny_worker: WorkerHandle, caplog: pytest.LogCaptureFixture) -> None:
    target = Target(model="tiny", vocab_size=tiny_worker.state.engine.tokenizer.vocab_size)
    results = await run_cases(tiny_worker.url, target, all_cases(target))
    assert len(results) >= 300
    bad = failures(results)
    assert not bad, report(results, bad)
    async with httpx.AsyncClient(timeout=10) as http:
        stats = await _idle_stats(http, tiny_worker.url)
        assert stats["pending_requests"] == 0 and stats["running"] == 0, stats
        assert stats["free_blocks"] + stats["cached_blocks"] == stats["total_blocks"], stats
        body = {"model": "tiny", "prompt": "still alive", "max_tokens": 2}
        assert (await http.post(tiny_worker.url + "/v1/completions", json=body)).status_code == 200
    assert not our_errors(caplog), our_errors(caplog)


async def test_gateway_over_the_tiny_worker_fuzz(
    tiny_gateway: RunningGateway, tiny_worker: WorkerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """The body cases through a gateway to the real engine: what the gateway lets through and
    the worker refuses (ids out of the vocabulary, prompts past the context) comes back in the
    same shape, and nothing is left held."""
    vocab = tiny_worker.state.engine.tokenizer.vocab_size
    target = Target(model="tiny", vocab_size=vocab)
    rng = random.Random(SEED)
    makers: Iterable[Iterable[Case]] = (
        field_cases(rng, target, FIELD_CASES_PER_ENDPOINT // 2),
        value_cases(target),
        message_cases(target),
        prompt_cases(target),
    )
    results = await run_cases(tiny_gateway.url, target, [c for cases in makers for c in cases])
    bad = failures(results)
    assert not bad, report(results, bad)
    async with httpx.AsyncClient(timeout=10) as http:
        stats = await _idle_stats(http, tiny_worker.url)
        metrics = (await http.get(tiny_gateway.url + "/metrics")).text
    assert stats["pending_requests"] == 0 and stats["running"] == 0, stats
    assert stats["free_blocks"] + stats["cached_blocks"] == stats["total_blocks"], stats
    assert count_5xx(metrics) == {}, metrics
    assert not our_errors(caplog), our_errors(caplog)


async def _hit_phase(gw: RunningGateway, target: Target) -> list[tuple[Case, Outcome]]:
    """The cache stores a reply per endpoint; then every hit case runs against those entries."""
    async with httpx.AsyncClient(timeout=20) as http:
        for path, body in stored_bodies(target).items():
            reply = await http.post(
                gw.url + path, json=body, headers={"Authorization": target.auth}
            )
            assert reply.status_code == 200, reply.text
    await gw.app[SEMANTIC].drain()  # the inserts run after the replies, in the background
    results = await run_cases(gw.url, target, list(hit_cases(target)))
    repeats = [out.cache for case, out in results if case.name.endswith("plain repeat")]
    assert repeats == ["hit", "hit"], repeats  # else the hit path was never fuzzed
    return results


async def _idle_stats(http: httpx.AsyncClient, url: str, timeout_s: float = 5.0) -> dict:
    """The worker's /stats once nothing is pending (aborts of dropped requests take a step)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = (await http.get(url + "/stats")).json()
        if stats["pending_requests"] == 0 and stats["running"] == 0:
            return stats
        if time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.02)
