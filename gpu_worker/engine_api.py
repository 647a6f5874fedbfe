"""The contract between the worker's HTTP server and an engine (the real torch engine or the
simulated cost-model engine). The server is the only async part of a worker; an engine is
synchronous and single-threaded and is driven by one engine thread. No torch here.

Rules an engine keeps:
- `add_request` and `abort` are called only from the engine thread (the server queues them there).
- `step()` does one scheduling step (a prefill chunk and/or one decode token per running
  sequence) and returns what changed; it may block for the duration of the step (the simulated
  engine sleeps for its modelled step time). It returns [] when there is no work.
- Every request added eventually yields exactly one output with `finished=True` (also on abort,
  with finish_reason "abort"), after which the engine holds no block of it.
- `drain_kv_events()` returns the block hashes stored and removed since the last call, in order;
  `held_hashes()` is a full snapshot of the hashes the engine's prefix cache holds now.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

FinishReason = Literal["stop", "length", "abort"]


class SamplingParams(msgspec.Struct, frozen=True, kw_only=True):
    max_tokens: int = 16
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int | None = None
    stop: tuple[str, ...] = ()  # stop strings; the matched string is not returned
    ignore_eos: bool = False


class RequestMeta(msgspec.Struct, frozen=True, kw_only=True):
    """Hints from the gateway (headers): used by eviction and scheduling, never required."""

    category: str = ""
    turn: int = 0
    conversation: int | None = None
    cache_salt: str | None = None  # tenant isolation: folded into the block hashes' `extra`
    deadline_s: float | None = None  # absolute, on the worker's monotonic clock


class EngineRequest(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingParams = SamplingParams()
    meta: RequestMeta = RequestMeta()
    # Predicted Outputs: tokens the answer is expected to start with. The engine checks them in
    # one forward pass and keeps the leading ones it would have produced itself; the answer is
    # the same as without them (exactly for greedy requests, in distribution when sampling).
    prediction_token_ids: list[int] = msgspec.field(default_factory=list)


class RequestOutput(msgspec.Struct, kw_only=True):
    request_id: str
    new_token_ids: list[int]
    text_delta: str = ""  # detokenized text of new_token_ids (held back while a stop may match)
    finished: bool = False
    finish_reason: FinishReason | None = None
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    num_output_tokens: int = 0  # generated so far, in total
    # Predicted Outputs, final once the prediction is checked (the first output with tokens):
    # prediction tokens kept as the answer's first tokens, and those dropped.
    num_accepted_prediction_tokens: int = 0
    num_rejected_prediction_tokens: int = 0


class EngineStats(msgspec.Struct, kw_only=True):
    running: int = 0
    waiting: int = 0
    free_blocks: int = 0  # not holding any cached content
    total_blocks: int = 0
    cached_blocks: int = 0  # holding reusable prefix content (referenced or not)
    queued_prefill_tokens: int = 0  # prompt tokens admitted and not yet prefilled
    block_size: int = 16
    num_preemptions: int = 0
    # Since start: engine steps run, those that carried prompt tokens (prefill, alone or mixed
    # with decodes), and the time spent in steps (the sim engine: its modelled time).
    num_steps: int = 0
    num_prefill_steps: int = 0
    busy_s: float = 0.0


class Tokenizer(Protocol):
    """What the server needs of a tokenizer (the engine's own, so hashes agree)."""

    @property
    def eos_token_ids(self) -> frozenset[int]: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: list[int]) -> str: ...

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        """ChatML prompt (with the generation prompt for the assistant) as token ids."""
        ...


class Engine(Protocol):
    model_id: str
    tokenizer: Tokenizer
    max_model_len: int  # longest prompt + output a sequence may have
    max_prompt_tokens: int  # longest prompt that fits the whole KV cache

    def add_request(self, request: EngineRequest) -> None: ...

    def abort(self, request_id: str) -> None: ...

    def has_work(self) -> bool: ...

    def step(self) -> list[RequestOutput]: ...

    def stats(self) -> EngineStats: ...

    def drain_kv_events(self) -> tuple[list[int], list[int]]: ...

    def held_hashes(self) -> list[int]: ...
