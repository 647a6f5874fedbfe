"""The torch engine: `step()` = schedule → run the model → postprocess.

Chain of ownership: the engine owns the scheduler, the scheduler owns the block manager, and only
the model runner touches the device. Synchronous, one thread (see `engine_api` for the contract).
"""

from __future__ import annotations

import logging
import math
import time

import torch

from config.engine import EngineConfig
from gpu_worker.block_manager import BlockManager
from gpu_worker.detokenizer import IncrementalDetokenizer
from gpu_worker.engine_api import (
    EngineRequest,
    EngineStats,
    FinishReason,
    RequestOutput,
    Tokenizer,
)
from gpu_worker.kv_cache import blocks_for_memory, bytes_per_block
from gpu_worker.model import LlamaForCausalLM
from gpu_worker.model_loading import LoadedModel, load_model
from gpu_worker.model_runner import ModelRunner
from gpu_worker.preemption import HostBlockPool, PreemptionCost
from gpu_worker.reference_drafts import ReferenceDrafter
from gpu_worker.scheduler import Scheduler
from gpu_worker.sequence import Sequence
from policies.block_hash import extra_key
from policies.eviction import build_eviction

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DEFAULT_SWAP_BYTES = 4 << 30


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("engine.device is cuda but no CUDA device is available")
    return torch.device(name)


