"""Upstreams without KV events or /stats: the gateway routes on its own past decisions."""

from __future__ import annotations

import orjson

from config.gateway import FleetViewConfig
from gateway.fleet import FleetView
from gateway.metrics import GatewayMetrics
from gateway.relay import UpstreamCall
from gateway.worker_cache import APPROX_BLOCK_BYTES, FleetCache
from gpu_worker.byte_tokenizer import ByteTokenizer
from policies.routing import RequestView, build_routing
from policies.routing.round_robin import RoundRobinPolicy

TEXT = " ".join(f"line {i} of a long shared context" for i in range(60))


def call(messages: list[dict[str, str]]) -> UpstreamCall:
    body = orjson.dumps({"model": "m", "messages": messages})
    return UpstreamCall(
        endpoint="chat",
        path="/v1/chat/completions",
        body=body,
        headers={},
        model="m",
        stream=False,
        view=RequestView(num_prompt_tokens=len(body) // 4),
    )


def fleet(ttl_s: float = 600.0, needs_hashes: bool = True) -> tuple[FleetView, FleetCache]:
    view = FleetView(["http://127.0.0.1:1", "http://127.0.0.1:2"], GatewayMetrics())
    return view, FleetCache(view, FleetViewConfig(routed_ttl_s=ttl_s), needs_hashes)


def test_a_conversation_sticks_to_the_worker_it_was_routed_to() -> None:
    view, cache = fleet()
    router = build_routing()  # lmetric
    candidates = view.workers
    turn1 = [{"role": "user", "content": TEXT}]
    first = cache.pick(call(turn1), candidates, router, now=0.0)
    held = cache.workers[first.worker_id].routed
    approx_ids = ByteTokenizer("").apply_chat_template(turn1)
    assert len(held) == len(approx_ids) // APPROX_BLOCK_BYTES > 20
    turn2 = [*turn1, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]
    for t in (1.0, 2.0, 3.0):
        assert cache.pick(call(turn2), candidates, router, now=t) is first
    other = [{"role": "user", "content": TEXT.replace("line", "row")}]
    assert cache.pick(call(other), candidates, router, now=4.0) is not first


def test_routed_view_expires() -> None:
    view, cache = fleet(ttl_s=10.0)
    router = build_routing()
    turn1 = [{"role": "user", "content": TEXT}]
    first = cache.pick(call(turn1), view.workers, router, now=0.0)
    assert cache.workers[first.worker_id].routed.match([1], now=100.0) == 0
    assert len(cache.workers[first.worker_id].routed) == 0


def test_no_hashing_for_policies_that_ignore_matches() -> None:
    view, cache = fleet(needs_hashes=False)
    turn1 = [{"role": "user", "content": TEXT}]
    router = RoundRobinPolicy()
    picked = {cache.pick(call(turn1), view.workers, router, now=0.0) for _ in range(2)}
    assert len(picked) == 2
    assert all(len(c.routed) == 0 for c in cache.workers.values())
