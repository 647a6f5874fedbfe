"""The routing half of the fleet view: per worker, the prefix blocks it holds and its load, and
the per-request step that turns them into `WorkerView`s for the routing policy.

Per worker (`WorkerCache`):
- block hashes from its KV event stream (`EventPrefixIndex`, fed by gateway/kv_events.py); while
  the stream is down (gap, disconnect, restart) the index is empty and matches nothing, so a
  worker that lost its cache is never credited with it;
- for a worker that publishes no events (`/kv_events` is 404: any OpenAI-compatible server), a
  `RoutedPrefixIndex` of the blocks the gateway itself sent there (bounded, with expiry);
- load from `/stats` (gateway/stats_poller.py): running, waiting, queued prefill tokens, blocks;
  between two polls the gateway adds the uncached prompt tokens of the requests it sent there
  since the last one and that are still in flight, and `WorkerView.in_flight` is the gateway's
  own live count.

Hashing (`FleetCache.pick`): only when the policy reads `matched_blocks`, once per request and
tokenizer profile. A worker whose tokenizer the gateway lacks (or that has no `/stats`) is
matched through its routed index with an approximate profile (byte tokens, 64 per block): those
hashes are only ever compared with hashes the gateway made the same way, so they stay consistent.
A tokenizer that takes long to build (smollm2) is built off the loop by `prepare`, which the stats
poller awaits for each profile it sees; until it is ready that worker is matched approximately.
Before a request's first pick, `ready` has its long new chat turns encoded in the tokenizing
thread and keeps picks in arrival order (gateway/tokenize_ahead.py). Everything else here runs on
the event loop; no locks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import msgspec

from config.context_length import ContextLimit
from config.gateway import FleetViewConfig
from config.protocol import HEADER_CACHE_SALT
from config.worker_wire import KvEventBatch, WorkerStats
from gateway.fleet import FleetView, WorkerState
from gateway.hit_context import limit_of
from gateway.prefix_index import EventPrefixIndex, RoutedPrefixIndex
from gateway.relay import UpstreamCall
from gateway.request_tokens import (
    ChatTokenizer,
    Profile,
    RequestTokens,
    load_tokenizer,
    loads_instantly,
)
from gateway.tokenize_ahead import Job, Ticket, TokenizeAhead
from policies.routing import RequestView, RoutingPolicy, WorkerView

log = logging.getLogger(__name__)

APPROX_BLOCK_BYTES = 64  # ~16 tokens of English text per approximate block
MAX_PROFILES = 64  # distinct worker setups (tokenizer, block size, model) kept
_Hashed = tuple[int, list[int]]  # (prompt tokens, block hashes)


class WorkerCache:
    """What the gateway knows of one worker's KV cache and load."""

    def __init__(self, worker: WorkerState, cfg: FleetViewConfig) -> None:
        self.worker = worker
        self.events = EventPrefixIndex(cfg.max_hashes_per_worker)
        self.routed = RoutedPrefixIndex(cfg.routed_max_hashes, cfg.routed_ttl_s)
        self.publishes_events = False  # set once its /kv_events answers, cleared by a 404
        self.stats: WorkerStats | None = None  # latest /stats; None for upstreams without one
        self.profile: Profile | None = None  # how it hashes, from its /stats
        # Uncached prompt tokens of the requests sent there since the last poll, newest last;
        # only the newest `in_flight` of them count (the older ones are taken as finished).
        self._sent: deque[int] = deque()
        self._sent_tokens = 0
        self._changed: asyncio.Event | None = None

    def apply(self, batch: KvEventBatch) -> bool:
        """One event batch; False = a gap (the subscriber resets and resyncs)."""
        ok = self.events.apply(batch.seq, batch.stored, batch.removed, batch.snapshot)
        self._notify()
        return ok

    def events_lost(self) -> None:
        """The event stream ended: forget what it said until a fresh snapshot arrives."""
        self.events.reset()
        self._notify()

    def sent(self, prefill_tokens: int) -> None:
        self._sent.append(prefill_tokens)
        self._sent_tokens += prefill_tokens

    @property
    def sent_prefill_tokens(self) -> int:
        """Prefill the worker has not reported yet: the gateway's own count since the last poll,
        of the requests still in flight (the oldest are dropped first as in-flight falls)."""
        while len(self._sent) > self.worker.in_flight:
            self._sent_tokens -= self._sent.popleft()
        return self._sent_tokens

    def set_stats(self, stats: WorkerStats | None) -> None:
        self.stats = stats
        self._sent.clear()  # the poll's own queued_prefill_tokens counts them now
        self._sent_tokens = 0
        if stats is not None:
            self.profile = Profile(
                stats.tokenizer, stats.system_prompt, stats.block_size, stats.model
            )
        self._notify()

    def view(self, matched_blocks: int) -> WorkerView:
        s = self.stats
        if s is None:
            # No polls to reset the gateway's prefill count against: in-flight is the load.
            return WorkerView(
                worker_id=self.worker.worker_id,
                in_flight=self.worker.in_flight,
                matched_blocks=matched_blocks,
            )
        return WorkerView(
            worker_id=self.worker.worker_id,
            running=s.running,
            waiting=s.waiting,
            in_flight=self.worker.in_flight,
            queued_prefill_tokens=s.queued_prefill_tokens + self.sent_prefill_tokens,
            matched_blocks=matched_blocks,
            free_blocks=s.free_blocks,
            total_blocks=s.total_blocks,
        )

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> None:
        """Return once `condition()` holds after some change (TimeoutError after `timeout_s`)."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                if self._changed is None:
                    self._changed = asyncio.Event()
                await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


class FleetCache:
    """Per-worker caches of a `FleetView`, and the routing step that reads them."""

    def __init__(
        self,
        fleet: FleetView,
        cfg: FleetViewConfig,
        needs_hashes: bool,
        needs_tokens: bool = False,
    ) -> None:
        self.cfg = cfg
        self.workers = {w.worker_id: WorkerCache(w, cfg) for w in fleet.workers}
        self.needs_hashes = needs_hashes
        # Exact prompt lengths are wanted without hashes too (the semantic cache's hits): the
        # tokenizers that take long to build are then built as well (`prepare`).
        self.needs_tokens = needs_tokens or needs_hashes
        self._tokens: dict[Profile, RequestTokens | None] = {}
        self._loading: dict[Profile, asyncio.Future[object]] = {}
        self.ahead = TokenizeAhead(cfg.tokenize_queue_max, cfg.tokenize_inline_max_chars)

    async def ready(self, call: UpstreamCall, candidates: Sequence[WorkerState]) -> Ticket:
        """Before the first `pick` of `call`: encode its long new chat turns off the loop and
        wait for its turn to pick (gateway/tokenize_ahead.py). Release the ticket after the pick."""
        if not self.needs_hashes:
            return Ticket()
        jobs: list[Job] = []
        for tokens in self._exact_tokens(call.model, candidates):
            try:
                turns = tokens.cold_turns(call.endpoint, call.body)
            except (msgspec.DecodeError, ValueError, TypeError):
                continue  # `pick` routes it without matches, as it does for any such body
            if turns:
                jobs.append((tokens, turns))
        return await self.ahead.ready(jobs)

    def close(self) -> None:
        self.ahead.close()

    def _exact_tokens(
        self, model: str, candidates: Sequence[WorkerState]
    ) -> Iterator[RequestTokens]:
        """The distinct tokenizer profiles among `candidates` that the gateway has exactly."""
        seen: set[Profile] = set()
        for worker in candidates:
            profile, exact = self._profile(self.workers[worker.worker_id], model)
            tokens = self._tokens.get(profile) if exact else None
            if tokens is not None and profile not in seen:
                seen.add(profile)
                yield tokens

    async def prompt_tokens(
        self, call: UpstreamCall, candidates: Sequence[WorkerState]
    ) -> int | None:
        """`call`'s prompt length as a candidate worker will build it, for the usage of a reply
        the gateway gives itself (a semantic-cache hit); None when the gateway has none of the
        candidates' tokenizers, or its tokenizing queue is full. Long new turns are encoded off
        the loop, as for routing (and are then cached for the conversation's next turn)."""
        ticket = await self.ready(call, candidates)
        try:
            if ticket.skipped:
                return None
            for tokens in self._exact_tokens(call.model, candidates):
                return len(tokens.token_ids(call.endpoint, call.body))
        except (msgspec.DecodeError, ValueError, TypeError):
            return None
        finally:
            ticket.release()
        return None

    def context_limits(self, workers: Sequence[WorkerState]) -> list[ContextLimit | None]:
        """The context limits `workers` report in `/stats` (None for one that reports none)."""
        return [limit_of(self.workers[w.worker_id].stats) for w in workers]

    async def prepare(self, profile: Profile | None) -> None:
        """Build the tokenizer of `profile` off the event loop when it is slow to build (once;
        concurrent callers share the build). Routing uses it from then on."""
        if not self.needs_tokens or profile is None or profile in self._tokens:
            return
        if loads_instantly(profile.tokenizer):
            return  # `_tokenizer` builds it on first use
        loading = self._loading.get(profile)
        if loading is None:
            loading = asyncio.ensure_future(
                asyncio.to_thread(load_tokenizer, profile.tokenizer, profile.system_prompt)
            )
            self._loading[profile] = loading
        try:
            tokenizer = await asyncio.shield(loading)
        except Exception:  # a broken tokenizer file must not stop the stats poller
            log.exception("building the %r tokenizer failed", profile.tokenizer)
            tokenizer = None
        finally:
            if loading.done():
                self._loading.pop(profile, None)
        if profile not in self._tokens:
            self._store(profile, tokenizer)  # type: ignore[arg-type]

    def pick(
        self,
        call: UpstreamCall,
        candidates: Sequence[WorkerState],
        router: RoutingPolicy,
        now: float | None = None,
        ticket: Ticket | None = None,
    ) -> WorkerState:
        """Route `call` among `candidates`. `ticket`: from `ready`; a skipped one (its queue was
        full) routes without the exact profiles' prefix information."""
        now = time.monotonic() if now is None else now
        skip_exact = ticket is not None and ticket.skipped
        caches = [self.workers[w.worker_id] for w in candidates]
        request = call.view
        matched = [0] * len(caches)
        hashed: list[_Hashed | None] = [None] * len(caches)
        routed_ix: list[bool] = [True] * len(caches)
        if self.needs_hashes:
            memo: dict[Profile, _Hashed | None] = {}
            for i, cache in enumerate(caches):
                profile, exact = self._profile(cache, call.model)
                if profile not in memo:
                    memo[profile] = None if exact and skip_exact else self._hash(profile, call)
                    if memo[profile] is not None and len(memo) == 1:
                        request = _sized(request, profile, memo[profile])
                hashed[i] = got = memo[profile]
                if got is None:
                    continue
                routed_ix[i] = not (exact and cache.publishes_events)
                if routed_ix[i]:
                    matched[i] = cache.routed.match(got[1], now)
                else:
                    matched[i] = cache.events.match(got[1])
        views = [c.view(m) for c, m in zip(caches, matched, strict=True)]
        i = router.select(request, views, now)
        chosen = caches[i]
        got = hashed[i]
        if got is not None and routed_ix[i]:
            chosen.routed.record(got[1], now)
        if chosen.stats is not None:  # reset by the next poll, which will count it itself
            uncached = request.num_prompt_tokens - matched[i] * request.block_size
            chosen.sent(max(uncached, 1))
        return candidates[i]

    def _profile(self, cache: WorkerCache, model: str) -> tuple[Profile, bool]:
        """The worker's exact profile when the gateway has its tokenizer, else the approximate."""
        if cache.profile is not None and self.tokens_for(cache.profile) is not None:
            return cache.profile, True
        return Profile("byte", "", APPROX_BLOCK_BYTES, model), False

    def tokens_for(self, profile: Profile) -> RequestTokens | None:
        """The gateway's hasher for workers of `profile`; None while it has none (approximate)."""
        if profile not in self._tokens:
            if not loads_instantly(profile.tokenizer):
                return None  # `prepare` builds it off the loop; approximate until then
            self._store(profile, load_tokenizer(profile.tokenizer, profile.system_prompt))
        return self._tokens[profile]

    def _store(self, profile: Profile, tokenizer: ChatTokenizer | None) -> None:
        if tokenizer is None:
            log.warning(
                "no tokenizer like the workers' %r: routing on approximate hashes",
                profile.tokenizer,
            )
        if len(self._tokens) >= MAX_PROFILES:
            self._tokens.clear()
        self._tokens[profile] = None if tokenizer is None else RequestTokens(profile, tokenizer)

    def _hash(self, profile: Profile, call: UpstreamCall) -> _Hashed | None:
        tokens = self.tokens_for(profile)
        if tokens is None:
            return None
        try:
            ids = tokens.token_ids(call.endpoint, call.body)
        except (msgspec.DecodeError, ValueError, TypeError) as exc:
            # The parser validated the body already; route without matches rather than fail it.
            log.debug("no block hashes for a %s request: %s", call.endpoint, exc)
            return None
        return len(ids), tokens.hashes(ids, call.headers.get(HEADER_CACHE_SALT))


def _sized(request: RequestView, profile: Profile, hashed: _Hashed | None) -> RequestView:
    """The request sized in the profile's tokens (the parser's size is a guess)."""
    if hashed is None:
        return request
    return RequestView(
        num_prompt_tokens=max(hashed[0], 1),
        block_size=profile.block_size,
        num_blocks=len(hashed[1]),
        category=request.category,
        tenant=request.tenant,
        max_tokens=request.max_tokens,
    )