class TorchEngine:
    """An `Engine` (gpu_worker/engine_api.py) over the paged-attention Llama model."""

    def __init__(
        self,
        cfg: EngineConfig,
        tokenizer: Tokenizer | None = None,
        model: tuple[str, LlamaForCausalLM] | None = None,
    ) -> None:
        """`model` (id, model with weights) overrides `cfg.model` (tests and benchmarks that
        already hold the weights pass it); `tokenizer` overrides the model's own."""
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        self.config = cfg
        self.device = resolve_device(cfg.device)
        dtype = DTYPES[cfg.dtype]
        if model is None:
            loaded = load_model(cfg.model, cfg.seed)
        else:
            loaded = LoadedModel(model[0], model[1], tokenizer)  # type: ignore[arg-type]
        self.model_id, model = loaded.model_id, loaded.model
        tokenizer = tokenizer or loaded.tokenizer
        model = model.to(device=self.device, dtype=dtype).eval()
        model.requires_grad_(False)
        input_major = cfg.input_major_weights and model.store_input_major()
        if not cfg.input_major_weights:
            model.fuse()
        self.model_config = model.config
        num_blocks = cfg.num_blocks or blocks_for_memory(
            model.config, cfg.block_size, dtype, self.device, cfg.kv_memory_fraction
        )
        self.max_model_len = min(
            model.config.max_position_embeddings,
            cfg.max_model_len or math.inf,
            num_blocks * cfg.block_size,
        )
        self.max_prompt_tokens = self.max_model_len - 1
        self.tokenizer = tokenizer  # type: ignore[assignment]
        self._eos = frozenset(tokenizer.eos_token_ids) if tokenizer is not None else frozenset()
        self.block_manager = BlockManager(
            num_blocks,
            cfg.block_size,
            build_eviction(cfg.eviction, cfg.block_size),
            cfg.enable_prefix_caching,
            time.monotonic,
        )
        block_bytes = bytes_per_block(model.config, cfg.block_size, dtype)
        on_cuda = self.device.type == "cuda"
        num_swap_blocks = cfg.num_swap_blocks
        if num_swap_blocks is None:
            swaps = cfg.preemption == "swap" or (cfg.preemption == "auto" and on_cuda)
            num_swap_blocks = DEFAULT_SWAP_BYTES // block_bytes if swaps else 0
        cost = PreemptionCost(cfg.preemption, on_cuda, block_bytes, cfg.host_link_gb_s * 1e9)
        self.scheduler = Scheduler(
            self.block_manager,
            cfg.max_batch_size,
            cfg.max_tokens_per_step,
            HostBlockPool(num_swap_blocks),
            cost,
        )
        self.runner = ModelRunner(
            model, num_blocks, cfg.block_size, dtype, self.device, cfg.seed, num_swap_blocks
        )
        self._seqs: dict[str, Sequence] = {}
        # Text and stop strings per request (no tokenizer: token ids only, no text).
        self._detoks: dict[str, IncrementalDetokenizer] = {}
        self._pending: list[RequestOutput] = []  # outputs of aborts, returned by the next step
        self._num_steps = 0
        self._num_prefill_steps = 0
        self._busy_s = 0.0
        self._arrivals = 0
        log.info(
            "engine %s on %s/%s%s: %d blocks of %d tokens, %d swap blocks, max_model_len %d",
            self.model_id,
            self.device,
            cfg.dtype,
            " (input-major weights)" if input_major else "",
            num_blocks,
            cfg.block_size,
            num_swap_blocks,
            self.max_model_len,
        )

    # ---- Engine protocol -------------------------------------------------------------------

    def add_request(self, request: EngineRequest) -> None:
        """Raises ValueError for a request the engine cannot serve (the server checks first)."""
        prompt = request.prompt_token_ids
        if request.request_id in self._seqs:
            raise ValueError(f"duplicate request id {request.request_id!r}")
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) > self.max_prompt_tokens:
            raise ValueError(f"prompt of {len(prompt)} tokens > {self.max_prompt_tokens}")
        vocab = self.model_config.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise ValueError(f"token id out of range [0, {vocab})")
        if request.sampling.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        seed = request.sampling.seed
        generator = None
        if seed is not None and request.sampling.temperature > 0:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        self._arrivals += 1
        seq = Sequence(
            request_id=request.request_id,
            token_ids=list(prompt),
            num_prompt_tokens=len(prompt),
            sampling=request.sampling,
            meta=request.meta,
            extra=extra_key(self.model_id, request.meta.cache_salt),
            arrival=self._arrivals,
            generator=generator,
        )
        predicted = request.prediction_token_ids
        if predicted and min(predicted) >= 0 and max(predicted) < vocab:
            seq.drafter = ReferenceDrafter(list(predicted))
            self._draft(seq)
        self._seqs[request.request_id] = seq
        if self.tokenizer is not None:
            detok = IncrementalDetokenizer(self.tokenizer, request.sampling.stop)
            self._detoks[request.request_id] = detok
        self.scheduler.add(seq)

    def abort(self, request_id: str) -> None:
        seq = self._seqs.get(request_id)
        if seq is not None:
            self._pending.append(self._finish(seq, "abort", []))

    def has_work(self) -> bool:
        return bool(self._pending) or self.scheduler.has_work()

    def step(self) -> list[RequestOutput]:
        outputs, self._pending = self._pending, []
        batch = self.scheduler.schedule()
        if not batch.seqs and not batch.swap_out:
            return outputs
        started = time.perf_counter()
        step = self.runner.run(batch)  # makes the batch's swap copies even with no sequences
        num_prefill = batch.num_tokens - batch.num_decodes
        elapsed_s = time.perf_counter() - started
        self.scheduler.cost.observe_step(num_prefill, elapsed_s)
        self._num_steps += 1
        self._num_prefill_steps += num_prefill > 0
        self._busy_s += elapsed_s
        self.scheduler.postprocess(batch)
        for i, (seq, token) in enumerate(zip(batch.seqs, step.tokens, strict=True)):
            out = None
            if i in step.verdicts:
                out = self._check_draft(seq, step.verdicts[i])
            elif token is not None:
                out = self._append(seq, [token])
            if out is None:
                continue
            outputs.append(out)
            if not out.finished and seq.drafter is not None:
                self._draft(seq)
        return outputs

    def stats(self) -> EngineStats:
        bm = self.block_manager
        return EngineStats(
            running=len(self.scheduler.running),
            waiting=len(self.scheduler.waiting) + len(self.scheduler.swapped),
            free_blocks=bm.num_empty_blocks(),
            total_blocks=bm.num_blocks,
            cached_blocks=bm.num_cached_blocks(),
            queued_prefill_tokens=self.scheduler.queued_prefill_tokens(),
            block_size=bm.block_size,
            num_preemptions=self.scheduler.num_preemptions,
            num_steps=self._num_steps,
            num_prefill_steps=self._num_prefill_steps,
            busy_s=self._busy_s,
        )

    def drain_kv_events(self) -> tuple[list[int], list[int]]:
        return self.block_manager.drain_events()

    def held_hashes(self) -> list[int]:
        return self.block_manager.held_hashes()

    # ---- internals -------------------------------------------------------------------------

    def _draft(self, seq: Sequence) -> None:
        """Put the drafter's next draft after the tokens of `seq`, to be checked by the next
        step that computes them; cut to where the answer can go (max_tokens and the context,
        one token short of each: the model's own token after the last kept one comes with the
        check)."""
        assert seq.drafter is not None
        room = seq.sampling.max_tokens - seq.num_output_tokens
        room = min(room, self.max_model_len - seq.num_tokens) - 1
        draft = seq.drafter.propose(seq.output_token_ids, room)
        if not draft:
            return
        seq.draft = draft
        seq.draft_start = seq.num_tokens
        seq.token_ids.extend(draft)
        seq.verdicts = [0] * (len(draft) + 1)

    def _check_draft(self, seq: Sequence, verdicts: list[tuple[int, int]]) -> RequestOutput | None:
        """Record the model's tokens after the checked positions of this step; once the whole
        draft is computed, keep its leading tokens the model chose too, add the model's own
        token after them, and rewind the K/V past them."""
        base = seq.draft_start - 1
        for pos, token in verdicts:
            seq.verdicts[pos - base] = token
        if seq.num_computed_tokens < seq.num_tokens:
            return None  # more of the draft to compute
        predicted, chosen = seq.draft, seq.verdicts
        kept = next((j for j, t in enumerate(predicted) if chosen[j] != t), len(predicted))
        seq.draft, seq.verdicts = [], []
        seq.num_accepted_prediction_tokens += kept
        seq.num_rejected_prediction_tokens += len(predicted) - kept
        assert seq.drafter is not None
        seq.drafter.checked(len(predicted), kept)
        del seq.token_ids[seq.draft_start :]
        self.block_manager.rewind(seq, seq.draft_start + kept)
        before = seq.num_output_tokens
        out = self._append(seq, [*predicted[:kept], chosen[kept]])
        cut = kept - (seq.num_output_tokens - before)
        if cut > 0:  # the answer ended (eos, stop string) inside the kept tokens
            seq.num_accepted_prediction_tokens -= cut
            out.num_accepted_prediction_tokens = seq.num_accepted_prediction_tokens
        return out

    def _append(self, seq: Sequence, tokens: list[int]) -> RequestOutput:
        """Add the model's next tokens (several when a prediction was kept) up to the first
        that ends the request."""
        sp = seq.sampling
        reason: FinishReason | None = None
        detok = self._detoks.get(seq.request_id)
        text = ""
        for token in tokens:
            seq.token_ids.append(token)
            if token in self._eos and not sp.ignore_eos:
                reason = "stop"
            elif seq.num_output_tokens >= sp.max_tokens or seq.num_tokens >= self.max_model_len:
                reason = "length"
            if detok is not None:
                # Token by token, so a stop string ends the answer (and its token count) where
                # it would without a prediction.
                text += detok.add([token])
                if detok.stopped:
                    reason = "stop"
            if reason is not None:
                break
        new = seq.token_ids[seq.num_prompt_tokens + seq.num_emitted_tokens :]
        seq.num_emitted_tokens = seq.num_output_tokens
        if reason is not None:
            return self._finish(seq, reason, new, text)
        return self._output(seq, new, None, text)

    def _finish(
        self, seq: Sequence, reason: FinishReason, new: list[int], text: str = ""
    ) -> RequestOutput:
        self.scheduler.remove(seq)
        del self._seqs[seq.request_id]
        detok = self._detoks.pop(seq.request_id, None)
        if detok is not None and not detok.stopped and reason != "abort":
            text += detok.flush()
        seq.finish_reason = reason
        return self._output(seq, new, reason, text)

    def _output(
        self, seq: Sequence, new: list[int], reason: FinishReason | None, text: str = ""
    ) -> RequestOutput:
        return RequestOutput(
            request_id=seq.request_id,
            new_token_ids=new,
            text_delta=text,
            finished=reason is not None,
            finish_reason=reason,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_cached_tokens=seq.num_cached_tokens,
            num_output_tokens=seq.num_output_tokens,
            num_accepted_prediction_tokens=seq.num_accepted_prediction_tokens,
            num_rejected_prediction_tokens=seq.num_rejected_prediction_tokens,
        )
