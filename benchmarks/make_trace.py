"""Write Mooncake-format traces of other shapes than the conversation trace (seeded).

    python -m benchmarks.make_trace agent /work/wt/_data/agent.jsonl --requests 10000
    python -m benchmarks.make_trace docs /work/wt/_data/docs.jsonl --requests 8000 --seed 1

Output is the Mooncake format (one JSON object a line: `timestamp` ms, `input_length`,
`output_length`, `hash_ids` of 512-token blocks, chained: an equal id at an equal position means
an equal prefix; a partial last block gets its own id). Shapes:

- `agent`: tool/agent traffic. A few long application prompts (`--apps`, Zipf popularity,
  `--app-tokens` each) shared by many sessions; a session is a chain of short steps (tool
  results, user messages) each carrying the whole history, the previous answers included,
  seconds to minutes apart (`--gap-median-s`). Long shared prefixes, fast-growing chains.
- `docs`: document traffic. Heavy one-off long documents read once, a hot set of documents
  re-read with other questions (`--hot-docs`, Zipf popularity), and short chats of a few turns
  minutes apart. No prefix shared by all requests.

Every prompt is a list of content pieces (application prompt, document, message, answer); the
block ids come from the pieces, so prefixes are shared exactly where the content is. Sessions
start uniformly over `--duration-s`; sessions are drawn until `--requests` are made and the
earliest `--requests` requests are kept (a session's later turns may run past the duration).
Each line also carries the ground truth `session` and `turn` (readers of the format ignore
them), to check what `mooncake_trace.derive_metadata` derives from block ids alone.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BLOCK_TOKENS = 512  # the Mooncake format's block


class BlockIds:
    """Chained block ids for prompts made of pieces: the id of a block is a function of its
    parent block's id and the (piece, start, end) slices it covers, so equal prefixes get equal
    ids and anything after a difference gets new ones."""

    def __init__(self) -> None:
        self._ids: dict[tuple[object, ...], int] = {}

    def of(self, pieces: Sequence[tuple[int, int]]) -> list[int]:
        out: list[int] = []
        parent = -1
        block: list[tuple[int, int, int]] = []
        room = BLOCK_TOKENS
        for piece, length in pieces:
            start = 0
            while start < length:
                take = min(room, length - start)
                block.append((piece, start, start + take))
                start += take
                room -= take
                if room == 0:
                    parent = self._id(parent, block)
                    out.append(parent)
                    block, room = [], BLOCK_TOKENS
        if block:
            out.append(self._id(parent, block))
        return out

    def _id(self, parent: int, block: list[tuple[int, int, int]]) -> int:
        key = (parent, *block)
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self._ids)
        return found


@dataclass(slots=True)
class _Request:
    time_s: float
    pieces: list[tuple[int, int]]
    output_tokens: int
    session: int
    turn: int


class _Pieces:
    def __init__(self) -> None:
        self._next = 0

    def new(self) -> int:
        self._next += 1
        return self._next


def _zipf_pick(rng: random.Random, n: int, s: float) -> int:
    weights = [1.0 / (k + 1) ** s for k in range(n)]
    return rng.choices(range(n), weights)[0]


def _lognormal(rng: random.Random, median: float, sigma: float, low: float, high: float) -> int:
    return int(min(max(median * math.exp(rng.gauss(0.0, sigma)), low), high))


def agent_trace(args: argparse.Namespace, rng: random.Random) -> list[_Request]:
    pieces = _Pieces()
    apps = [
        (pieces.new(), _lognormal(rng, args.app_tokens, 0.4, 1000, 32_000))
        for _ in range(args.apps)
    ]
    out: list[_Request] = []
    while len(out) < args.requests:
        t = rng.uniform(0.0, args.duration_s)
        prompt = [apps[_zipf_pick(rng, args.apps, 1.0)]]
        steps = 1 + int(rng.expovariate(1.0 / args.mean_steps))
        session = len(out)
        for turn in range(steps):
            prompt.append((pieces.new(), _lognormal(rng, args.step_tokens, 1.0, 20, 8000)))
            answer = _lognormal(rng, 150, 0.8, 5, 2000)
            out.append(_Request(t, list(prompt), answer, session, turn))
            prompt.append((pieces.new(), answer))
            t += _lognormal(rng, args.gap_median_s, 1.0, 0.2, 1800.0)
    return out


def docs_trace(args: argparse.Namespace, rng: random.Random) -> list[_Request]:
    pieces = _Pieces()
    hot = [
        (pieces.new(), _lognormal(rng, args.doc_tokens, 0.5, 2000, 120_000))
        for _ in range(args.hot_docs)
    ]
    out: list[_Request] = []
    while len(out) < args.requests:
        t = rng.uniform(0.0, args.duration_s)
        kind = rng.random()
        if kind < args.one_off_share:  # a long document read once
            doc = (pieces.new(), _lognormal(rng, args.doc_tokens, 0.6, 2000, 120_000))
            question = (pieces.new(), _lognormal(rng, 60, 0.8, 5, 1000))
            out.append(_Request(t, [doc, question], _lognormal(rng, 20, 1.0, 1, 500), len(out), 0))
        elif kind < args.one_off_share + args.hot_share:  # a hot document, another question
            question = (pieces.new(), _lognormal(rng, 60, 0.8, 5, 1000))
            doc = hot[_zipf_pick(rng, args.hot_docs, 0.9)]
            out.append(_Request(t, [doc, question], _lognormal(rng, 40, 1.0, 1, 800), len(out), 0))
        else:  # a short chat: a few turns, minutes apart
            prompt: list[tuple[int, int]] = []
            session = len(out)
            for turn in range(1 + int(rng.expovariate(1.0 / 1.5))):
                prompt.append((pieces.new(), _lognormal(rng, 120, 1.0, 5, 3000)))
                answer = _lognormal(rng, 300, 0.7, 5, 2000)
                out.append(_Request(t, list(prompt), answer, session, turn))
                prompt.append((pieces.new(), answer))
                t += _lognormal(rng, 60.0, 1.0, 2.0, 1800.0)
    return out


SHAPES = {"agent": agent_trace, "docs": docs_trace}


def write_trace(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    reqs = sorted(SHAPES[args.shape](args, rng), key=lambda r: r.time_s)[: args.requests]
    ids = BlockIds()
    with open(args.out, "w", encoding="utf-8") as f:
        for r in reqs:
            row = {
                "timestamp": int(r.time_s * 1000),
                "input_length": sum(n for _, n in r.pieces),
                "output_length": r.output_tokens,
                "hash_ids": ids.of(r.pieces),
                # ground truth, beyond the Mooncake fields (readers of the format ignore it):
                # what a gateway knows from the message list, to check what is derived
                "session": r.session,
                "turn": r.turn,
            }
            f.write(json.dumps(row) + "\n")
    return len(reqs)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("out", type=Path)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--duration-s", type=float, default=3600.0)
    ap.add_argument("--seed", type=int, default=0)
    agent = ap.add_argument_group("agent")
    agent.add_argument("--apps", type=int, default=6, help="shared application prompts")
    agent.add_argument("--app-tokens", type=float, default=6000, help="median prompt size")
    agent.add_argument("--mean-steps", type=float, default=8.0, help="mean steps a session")
    agent.add_argument("--step-tokens", type=float, default=300, help="median tokens a step adds")
    agent.add_argument("--gap-median-s", type=float, default=20.0, help="between steps")
    docs = ap.add_argument_group("docs")
    docs.add_argument("--doc-tokens", type=float, default=16_000, help="median document size")
    docs.add_argument("--hot-docs", type=int, default=200, help="documents read again")
    docs.add_argument("--one-off-share", type=float, default=0.3, help="of sessions")
    docs.add_argument("--hot-share", type=float, default=0.3, help="of sessions")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    n = write_trace(args)
    print(f"{args.out}: {n} requests ({args.shape}, seed {args.seed})")


if __name__ == "__main__":
    main()
