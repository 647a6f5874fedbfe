"""Read a Mooncake-format trace and derive the per-request metadata it lacks (turn, conversation,
category), using only what a serving system could know when the request arrives.

Mooncake's `hash_ids` are chained prefix-block ids (512 tokens a block): equal ids at the same
position mean an equal prefix. The trace carries no conversation or category field, so:

- **Conversation / turn.** A request continues an earlier one when it starts with all of that
  request's *full* blocks (the last block of a prompt is usually partial, and a longer prompt
  re-hashes it). The deepest such earlier request is the parent; turn = parent's turn + 1, and
  the conversation id is inherited. A conversation is a chain whose prompts only grow, so two
  signs mark a prefix as shared (an application prompt, a document read again with another
  question, a regenerated or edited turn) rather than one conversation's history: a block
  already followed by two different *full* blocks in earlier prompts (a branching point:
  everything down to the first block is shared), or a request extending a prompt longer than
  itself (a sibling; its anchor block is not used again). Nothing assumes a shared system prompt
  of a given length: in the conversation trace block 0 (shared by every request) is found to
  branch at once, in an agent trace a many-block application prompt is. The first sibling of a
  shared prefix that is longer than the first user and ends on the same blocks cannot be told
  from a next turn by block ids and lengths, and still counts as one. A gateway gets the same
  from the message list (the number of earlier user turns, a hash of the earlier messages) —
  these are the "gateway signals".
- **Category.** The prompt's size class in blocks, `len<k>` with k = floor(log2(blocks)), capped:
  what any server knows on arrival, and in this trace a strong predictor of whether a
  conversation goes on (one-block prompts rarely do).
- **App prefix.** The number of leading blocks the request shares with earlier requests of
  *other* conversations (a shared system prompt / application template). Reported, not used by the
  default policy: in the conversation trace every request shares exactly block 0.

The routing simulation can reuse `read_trace` / `derive_metadata` unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

BLOCK_TOKENS = 512  # Mooncake's block size
MAX_LEN_CLASS = 6  # prompts of 64+ blocks share one size class


@dataclass(slots=True)
class TraceRequest:
    """One request of the trace plus the derived metadata (filled by `derive_metadata`)."""

    time_s: float
    input_tokens: int
    output_tokens: int
    hash_ids: list[int]
    turn: int = 0
    conversation: int = -1
    parent_index: int | None = None  # the earlier request this one continues
    category: str = ""
    app_prefix_blocks: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def full_blocks(self) -> int:
        """Blocks a longer prompt can reuse: all but a trailing partial block."""
        if self.input_tokens % BLOCK_TOKENS == 0:
            return len(self.hash_ids)
        return len(self.hash_ids) - 1


def length_category(num_blocks: int) -> str:
    """Size class of a prompt: len0 = 1 block, len1 = 2-3, len2 = 4-7, ... capped."""
    return f"len{min(int(math.log2(max(num_blocks, 1))), MAX_LEN_CLASS)}"


def read_trace(path: str | Path, limit: int | None = None) -> list[TraceRequest]:
    """Requests in file order (which is time order), with derived metadata."""
    out: list[TraceRequest] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(out) >= limit:
                break
            if not line.strip():
                continue
            row = json.loads(line)
            out.append(
                TraceRequest(
                    time_s=float(row["timestamp"]) / 1000.0,
                    input_tokens=int(row["input_length"]),
                    output_tokens=int(row["output_length"]),
                    hash_ids=[int(h) for h in row["hash_ids"]],
                )
            )
    derive_metadata(out)
    return out


def derive_metadata(requests: Iterable[TraceRequest]) -> None:
    """Fill turn, conversation, parent_index, category and app_prefix_blocks in place.

    Causal: a request's fields depend only on earlier requests, as they would at run time.
    """
    reqs = list(requests)
    # The id of a request's last full block names its whole reusable prefix (ids are chained).
    last_full: dict[int, int] = {}
    # block id -> the distinct full blocks seen right after it (two mark a branching point)
    successors: dict[int, set[int]] = {}
    dead: set[int] = set()  # anchors a shorter prompt extended: a sibling's, not a history's
    # block id -> the conversation that first used it (for the app-prefix measure)
    first_owner: dict[int, int] = {}
    next_conversation = 0
    for i, r in enumerate(reqs):
        r.category = length_category(len(r.hash_ids))
        parent = None
        for j in range(len(r.hash_ids) - 1, -1, -1):
            h = r.hash_ids[j]
            if len(successors.get(h, ())) >= 2 or h in dead:
                break  # a shared prefix from here down to the first block
            q = last_full.get(h)
            if q is not None:
                if r.input_tokens < reqs[q].input_tokens:  # a history never shrinks
                    dead.add(h)
                else:
                    parent = q
                break
        for j in range(r.full_blocks - 1):
            seen = successors.setdefault(r.hash_ids[j], set())
            if len(seen) < 2:
                seen.add(r.hash_ids[j + 1])
        if parent is None:
            r.turn, r.conversation, r.parent_index = 0, next_conversation, None
            next_conversation += 1
        else:
            p = reqs[parent]
            r.turn, r.conversation, r.parent_index = p.turn + 1, p.conversation, parent
        shared_blocks = 0
        for h in r.hash_ids:
            owner = first_owner.setdefault(h, r.conversation)
            if owner == r.conversation:
                break
            shared_blocks += 1
        r.app_prefix_blocks = shared_blocks
        if r.full_blocks >= 1:
            last_full[r.hash_ids[r.full_blocks - 1]] = i


class HasBlocks(Protocol):
    hash_ids: list[int]


def ideal_hit_ratio(requests: Iterable[HasBlocks]) -> float:
    """Prefix hit ratio with an unbounded cache (a block hits while all earlier ones hit): the
    most any cache, or fleet of caches, can reach on these requests."""
    seen: set[int] = set()
    hits = total = 0
    for r in requests:
        chained = True
        for h in r.hash_ids:
            total += 1
            chained = chained and h in seen
            hits += chained
            seen.add(h)
    return hits / total if total else 0.0
