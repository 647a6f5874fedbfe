"""What KV-aware routing adds per request on the gateway: tokenize the prompt as the worker does
and hash its blocks (gateway/request_tokens.py), against the gateway's existing parse of the same
body (gateway/parse.py, the baseline every request already pays).

Chat prompts of several lengths in each tokenizer's own tokens: `byte` (the simulated workers')
and `smollm2` (the default worker's GGUF BPE tokenizer). Tokenizing is measured cold (a
conversation never seen) and for a conversation's next turn (its earlier turns are in the
tokenizer's turn cache: the common case for chat). Each figure is the median of interleaved
passes, parse (the baseline) measured in the same passes. Prints a table; `--out FILE` writes
JSON.

    python -m benchmarks.request_hashing --out /tmp/request_hashing.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from config.gateway import FleetViewConfig
from config.worker_wire import WorkerStats
from gateway.fleet import FleetView
from gateway.metrics import GatewayMetrics
from gateway.parse import parse_chat
from gateway.relay import UpstreamCall
from gateway.request_tokens import ChatTokenizer, Profile, RequestTokens, load_tokenizer
from gateway.worker_cache import FleetCache
from policies.routing import build_routing

NUM_WORKERS = 4
# Characters of the word list per token, to size prompts in each tokenizer's own tokens.
CHARS_PER_TOKEN = {"byte": 1, "smollm2": 5}
SYSTEM_PROMPT = "You are a helpful assistant."  # the sim worker's default

WORDS = (
    "the gateway hashes each block of the prompt with the tokenizer and chat template of the "
    "worker so that a request sharing a prefix goes where that prefix is already cached"
).split()


def chat_body(num_chars: int, rng: random.Random) -> bytes:
    """A multi-turn chat body of about `num_chars` characters of text."""
    messages = []
    size = 0
    while size < num_chars:
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


def profile_of(kind: str) -> Profile:
    model = "sim-llama" if kind == "byte" else kind
    return Profile(kind, SYSTEM_PROMPT if kind == "byte" else None, 16, model)


def pick_costs(
    kind: str, tokens: RequestTokens, bodies: list[bytes], rounds: int
) -> tuple[float, float]:
    """µs per routing decision over NUM_WORKERS synced workers (medians of `rounds` passes): the
    plain path (in-flight views only, as before the fleet view) and `FleetCache.pick` with
    lmetric (tokenizing and hashing included; the bodies repeat, so chat turns are cached)."""
    profile = profile_of(kind)
    fleet = FleetView(
        [f"http://127.0.0.1:{9000 + i}" for i in range(NUM_WORKERS)], GatewayMetrics()
    )
    cache = FleetCache(fleet, FleetViewConfig(), needs_hashes=True)
    router = build_routing()
    stats = WorkerStats(model=profile.model, tokenizer=kind, system_prompt=profile.system_prompt)
    for i, c in enumerate(cache.workers.values()):
        c.set_stats(stats)
        c.publishes_events = True
        held = tokens.hashes(tokens.token_ids("chat", bodies[i % len(bodies)]), None)
        c.events.apply(0, held, [], snapshot=True)
    asyncio.run(cache.prepare(profile))  # what the stats poller does for a slow-to-build kind
    assert cache.tokens_for(profile) is not None
    view = parse_chat(bodies[0], "").view
    calls = [
        UpstreamCall(
            endpoint="chat",
            path="/v1/chat/completions",
            body=b,
            headers={},
            model=profile.model,
            stream=False,
            view=view,
        )
        for b in bodies
    ]
    workers = fleet.workers

    def plain() -> float:
        start = time.perf_counter()
        for _call in calls:
            router.select(view, [w.view() for w in workers], 0.0)
        return (time.perf_counter() - start) / len(calls) * 1e6

    def full() -> float:
        start = time.perf_counter()
        for c in calls:
            cache.pick(c, workers, router, 0.0)
        return (time.perf_counter() - start) / len(calls) * 1e6

    return median_of(rounds, plain), median_of(rounds, full)


def byte_tokenizer() -> ChatTokenizer:
    tokenizer = load_tokenizer("byte", SYSTEM_PROMPT)
    assert tokenizer is not None
    return tokenizer


def continued(body: bytes, rng: random.Random) -> bytes:
    """The same conversation one exchange later (a reply and a new user turn appended)."""
    req = orjson.loads(body)
    for role in ("assistant", "user"):
        req["messages"].append({"role": role, "content": " ".join(rng.sample(WORDS, 20))})
    return orjson.dumps(req)


def median_of(rounds: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(rounds))


def measure(
    kind: str, tokens: RequestTokens, length: int, args: argparse.Namespace
) -> dict[str, object]:
    """One row: every figure is the median of `args.rounds` passes, the passes of all figures
    interleaved with the baseline's (parse) so load changes hit them alike."""
    rng = random.Random(length)
    chars = length * CHARS_PER_TOKEN[kind]
    bodies = [chat_body(chars, rng) for _ in range(args.bodies)]
    num_tokens = statistics.median(len(tokens.token_ids("chat", b)) for b in bodies[:3])
    ids = [tokens.token_ids("chat", b) for b in bodies]
    samples: dict[str, list[float]] = {k: [] for k in ("parse", "cold", "next", "hash")}
    for _ in range(args.rounds):
        samples["parse"].append(per_call_us(lambda b: parse_chat(b, ""), bodies, 1))
        # Cold: conversations the gateway has never seen (fresh text, nothing cached).
        fresh = [chat_body(chars, rng) for _ in range(args.bodies)]
        samples["cold"].append(per_call_us(lambda b: tokens.token_ids("chat", b), fresh, 1))
        # Next turn: the conversation's earlier request was tokenized (the common case).
        for b in fresh:
            tokens.token_ids("chat", b)
        nxt = [continued(b, rng) for b in fresh]
        samples["next"].append(per_call_us(lambda b: tokens.token_ids("chat", b), nxt, 1))
        start = time.perf_counter()
        for i in ids:
            tokens.hashes(i, None)
        samples["hash"].append((time.perf_counter() - start) / len(ids) * 1e6)
    med = {k: statistics.median(v) for k, v in samples.items()}
    plain_pick, full_pick = pick_costs(kind, tokens, bodies, args.rounds)
    return {
        "tokenizer": kind,
        "prompt_tokens": int(num_tokens),
        "parse_us": round(med["parse"], 1),
        "tokenize_cold_us": round(med["cold"], 1),
        "tokenize_next_turn_us": round(med["next"], 1),
        "hash_us": round(med["hash"], 1),
        "cold_total_x_parse": round((med["cold"] + med["hash"]) / med["parse"], 1),
        "next_turn_total_x_parse": round((med["next"] + med["hash"]) / med["parse"], 1),
        "plain_pick_us": round(plain_pick, 1),
        "fleet_pick_us": round(full_pick, 1),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", default="512,2048,8192", help="prompt tokens, comma-separated")
    p.add_argument("--tokenizers", default="byte,smollm2", help="comma-separated")
    p.add_argument("--bodies", type=int, default=20)
    p.add_argument("--rounds", type=int, default=9, help="interleaved passes; medians reported")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    rows = []
    for kind in args.tokenizers.split(","):
        tokenizer = byte_tokenizer() if kind == "byte" else load_tokenizer(kind, None)
        if tokenizer is None:
            print(f"skipping {kind}: no such tokenizer here")
            continue
        profile = profile_of(kind)
        tokens = RequestTokens(profile, tokenizer)
        for length in (int(x) for x in args.lengths.split(",")):
            rows.append(measure(kind, tokens, length, args))
    cols = list(rows[0])
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row[c]) for c in cols))
    if args.out:
        args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
