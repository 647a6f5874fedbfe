"""What KV-aware routing adds per request on the gateway: tokenize the prompt as the worker does
and hash its blocks (gateway/request_tokens.py), against the gateway's existing parse of the same
body (gateway/parse.py, the baseline every request already pays).

Chat prompts of several lengths (tokens of the byte tokenizer, the sim workers' own), built from
varied text so nothing is cached between calls. Prints a table; `--out FILE` writes JSON.

    python -m benchmarks.request_hashing --out /tmp/request_hashing.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from config.gateway import FleetViewConfig
from config.protocol import WorkerStats
from gateway.fleet import FleetView
from gateway.metrics import GatewayMetrics
from gateway.parse import parse_chat
from gateway.relay import UpstreamCall
from gateway.request_tokens import ChatTokenizer, Profile, RequestTokens, load_tokenizer
from gateway.worker_cache import FleetCache
from policies.routing import build_routing

NUM_WORKERS = 4
SYSTEM_PROMPT = "You are a helpful assistant."  # the sim worker's default

WORDS = (
    "the gateway hashes each block of the prompt with the tokenizer and chat template of the "
    "worker so that a request sharing a prefix goes where that prefix is already cached"
).split()


def chat_body(num_tokens: int, rng: random.Random) -> bytes:
    """A multi-turn chat body of about `num_tokens` byte-tokenizer tokens."""
    messages = []
    size = 0
    while size < num_tokens:
        text = " ".join(rng.choice(WORDS) for _ in range(40))
        messages.append(
            {"role": "user" if len(messages) % 2 == 0 else "assistant", "content": text}
        )
        size += len(text) + 16
    return orjson.dumps({"model": "sim-llama", "messages": messages, "max_tokens": 64})


def per_call_us(fn: Callable[[bytes], object], bodies: list[bytes], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        for body in bodies:
            fn(body)
    return (time.perf_counter() - start) / (repeat * len(bodies)) * 1e6


def pick_costs(bodies: list[bytes], repeat: int) -> tuple[float, float]:
    """µs per routing decision over NUM_WORKERS synced workers: the plain path (in-flight views
    only, as before the fleet view) and `FleetCache.pick` with lmetric (hashing included)."""
    fleet = FleetView(
        [f"http://127.0.0.1:{9000 + i}" for i in range(NUM_WORKERS)], GatewayMetrics()
    )
    cache = FleetCache(fleet, FleetViewConfig(), needs_hashes=True)
    router = build_routing()
    stats = WorkerStats(model="sim-llama", tokenizer="byte", system_prompt=SYSTEM_PROMPT)
    tokens = RequestTokens(Profile("byte", stats.system_prompt, 16, "sim-llama"), byte_tokenizer())
    for i, c in enumerate(cache.workers.values()):
        c.set_stats(stats)
        c.publishes_events = True
        held = tokens.hashes(tokens.token_ids("chat", bodies[i % len(bodies)]), None)
        c.events.apply(0, held, [], snapshot=True)
    view = parse_chat(bodies[0], "").view
    calls = [
        UpstreamCall(
            endpoint="chat",
            path="/v1/chat/completions",
            body=b,
            headers={},
            model="sim-llama",
            stream=False,
            view=view,
        )
        for b in bodies
    ]
    workers = fleet.workers
    start = time.perf_counter()
    for _ in range(repeat):
        for _call in calls:
            views = [w.view() for w in workers]
            router.select(view, views, 0.0)
    plain = (time.perf_counter() - start) / (repeat * len(calls)) * 1e6
    start = time.perf_counter()
    for _ in range(repeat):
        for c in calls:
            cache.pick(c, workers, router, 0.0)
    full = (time.perf_counter() - start) / (repeat * len(calls)) * 1e6
    return plain, full


def byte_tokenizer() -> ChatTokenizer:
    tokenizer = load_tokenizer("byte", SYSTEM_PROMPT)
    assert tokenizer is not None
    return tokenizer


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", default="512,2048,8192", help="prompt tokens, comma-separated")
    p.add_argument("--bodies", type=int, default=20)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    profile = Profile("byte", SYSTEM_PROMPT, 16, "sim-llama")
    tokens = RequestTokens(profile, byte_tokenizer())
    rng = random.Random(0)
    rows = []
    for length in (int(x) for x in args.lengths.split(",")):
        bodies = [chat_body(length, rng) for _ in range(args.bodies)]
        num_tokens = len(tokens.token_ids("chat", bodies[0]))
        base = per_call_us(lambda b: parse_chat(b, ""), bodies, args.repeat)
        tok = per_call_us(lambda b: tokens.token_ids("chat", b), bodies, args.repeat)
        ids = [tokens.token_ids("chat", b) for b in bodies]
        start = time.perf_counter()
        for _ in range(args.repeat):
            for i in ids:
                tokens.hashes(i, None)
        hashing = (time.perf_counter() - start) / (args.repeat * len(ids)) * 1e6
        plain_pick, full_pick = pick_costs(bodies, args.repeat)
        rows.append(
            {
                "prompt_tokens": num_tokens,
                "parse_us": round(base, 1),
                "tokenize_us": round(tok, 1),
                "hash_us": round(hashing, 1),
                "routing_total_us": round(tok + hashing, 1),
                "ratio_to_parse": round((tok + hashing) / base, 2),
                "plain_pick_us": round(plain_pick, 1),
                "fleet_pick_us": round(full_pick, 1),
            }
        )
    cols = list(rows[0])
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row[c]) for c in cols))
    if args.out:
        args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
