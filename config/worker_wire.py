"""The worker's state on the wire: `GET /stats` (`WorkerStats`) and `GET /kv_events`
(`KvEventBatch`), written by the worker's server and read by the gateway, so both sides use
exactly these shapes (the OpenAI request and response structs are in config/protocol.py)."""

from __future__ import annotations

from typing import Annotated

import msgspec

Count = Annotated[int, msgspec.Meta(ge=0)]  # a number of things: never negative


class WorkerStats(msgspec.Struct, kw_only=True):
    """`GET /stats` of a worker: the engine's `EngineStats` fields plus the server's own.

    The gateway decodes it with `msgspec.convert`; the bounds refuse a worker's nonsense there
    (a block size under 1 made the gateway's block hashing raise on every request: 500s).
    """

    model: str
    tokenizer: str = ""  # a name the gateway can check it tokenizes alike ("byte", "smollm2")
    # The chat template's default system prompt ("" = none), so the gateway builds the same
    # chat prompt; None = the tokenizer's own default (not reported).
    system_prompt: str | None = None
    running: Count = 0
    waiting: Count = 0
    free_blocks: Count = 0
    total_blocks: Count = 0
    cached_blocks: Count = 0
    queued_prefill_tokens: Count = 0
    block_size: Annotated[int, msgspec.Meta(ge=1)] = 16
    num_preemptions: int = 0
    num_steps: int = 0  # engine steps since start
    num_prefill_steps: int = 0  # of them, steps that carried prompt tokens
    busy_s: float = 0.0  # time in steps since start (a sim worker: modelled time)
    pending_requests: int = 0  # accepted by the server and not finished (incl. not yet queued)
    max_pending_requests: int = 0
    max_model_len: int = 0
    max_prompt_tokens: Count = 0  # longest prompt it takes; 0 = not reported (max_model_len - 1)
    kv_seq: int = 0  # sequence number of the latest KV event batch


class KvEventBatch(msgspec.Struct, kw_only=True):
    """One event of `GET /kv_events`.

    The first event on a connection has `snapshot=True`: `stored` lists every block hash the
    worker holds at `seq` (and `removed` is empty). Each later event has `seq` one more than the
    previous: the net change since it (a hash is never in both lists). A subscriber that sees a
    gap, or whose stream ends, reconnects and starts again from the snapshot.
    """

    seq: int
    snapshot: bool = False
    stored: list[int] = msgspec.field(default_factory=list)
    removed: list[int] = msgspec.field(default_factory=list)
