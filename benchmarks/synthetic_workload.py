"""A synthetic multi-category workload in the trace's shape, where the right eviction is known.

Categories differ in how (and whether) their blocks come back:

- `chat`: shared 2-block system prompt + history; goes on 60 % of turns (up to 8), lognormal
  gap with median 90 s.
- `agent`: shared 4-block tool prompt + history; goes on 90 % of steps (up to 20), median 4 s.
- `batch`: one long unique document, never reused.

Batch documents are large and never reused, so LRU lets them push out chat histories that come
back a minute later; a policy that learns "category batch is never reused, chat comes back within
minutes" keeps the chats. Turn and category are set as a gateway would pass them; hash ids are
chained like Mooncake's (equal id at equal position = equal prefix). Deterministic per seed.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from dataclasses import dataclass

from benchmarks.mooncake_trace import BLOCK_TOKENS, TraceRequest


@dataclass(frozen=True, slots=True)
class CategorySpec:
    name: str
    share: float  # fraction of new sessions
    system_blocks: int  # shared prefix of every session of the category
    first_blocks: tuple[int, int]  # blocks of the first user turn (min, max)
    turn_blocks: tuple[int, int]  # blocks each later turn adds (min, max)
    p_continue: float
    max_turns: int
    gap_median_s: float
    gap_sigma: float  # of log(gap)


CATEGORIES: tuple[CategorySpec, ...] = (
    CategorySpec("chat", 0.5, 2, (2, 10), (1, 4), 0.6, 8, 90.0, 0.8),
    CategorySpec("agent", 0.2, 4, (4, 12), (1, 3), 0.9, 20, 4.0, 0.6),
    CategorySpec("batch", 0.3, 0, (24, 64), (0, 0), 0.0, 1, 1.0, 0.0),
)


def generate(
    num_requests: int = 20_000,
    sessions_per_s: float = 2.0,
    seed: int = 0,
    categories: tuple[CategorySpec, ...] = CATEGORIES,
) -> list[TraceRequest]:
    """Requests in time order; `conversation` is the session id, `turn` counts from 0."""
    rng = random.Random(seed)
    ids = itertools.count()
    system = {c.name: [next(ids) for _ in range(c.system_blocks)] for c in categories}
    weights = [c.share for c in categories]
    pending: list[tuple[float, int, int, list[int], CategorySpec]] = []  # (t, session, turn, ...)
    out: list[TraceRequest] = []
    session_ids = itertools.count()
    t_next_session = 0.0
    while len(out) < num_requests:
        if not pending or t_next_session <= pending[0][0]:
            spec = rng.choices(categories, weights)[0]
            history = system[spec.name] + [
                next(ids) for _ in range(rng.randint(*spec.first_blocks))
            ]
            heapq.heappush(pending, (t_next_session, next(session_ids), 0, history, spec))
            t_next_session += rng.expovariate(sessions_per_s)
            continue
        t, session, turn, history, spec = heapq.heappop(pending)
        out.append(_request(t, session, turn, history, spec.name, rng))
        if turn + 1 < spec.max_turns and rng.random() < spec.p_continue:
            grown = history + [next(ids) for _ in range(rng.randint(*spec.turn_blocks))]
            gap_s = spec.gap_median_s * math.exp(rng.gauss(0.0, spec.gap_sigma))
            heapq.heappush(pending, (t + gap_s, session, turn + 1, grown, spec))
    return out


def _request(
    t: float, session: int, turn: int, blocks: list[int], category: str, rng: random.Random
) -> TraceRequest:
    return TraceRequest(
        time_s=t,
        input_tokens=len(blocks) * BLOCK_TOKENS,  # whole blocks: every block is reusable
        output_tokens=rng.randint(50, 500),
        hash_ids=list(blocks),
        turn=turn,
        conversation=session,
        category=category,
    )
