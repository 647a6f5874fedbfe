"""Encode long new chat turns off the event loop, keep routing decisions in arrival order, and
bound the queue that this creates.

Why: a request's route needs its block hashes, and the first request of a long new conversation
costs ~1 µs a token to tokenize with the BPE tokenizer (~2 ms at 2 k tokens, ~9 ms at 8 k); on
the loop that stalls every other request and stream of the gateway.

Rules:
- Only the Rust encoding of turns missing from the turn cache goes to the thread, as one
  `encode_batch` call, which runs with the GIL released. Everything else (decoding the body,
  assembling the template from cached turns, the block hashes) stays on the loop: it is Python
  holding the GIL, so a thread would not free the loop for it, only add up to a GIL switch
  interval (5 ms) of delay. Plain `encode` holds the GIL too, which is why turns are encoded
  with `encode_batch` (measured with a loop-lag probe: tests/kvroute/test_tokenize_ahead.py).
- Cut-off: while nothing waits, a request with at most `inline_max_chars` characters of new turns
  is tokenized inline at pick time; below that the thread hop costs more than the encoding
  (benchmarks/request_hashing.py --cutoff measures where the two cross).
- Order: routing decisions follow arrival order. Once one request waits (for the thread, or for
  an earlier request), every later one waits behind it, cheap ones too: each request's `Ticket`
  is a gate the next one awaits. The caller must `release()` its ticket right after its pick
  (Relay.open does, in a finally). A waiter that is cancelled (the client hung up) releases its
  gate when its predecessor's opens, so one hang-up never stalls the requests behind it.
- Bound: at most `queue_max` requests wait. A request arriving beyond that is routed at once,
  ahead of the waiting ones (the one case of reordering): with the hashes it makes inline when
  its new text is within the cut-off, otherwise without prefix information (no matches, sized by
  the parser's estimate; `Ticket.skipped`). Not queued, because a burst of new conversations
  would grow the queue without bound; not rejected, because prefix information only improves a
  route, and the blocks of a conversation the gateway has never seen are rarely cached anywhere.
- One thread: its jobs run in arrival order, and on a small box the other core serves the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.request_tokens import RequestTokens

log = logging.getLogger(__name__)

Turns = list[tuple[str, str]]  # (role, content) of chat turns
Job = tuple[RequestTokens, Turns]  # turns to encode ahead, for one tokenizer profile


class Ticket:
    """A request's place in routing order; `release()` it right after the request's pick."""

    __slots__ = ("_open", "skipped")

    def __init__(self, open_gate: Callable[[], None] | None = None, skipped: bool = False) -> None:
        self._open = open_gate
        self.skipped = skipped  # over the bound with long new turns: route without prefix info

    def release(self) -> None:
        """Let the next request pick (idempotent)."""
        if self._open is not None:
            self._open()
            self._open = None


class TokenizeAhead:
    """The gateway's one tokenizing thread and the ordered, bounded queue in front of it."""

    def __init__(self, queue_max: int, inline_max_chars: int) -> None:
        self.queue_max = queue_max
        self.inline_max_chars = inline_max_chars
        self.waiting = 0  # requests between `ready` and the release of their ticket
        # How requests went: inline (no wait), ahead (turns encoded in the thread), queued
        # (waited for an earlier request only), skipped (over the bound, no prefix info),
        # overflow_inline (over the bound, short enough to tokenize inline).
        self.counts = dict.fromkeys(("inline", "ahead", "queued", "skipped", "overflow_inline"), 0)
        self._last: asyncio.Future[None] | None = None  # gate of the newest waiting request
        self._pool: ThreadPoolExecutor | None = None

    async def ready(self, jobs: Sequence[Job]) -> Ticket:
        """Wait until the request whose cold turns are `jobs` may pick, its turns in the turn
        cache by then (see the module's rules)."""
        new_chars = sum(len(content) for _, turns in jobs for _, content in turns)
        cold = new_chars > self.inline_max_chars
        if self.waiting == 0 and not cold:
            self.counts["inline"] += 1
            return Ticket()
        if self.waiting >= self.queue_max:
            self.counts["skipped" if cold else "overflow_inline"] += 1
            log.debug("tokenize queue full (%d): routing %d new chars now", self.waiting, new_chars)
            return Ticket(skipped=cold)
        loop = asyncio.get_running_loop()
        prev, gate = self._last, loop.create_future()
        self._last = gate
        self.waiting += 1
        open_gate = partial(self._open, gate)
        try:
            if cold:
                self.counts["ahead"] += 1
                await self._encode(loop, [job for job in jobs if job[1]], new_chars)
            else:
                self.counts["queued"] += 1
            if prev is not None and not prev.done():
                await asyncio.shield(prev)  # a cancelled waiter must not cancel its predecessor
        except BaseException:
            # Keep the order behind it: its gate opens when its predecessor's does.
            if prev is None or prev.done():
                open_gate()
            else:
                prev.add_done_callback(lambda _: open_gate())
            raise
        return Ticket(open_gate)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _encode(
        self, loop: asyncio.AbstractEventLoop, jobs: list[Job], new_chars: int
    ) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kvgate-tokenize")
        start = time.perf_counter()
        encoded = await loop.run_in_executor(self._pool, _encode_all, jobs)
        for (tokens, turns), ids in zip(jobs, encoded, strict=True):
            tokens.keep_turns(turns, ids)
        log.debug(
            "encoded %d new chars ahead in %.2f ms", new_chars, (time.perf_counter() - start) * 1e3
        )

    def _open(self, gate: asyncio.Future[None]) -> None:
        """Let the request behind `gate` pick; counted out of the queue at once (synchronously,
        so a request arriving in the same loop iteration sees the queue as it is)."""
        if gate.done():
            return
        gate.set_result(None)
        self.waiting -= 1
        if self._last is gate:
            self._last = None


def _encode_all(jobs: list[Job]) -> list[list[array[int]]]:
    """In the tokenizing thread: thread-safe, GIL released while the encoder runs."""
    return [tokens.encode_turns(turns) for tokens, turns in jobs]


class TokenizeCollector(Collector):
    """How requests were tokenized for routing, on /metrics, read at scrape time."""

    def __init__(self, ahead: TokenizeAhead) -> None:
        self._ahead = ahead

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        paths = CounterMetricFamily(
            "kvgate_tokenize_requests",
            "Requests tokenized for routing, by path (inline, ahead = in the tokenizing thread, "
            "queued = behind an earlier one, skipped / overflow_inline = over the queue bound)",
            labels=["path"],
        )
        for path, count in self._ahead.counts.items():
            paths.add_metric([path], count)
        yield paths
        yield GaugeMetricFamily(
            "kvgate_tokenize_waiting",
            "Requests waiting for the tokenizing thread or an earlier request to route",
            value=self._ahead.waiting,
        )
