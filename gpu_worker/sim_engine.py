"""A simulated engine: the real prefix-cache accounting and continuous batching of an engine,
with a cost model (policies/cost_model.py) in place of the model. No torch.

What is real: a bounded pool of `num_blocks` KV blocks; full blocks are shared through the
chained block hash (policies/block_hash.py) and published as KV events; blocks are ref-counted
while sequences run and handed to the eviction policy when released; each step admits waiting
sequences while blocks allow (FCFS), prefills uncached prompt tokens under a token budget
(chunked), and decodes one token per running sequence; a sequence that cannot get a block for
its next token preempts the newest running one (recompute, as vLLM does). What is modelled: the
step's duration (slept in the engine thread) and the generated text (a deterministic word stream
seeded by the prompt and the request's seed; it never emits eos, so a request runs to max_tokens
or a stop string).

Predicted Outputs (`EngineRequest.prediction_token_ids`), in one check where the torch engine
makes several (drafts of 8 tokens and up, re-joining the prediction after a departure;
docs/engine.md): the prediction, cut to the tokens the answer could hold (max_tokens, the model
length), is computed with the prompt's last prefill chunk (its tokens are charged to that step
as prompt tokens are).
Its longest prefix that equals the sim's own token stream is accepted, and the first output
carries those tokens at once plus the next token of the stream (the model's own token after the
last accepted one, known from the same pass) instead of one decode step each. The answer is
exactly the answer without a prediction; only its timing changes.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable

from config.worker import SimEngineConfig
from gpu_worker.byte_tokenizer import ByteTokenizer
from gpu_worker.detokenizer import IncrementalDetokenizer
from gpu_worker.engine_api import EngineRequest, EngineStats, RequestOutput, Tokenizer
from gpu_worker.sim_block_pool import BlockPool
from policies.block_hash import extra_key, hash_block, root_hash
from policies.cost_model import step_time_s
from policies.eviction import BlockInfo, build_eviction

WORDS = (
    "the cache holds every block of the prompt while a request runs and the router sends "
    "each turn of a conversation to the worker that already has its prefix so prefill work "
    "stays small latency falls and goodput rises under load when deadlines are tight"
).split()


class _WordStream:
    """Deterministic generated tokens: words drawn by a RNG seeded from the prompt and seed."""

    def __init__(self, tokenizer: Tokenizer, prompt: list[int], seed: int | None) -> None:
        self._tokenizer = tokenizer
        self._rng = random.Random(hash_block((seed or 0) & 0xFFFF_FFFF_FFFF_FFFF, prompt))
        self._pending: deque[int] = deque()
        self._words = 0

    def next_token(self) -> int:
        while not self._pending:
            word = self._rng.choice(WORDS)
            sep = " " if self._words else ""
            if self._words and self._rng.random() < 0.08:
                sep = ". "
            self._words += 1
            self._pending.extend(self._tokenizer.encode(sep + word))
        return self._pending.popleft()


class _Seq:
    def __init__(
        self, req: EngineRequest, tokenizer: Tokenizer, model_id: str, max_model_len: int
    ) -> None:
        self.req = req
        self.token_ids = list(req.prompt_token_ids)
        self.num_prompt = len(self.token_ids)
        # Predicted Outputs: tokens past max_tokens (or the model length) can never be part of
        # the answer, so they are never checked (nor counted as rejected).
        room = max(0, min(req.sampling.max_tokens, max_model_len - self.num_prompt))
        self.prediction = req.prediction_token_ids[:room]
        self.prediction_pending = bool(self.prediction)  # checked with the first output
        self.num_accepted = 0
        self.num_rejected = 0
        self.root = root_hash(extra_key(model_id, req.meta.cache_salt))
        self.block_hash_cache: list[int] = []  # chained hashes of the leading full blocks
        self.held: list[int] = []  # hashes of the leading full blocks this sequence references
        self.num_private = 0  # blocks held that are not (yet) shared cache blocks
        self.num_computed = 0  # tokens whose KV exists
        self.prefill_end = 0  # tokens to compute before the next token is sampled
        self.num_output = 0
        self.num_cached: int | None = None  # set at first admission
        self.detok = IncrementalDetokenizer(tokenizer, req.sampling.stop)
        self.words = _WordStream(tokenizer, self.token_ids, req.sampling.seed)

    @property
    def num_blocks(self) -> int:
        return len(self.held) + self.num_private

    def block_hash(self, i: int, block_size: int) -> int:
        while len(self.block_hash_cache) <= i:
            j = len(self.block_hash_cache)
            parent = self.block_hash_cache[-1] if j else self.root
            chunk = self.token_ids[j * block_size : (j + 1) * block_size]
            self.block_hash_cache.append(hash_block(parent, chunk))
        return self.block_hash_cache[i]

    def info(self, position: int) -> BlockInfo:
        meta = self.req.meta
        return BlockInfo(meta.category, meta.turn, position, meta.conversation)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class SimEngine:
    """Implements `gpu_worker.engine_api.Engine`; single-threaded like every engine."""

    def __init__(
        self,
        cfg: SimEngineConfig,
        model_id: str = "kvgate-sim",
        tokenizer: Tokenizer | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cfg = cfg
        self.model_id = model_id
        self.tokenizer = tokenizer or ByteTokenizer()
        self.max_model_len = cfg.max_model_len
        # One sequence's prompt plus its first output token must fit the whole cache.
        self.max_prompt_tokens = min(cfg.max_model_len - 1, cfg.num_blocks * cfg.block_size - 1)
        self._clock = clock
        self._sleep = sleep
        self._pool = BlockPool(cfg.num_blocks, build_eviction(cfg.eviction, cfg.block_size))
        self._waiting: deque[_Seq] = deque()
        self._running: list[_Seq] = []
        self._outputs: list[RequestOutput] = []  # finished outside a step (abort, rejected)
        self._num_preemptions = 0
        self._num_steps = 0
        self._num_prefill_steps = 0
        self._busy_s = 0.0

    # ---------------------------------------------------------------- Engine protocol

    def add_request(self, request: EngineRequest) -> None:
        seq = _Seq(request, self.tokenizer, self.model_id, self.max_model_len)
        if not seq.token_ids or seq.num_prompt > self.max_prompt_tokens:
            self._outputs.append(self._final(seq, "length"))  # the server validates first
            return
        self._waiting.append(seq)

    def abort(self, request_id: str) -> None:
        for seq in self._waiting:
            if seq.req.request_id == request_id:
                self._waiting.remove(seq)
                self._outputs.append(self._final(seq, "abort"))
                return
        for seq in self._running:
            if seq.req.request_id == request_id:
                self._finish(seq)
                self._outputs.append(self._final(seq, "abort"))
                return

    def has_work(self) -> bool:
        return bool(self._waiting or self._running or self._outputs)

    def step(self) -> list[RequestOutput]:
        outputs, self._outputs = self._outputs, []
        now = self._clock()
        self._admit(now)
        scheduled = self._schedule(now, outputs)
        if not scheduled:
            return outputs
        prefill = sum(n for seq, n in scheduled if seq.num_computed < seq.prefill_end)
        # A prediction is computed with the prompt's last chunk (the step that samples first).
        prefill += sum(
            len(seq.prediction)
            for seq, n in scheduled
            if seq.prediction_pending and seq.num_computed + n == len(seq.token_ids)
        )
        decodes = [seq for seq, _ in scheduled if seq.num_computed >= seq.prefill_end]
        context = sum(len(seq.token_ids) for seq in decodes)
        duration_s = step_time_s(self.cfg.cost_model, prefill, len(decodes), context)
        self._num_steps += 1
        self._num_prefill_steps += prefill > 0
        self._busy_s += duration_s
        if duration_s > 0:
            self._sleep(duration_s)
        now = self._clock()
        for seq, n in scheduled:
            seq.num_computed += n
            self._share_full_blocks(seq, now)
            if seq.num_computed == len(seq.token_ids):
                outputs.append(self._sample(seq))
        return outputs

    def stats(self) -> EngineStats:
        return EngineStats(
            running=len(self._running),
            waiting=len(self._waiting),
            free_blocks=self._pool.num_free,
            total_blocks=self.cfg.num_blocks,
            cached_blocks=self._pool.num_cached,
            queued_prefill_tokens=sum(
                max(0, s.prefill_end - s.num_computed)
                + (len(s.prediction) if s.prediction_pending else 0)
                for s in self._running
            ),
            block_size=self.cfg.block_size,
            num_preemptions=self._num_preemptions,
            num_steps=self._num_steps,
            num_prefill_steps=self._num_prefill_steps,
            busy_s=self._busy_s,
        )

    def drain_kv_events(self) -> tuple[list[int], list[int]]:
        return self._pool.drain_events()

    def held_hashes(self) -> list[int]:
        return self._pool.held_hashes()

    # ---------------------------------------------------------------- scheduling

    def _admit(self, now: float) -> None:
        bs = self.cfg.block_size
        while self._waiting and len(self._running) < self.cfg.max_batch_size:
            seq = self._waiting[0]
            total = len(seq.token_ids)
            if _ceil_div(total, bs) > self.cfg.num_blocks:  # grew past the cache by preemptions
                self._waiting.popleft()
                self._outputs.append(self._final(seq, "length"))
                continue
            matched: list[int] = []
            for i in range(total // bs):
                h = seq.block_hash(i, bs)
                if not self._pool.contains(h):
                    break
                matched.append(h)
            need = _ceil_div(total, bs) - len(matched)
            if need > self._pool.num_available(exclude=matched):
                return  # FCFS: the head waits for blocks; nothing behind it jumps the queue
            self._waiting.popleft()
            for i, h in enumerate(matched):
                self._pool.ref(h, seq.info(i), now)
            self._pool.alloc_private(need, now)
            seq.held = matched
            seq.num_private = need
            seq.num_computed = min(len(matched) * bs, total - 1)
            seq.prefill_end = total
            if seq.num_cached is None:
                seq.num_cached = seq.num_computed
            self._running.append(seq)

    def _schedule(self, now: float, outputs: list[RequestOutput]) -> list[tuple[_Seq, int]]:
        """(sequence, tokens to compute this step), allocating decode blocks (may preempt)."""
        budget = self.cfg.max_tokens_per_step
        scheduled: list[tuple[_Seq, int]] = []
        for seq in list(self._running):
            if seq not in self._running or budget <= 0:
                continue  # preempted by an earlier sequence of this step
            n = min(len(seq.token_ids) - seq.num_computed, budget)
            need = _ceil_div(seq.num_computed + n, self.cfg.block_size) - seq.num_blocks
            while need > 0 and need > self._pool.num_available():
                victim = self._running[-1]
                if victim is seq:
                    break
                self._preempt(victim)
            if need > 0 and need > self._pool.num_available():
                if len(self._running) == 1:  # alone and still no room: it can never grow
                    self._finish(seq)
                    outputs.append(self._final(seq, "length", seq.detok.flush()))
                else:
                    self._preempt(seq)
                continue
            if need > 0:
                self._pool.alloc_private(need, now)
                seq.num_private += need
            scheduled.append((seq, n))
            budget -= n
        return scheduled

    def _preempt(self, seq: _Seq) -> None:
        self._release(seq)
        self._running.remove(seq)
        seq.num_computed = 0
        self._waiting.appendleft(seq)
        self._num_preemptions += 1

    def _share_full_blocks(self, seq: _Seq, now: float) -> None:
        """Full, computed blocks become shared cache blocks (deduplicated by hash)."""
        bs = self.cfg.block_size
        while (len(seq.held) + 1) * bs <= seq.num_computed:
            i = len(seq.held)
            h = seq.block_hash(i, bs)
            self._pool.share_private(h, seq.info(i), now)
            seq.num_private -= 1
            seq.held.append(h)

    def _sample(self, seq: _Seq) -> RequestOutput:
        checked = seq.prediction_pending
        tokens = self._verify(seq) if checked else [seq.words.next_token()]
        sampling = seq.req.sampling
        reason = None
        text = ""
        emitted: list[int] = []
        for token in tokens:  # one at a time: a stop string or the length may end it early
            emitted.append(token)
            seq.token_ids.append(token)
            seq.num_output += 1
            text += seq.detok.add([token])
            if seq.detok.stopped:
                reason = "stop"
            elif seq.num_output >= sampling.max_tokens or len(seq.token_ids) >= self.max_model_len:
                reason = "length"
                text += seq.detok.flush()
            if reason is not None:
                break
        if checked:  # the accepted tokens' KV came with the prompt's: only the last one is new
            seq.num_accepted = min(seq.num_accepted, len(emitted))
            seq.num_rejected = len(seq.prediction) - seq.num_accepted
            seq.num_computed = len(seq.token_ids) - 1
        out = self._output(seq, emitted, text)
        if reason is not None:
            self._finish(seq)
            out.finished = True
            out.finish_reason = reason
        return out

    def _verify(self, seq: _Seq) -> list[int]:
        """The first output's tokens for a sequence with a prediction: the stream's tokens while
        they equal the prediction's, then the stream's next one (the model's own token where the
        prediction went wrong, or after its end), within max_tokens and the model length."""
        seq.prediction_pending = False
        room = min(
            seq.req.sampling.max_tokens - seq.num_output, self.max_model_len - len(seq.token_ids)
        )
        own: list[int] = []
        for predicted in seq.prediction:
            if len(own) >= room:
                break
            own.append(seq.words.next_token())
            if own[-1] != predicted:
                break
            seq.num_accepted += 1
        if len(own) == seq.num_accepted and len(own) < room:
            own.append(seq.words.next_token())
        seq.num_rejected = len(seq.prediction) - seq.num_accepted
        return own

    # ---------------------------------------------------------------- bookkeeping

    def _release(self, seq: _Seq) -> None:
        now = self._clock()
        for h in seq.held:
            self._pool.unref(h, now)
        self._pool.free_private(seq.num_private)
        seq.held = []
        seq.num_private = 0

    def _finish(self, seq: _Seq) -> None:
        self._release(seq)
        self._running.remove(seq)

    def _output(self, seq: _Seq, new_ids: list[int], text: str) -> RequestOutput:
        return RequestOutput(
            request_id=seq.req.request_id,
            new_token_ids=new_ids,
            text_delta=text,
            num_prompt_tokens=seq.num_prompt,
            num_cached_tokens=seq.num_cached or 0,
            num_output_tokens=seq.num_output,
            num_accepted_prediction_tokens=seq.num_accepted,
            num_rejected_prediction_tokens=seq.num_rejected,
        )

    def _final(self, seq: _Seq, reason: str, text: str = "") -> RequestOutput:
        out = self._output(seq, [], text)
        out.finished = True
        out.finish_reason = reason  # type: ignore[assignment]
        return out
