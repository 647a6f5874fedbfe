"""What KV-aware routing adds per request on the gateway: tokenize the prompt as the worker does
and hash its blocks (gateway/request_tokens.py), against the gateway's existing parse of the same
body (gateway/parse.py, the baseline every request already pays).

Chat prompts of several lengths (tokens of the byte tokenizer, the sim workers' own), built from
varied text so nothing is cached between calls. Prints a table; `--out FILE` writes JSON.

    python benchmarks/request_hashing.py --out /tmp/request_hashing.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from gateway.parse import parse_chat
from gateway.request_tokens import Profile, RequestTokens, load_tokenizer

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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", default="512,2048,8192", help="prompt tokens, comma-separated")
    p.add_argument("--bodies", type=int, default=20)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    profile = Profile("byte", "You are a helpful assistant.", 16, "sim-llama")
    tokenizer = load_tokenizer(profile.tokenizer, profile.system_prompt)
    assert tokenizer is not None
    tokens = RequestTokens(profile, tokenizer)
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
        rows.append(
            {
                "prompt_tokens": num_tokens,
                "parse_us": round(base, 1),
                "tokenize_us": round(tok, 1),
                "hash_us": round(hashing, 1),
                "routing_total_us": round(tok + hashing, 1),
                "ratio_to_parse": round((tok + hashing) / base, 2),
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
