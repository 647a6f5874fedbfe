"""One request's state inside the engine: its tokens, blocks, and progress."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from gpu_worker.engine_api import FinishReason, RequestMeta, SamplingParams
from gpu_worker.reference_drafts import ReferenceDrafter


class Status(enum.Enum):
    WAITING = "waiting"  # not holding blocks (new, or preempted for recompute)
    RUNNING = "running"
    SWAPPED = "swapped"  # preempted, its computed K/V in host blocks `host_blocks`
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """Tokens are the prompt followed by the output; `num_computed_tokens` of them have K/V in
    the cache (the rest are computed by the next steps, as prefill chunks or a decode token).

    Rules: `block_table` covers at least `num_computed_tokens`; `block_hashes[i]` is the chained
    hash of full block i of `token_ids` (computed lazily, shared with the block manager)."""

    request_id: str
    token_ids: list[int]
    num_prompt_tokens: int
    sampling: SamplingParams
    meta: RequestMeta
    extra: bytes  # block-hash `extra` (model id + cache salt)
    arrival: int  # admission order: the scheduler preempts the newest first
    generator: torch.Generator | None = None  # seeded sampling
    status: Status = Status.WAITING
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)
    host_blocks: list[int] = field(default_factory=list)  # while SWAPPED
    num_computed_tokens: int = 0
    num_committed_blocks: int = 0  # leading blocks already offered to the prefix cache
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache at first admission
    num_emitted_tokens: int = 0  # output tokens already reported
    admitted_once: bool = False
    finish_reason: FinishReason | None = None
    # Predicted Outputs. While a draft is being checked (`draft` set), `token_ids` ends with it
    # from index `draft_start` on, and the model's own choice after each position from
    # draft_start - 1 on is collected in `verdicts` (verdicts[j] follows token draft_start-1+j).
    # Once all are computed, the draft's leading tokens that match become output and the rest
    # go. Drafts come from `drafter` (gpu_worker/reference_drafts.py): the prediction's start
    # right after the prompt, then its continuation as the answer follows or re-joins it.
    draft: list[int] = field(default_factory=list)
    verdicts: list[int] = field(default_factory=list)
    draft_start: int = 0
    drafter: ReferenceDrafter | None = None
    num_accepted_prediction_tokens: int = 0  # draft tokens kept, over all drafts
    num_rejected_prediction_tokens: int = 0  # draft tokens checked and not kept

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_matchable_tokens(self) -> int:
        """Leading tokens whose K/V the prefix cache may serve: while a draft is being checked,
        only those before it (the model must see the draft to judge it)."""
        return self.draft_start if self.draft else len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        """Tokens of the answer so far (a draft being checked is not part of it yet)."""
        return len(self.token_ids) - self.num_prompt_tokens - len(self.draft)

    @property
    def output_token_ids(self) -> list[int]:
        start = self.num_prompt_tokens
        return self.token_ids[start : start + self.num_output_tokens]
