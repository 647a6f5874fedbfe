"""The only part of the engine that touches the device: model, KV cache, sampler.

`run(batch)` makes the batch's swap copies (out, then in), then turns it into one forward pass
over the step's flat tokens and samples a token for every sequence whose computed tokens reach its
end; it returns them as Python ints (the step's single device→host sync). Rule the engine's
timing relies on: `run` returns once the step's work on the device is done, so wall time around
it is the step's time on CUDA too (a step that samples nothing waits for the device explicitly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gpu_worker.device_upload import upload_list
from gpu_worker.kv_cache import HostKvCache, KvCache
from gpu_worker.model import LlamaForCausalLM
from gpu_worker.paged_attention import build_metadata
from gpu_worker.sampler import Sampler
from gpu_worker.scheduler import ScheduledBatch


class ModelRunner:
    def __init__(
        self,
        model: LlamaForCausalLM,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        device: torch.device,
        seed: int,
        num_swap_blocks: int = 0,
    ) -> None:
        self.model = model
        self.device = device
        self.block_size = block_size
        self.kv_cache = KvCache(model.config, num_blocks, block_size, dtype, device)
        self.host_cache = (
            HostKvCache(model.config, num_swap_blocks, block_size, dtype, device)
            if num_swap_blocks > 0
            else None
        )
        self.sampler = Sampler(seed, device)

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> StepTokens:
        self.kv_cache.ensure_zeroed(batch.num_blocks_used)
        if batch.swap_out or batch.swap_in:
            assert self.host_cache is not None, "swaps scheduled without a swap space"
            if batch.swap_out:
                self.kv_cache.swap_out(batch.swap_out, self.host_cache)
            if batch.swap_in:
                self.kv_cache.swap_in(batch.swap_in, self.host_cache)
        result = StepTokens([None] * len(batch.seqs), {})
        if not batch.seqs:
            return result
        input_ids: list[int] = []
        positions: list[int] = []
        context_lens: list[int] = []
        logits_rows: list[int] = []
        # Per logits row: index in batch.seqs, and the position it follows for a sequence
        # whose draft is being checked (None: the row samples the sequence's next token).
        owners: list[tuple[int, int | None]] = []
        for i, (seq, num_new) in enumerate(zip(batch.seqs, batch.query_lens, strict=True)):
            start = seq.num_computed_tokens
            end = start + num_new
            first_row = len(input_ids)
            input_ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            context_lens.append(end)
            if seq.draft:
                # The model's choice after every position from the one before the draft on.
                for pos in range(max(start, seq.draft_start - 1), end):
                    logits_rows.append(first_row + pos - start)
                    owners.append((i, pos))
            elif end == seq.num_tokens:
                logits_rows.append(len(input_ids) - 1)
                owners.append((i, None))
        meta = build_metadata(
            batch.query_lens,
            context_lens,
            [s.block_table for s in batch.seqs],
            self.block_size,
            batch.num_decodes,
            self.device,
        )
        dev = self.device
        logits = self.model(
            upload_list(input_ids, dev),
            upload_list(positions, dev),
            self.kv_cache.layers,
            meta,
            upload_list(logits_rows, dev),
        )
        if not owners:
            if dev.type == "cuda":
                # A prefill chunk that ends nowhere: wait for it, or the engine would time only
                # the kernel launches and the cost model would see an absurd prefill rate.
                torch.cuda.synchronize(dev)
            return result
        params = [batch.seqs[i].sampling for i, _ in owners]
        # A checked position draws as a plain next token would: the draft's token is kept
        # exactly when the draw equals it, which is speculative sampling's rule for a draft that
        # puts all its mass on one token (greedy: the argmax), so the answer keeps its
        # distribution.
        tokens = self.sampler.sample(
            logits,
            [p.temperature for p in params],
            [p.top_p for p in params],
            [p.top_k for p in params],
            [batch.seqs[i].generator for i, _ in owners],
        ).tolist()
        for (i, pos), token in zip(owners, tokens, strict=True):
            if pos is None:
                result.tokens[i] = token
            else:
                result.verdicts.setdefault(i, []).append((pos, token))
        return result


@dataclass
class StepTokens:
    """What a step produced: the next token of each sequence that reached its end (None for the
    others, by batch index), and for sequences checking a draft, (position, the model's
    token after it) for every checked position the step computed."""

    tokens: list[int | None]
    verdicts: dict[int, list[tuple[int, int]]]
