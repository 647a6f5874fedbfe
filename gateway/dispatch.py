"""Deadline-aware admission: a bounded number of requests in flight per worker, the rest waiting
here most urgent first, and a clear refusal the moment a deadline can no longer be met.

Rules (everything runs on the event loop; the relay is the only caller):
- A request's deadline (`deadline_s`, monotonic clock) is when its first token is due; None =
  no deadline. It is refused with 504 `deadline_unmeetable` as soon as now + the fastest recent
  time to first token of its model (p10 of the last `HISTORY` answers) passes the deadline: at
  arrival, or while it waits. With no history yet only a deadline already past is refused.
- With `max_in_flight_per_worker` = 0 nothing waits here (only the arrival check applies).
  Otherwise a request that finds no worker with room waits. Order: earliest latest start first,
  latest start = deadline - the typical time to first token (p50); a request without a
  deadline counts as due `no_deadline_ms` after its arrival, so deadlines go first without
  starving it.
- A freed slot is handed straight to the most urgent waiter of a model the freed worker serves;
  requests that arrive while anyone waits join the queue, so none can take a slot ahead of it.
- A waiter that was turned away by some workers (503 busy: they are full with other work) waits
  for a slot on the others only: a free slot on a worker it excludes goes to the next waiter,
  and a request joining the queue is handed such a slot at once. When none of the others is
  healthy any more it is answered 503 at once.
- At most `max_waiting` requests wait: beyond, 503 `gateway_queue_full` with Retry-After.
- A health change re-runs the hand-off (a worker back in rotation brings slots); a model left
  with no healthy worker fails its waiters with 503 at once.
- `close()` (the gateway is shutting down): every waiter, and every request that would wait
  from then on, is answered 503 `gateway_shutting_down` at once; a slot that comes free on
  shutdown goes to nobody, so no waiter is kept waiting for the replies in progress to end.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Collection

from config.gateway import DispatchConfig
from gateway.errors import ApiError, gateway_shutting_down, no_healthy_worker
from gateway.fleet import FleetView, WorkerState
from gateway.metrics import GatewayMetrics

HISTORY = 128  # recent times to first token kept per model


class TtftHistory:
    """The last `HISTORY` times from sending a request to a worker to its first bytes."""

    __slots__ = ("_ring", "_next", "_sorted")

    def __init__(self) -> None:
        self._ring: list[float] = []
        self._next = 0
        self._sorted: list[float] | None = None

    def add(self, seconds: float) -> None:
        if len(self._ring) < HISTORY:
            self._ring.append(seconds)
        else:
            self._ring[self._next] = seconds
            self._next = (self._next + 1) % HISTORY
        self._sorted = None

    def quantile(self, q: float) -> float:
        """0.0 while empty (no evidence that any deadline is out of reach)."""
        if not self._ring:
            return 0.0
        if self._sorted is None:
            self._sorted = sorted(self._ring)
        return self._sorted[min(len(self._sorted) - 1, int(q * len(self._sorted)))]


class _Waiter:
    __slots__ = ("model", "arrival_s", "deadline_s", "exclude", "future", "timer", "live")

    def __init__(
        self, model: str, arrival_s: float, deadline_s: float | None, exclude: frozenset[str]
    ) -> None:
        self.model = model
        self.arrival_s = arrival_s
        self.deadline_s = deadline_s
        self.exclude = exclude  # workers that turned it away: their slots are of no use to it
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.timer: asyncio.TimerHandle | None = None
        self.live = True  # False once handed a slot, refused or gone (lazy heap deletion)


def _handed_slot(future: asyncio.Future[None]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


class Dispatcher:
    def __init__(
        self,
        cfg: DispatchConfig,
        fleet: FleetView,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self._fleet = fleet
        self._metrics = metrics
        self._clock = clock
        self._cap = cfg.max_in_flight_per_worker
        self._ttft: dict[str, TtftHistory] = {}
        self._queues: dict[str, list[tuple[float, int, _Waiter]]] = {}
        self._waiting: dict[str, int] = {}  # live waiters per model
        self._handed: dict[str, int] = {}  # slots handed to waiters that have not taken them yet
        self._excluding: dict[str, int] = {}  # live waiters that some workers turned away
        self._seq = itertools.count()
        self._closed = False
        fleet.add_listener(self)

    @property
    def waiting(self) -> int:
        return sum(self._waiting.values())

    def with_room(self, workers: list[WorkerState]) -> list[WorkerState]:
        """The workers that may take one more request now (all of them when unbounded)."""
        if self._cap == 0:
            return workers
        return [w for w in workers if w.in_flight < self._cap]

    def record_ttft(self, model: str, seconds: float) -> None:
        history = self._ttft.get(model)
        if history is None:
            if len(self._ttft) >= 1024:  # bounded: models come from the fleet, but be safe
                return
            history = self._ttft[model] = TtftHistory()
        history.add(seconds)

    def check(self, model: str, arrival_s: float, deadline_s: float | None) -> None:
        """Refuse now a request that cannot get its first token by its deadline."""
        if deadline_s is not None and self._clock() + self._fastest(model) > deadline_s:
            raise self._unmeetable(model, arrival_s, deadline_s)

    def must_wait(self, model: str, tried: Collection[str] = ()) -> bool:
        """Whether a request for `model` must queue: some healthy worker could take it, but no
        slot is free that is not already promised to an earlier waiter."""
        if self._cap == 0:
            return False
        candidates = self._fleet.candidates(model, tried)
        if not candidates:
            return False  # nothing to wait for: routing answers 503
        if self._waiting.get(model, 0):
            return True
        return self._free_slots(candidates) <= self._handed.get(model, 0)

    async def wait_turn(
        self,
        model: str,
        arrival_s: float,
        deadline_s: float | None,
        exclude: Collection[str] = (),
    ) -> None:
        """Wait until a slot on a worker not in `exclude` is handed to this request; raises
        `ApiError` (504 deadline, 503 no worker left or shutting down) instead when that happens
        first."""
        if self._closed:
            raise gateway_shutting_down()
        if self.waiting >= self.cfg.max_waiting:
            raise ApiError(
                503,
                f"the gateway's queue is full ({self.cfg.max_waiting} requests waiting for a "
                "worker); retry later",
                code="gateway_queue_full",
                retry_after_s=1,
            )
        waiter = _Waiter(model, arrival_s, deadline_s, frozenset(exclude))
        entry = (self._key(waiter), next(self._seq), waiter)
        heapq.heappush(self._queues.setdefault(model, []), entry)
        self._waiting[model] = self._waiting.get(model, 0) + 1
        self._metrics.dispatch_waiting.set(self.waiting)
        if deadline_s is not None:
            delay = deadline_s - self._fastest(model) - self._clock()
            waiter.timer = asyncio.get_running_loop().call_later(
                max(0.0, delay), self._expire, waiter
            )
        if waiter.exclude:
            self._excluding[model] = self._excluding.get(model, 0) + 1
        if self._excluding.get(model):
            self._hand_off(model)  # a free slot the waiters ahead may not be able to use
        started = self._clock()
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.live:
                self._leave(waiter)
            elif _handed_slot(waiter.future):
                self._taken(model)  # it was handed a slot it will not use: pass it on
                self._hand_off(model)
            raise
        finally:
            self._metrics.dispatch_wait.observe(self._clock() - started)
        self._taken(model)

    def close(self) -> None:
        """The gateway is shutting down: answer every waiter now (see the module's rules)."""
        self._closed = True
        for model in list(self._queues):
            while (waiter := self._pop(model)) is not None:
                waiter.future.set_exception(gateway_shutting_down())

    def wake(self, model: str) -> None:
        """Hand free slots of `model` to its waiters: a request that was handed one and then
        failed or was cancelled before taking it calls this (the slot is free, nobody knows)."""
        if self._cap and self._waiting.get(model):
            self._hand_off(model)

    # FleetView listener

    def released(self, worker: WorkerState) -> None:
        for model in worker.models:
            self.wake(model)

    def health_changed(self, worker: WorkerState) -> None:
        for model in list(self._queues):
            if not self._waiting.get(model):
                continue
            if candidates := self._fleet.candidates(model):
                if self._excluding.get(model):
                    self._fail_stranded(model, candidates)
                self._hand_off(model)
            else:
                while (waiter := self._pop(model)) is not None:
                    waiter.future.set_exception(no_healthy_worker(model))

    # internals

    def _ttft_quantile(self, model: str, q: float) -> float:
        history = self._ttft.get(model)
        return 0.0 if history is None else history.quantile(q)

    def _fastest(self, model: str) -> float:
        return self._ttft_quantile(model, 0.10)

    def _key(self, waiter: _Waiter) -> float:
        due = waiter.deadline_s
        if due is None:
            due = waiter.arrival_s + self.cfg.no_deadline_ms / 1000.0
        return due - self._ttft_quantile(waiter.model, 0.50)

    def _free_slots(self, candidates: list[WorkerState]) -> int:
        return sum(max(0, self._cap - w.in_flight) for w in candidates)

    def _hand_off(self, model: str) -> None:
        """Hand the free, unpromised slots of `model` to its most urgent waiters that can use
        them; a waiter that can use none (it excludes their workers) keeps its place."""
        queue = self._queues.get(model)
        if not queue:
            return
        candidates = self._fleet.candidates(model)
        free = self._free_slots(candidates) - self._handed.get(model, 0)
        passed: list[tuple[float, int, _Waiter]] = []
        while free > 0 and queue:
            entry = heapq.heappop(queue)
            waiter = entry[2]
            if not waiter.live:
                continue
            if waiter.future.done():  # cancelled, its task not run since: no slot for it (_pop)
                self._leave(waiter)
                continue
            if waiter.exclude and not any(
                w.in_flight < self._cap and w.worker_id not in waiter.exclude for w in candidates
            ):
                passed.append(entry)
                continue
            self._leave(waiter)
            waiter.future.set_result(None)
            self._handed[model] = self._handed.get(model, 0) + 1
            free -= 1
        for entry in passed:
            heapq.heappush(queue, entry)

    def _fail_stranded(self, model: str, candidates: list[WorkerState]) -> None:
        """Answer the waiters that excluded every healthy worker left (503, as the relay would):
        no slot they may use can come free any more."""
        for _, _, waiter in list(self._queues[model]):
            if waiter.future.done():  # cancelled: its task leaves the queue itself
                continue
            if waiter.live and all(w.worker_id in waiter.exclude for w in candidates):
                self._leave(waiter)
                waiter.future.set_exception(
                    no_healthy_worker(model, "the workers it may still use are gone")
                )

    def _taken(self, model: str) -> None:
        self._handed[model] -= 1

    def _pop(self, model: str) -> _Waiter | None:
        """The most urgent live waiter of `model`, out of the queue (None when there is none).

        A waiter whose task was cancelled has its future cancelled at once but leaves the queue
        only when that task runs again; a slot freed in between (another cancelled request's
        cleanup, in the same turn of the loop) must skip it: it can take no slot and no error."""
        queue = self._queues.get(model)
        while queue:
            waiter = heapq.heappop(queue)[2]
            if waiter.live:
                self._leave(waiter)
                if waiter.future.done():
                    continue
                return waiter
        return None

    def _leave(self, waiter: _Waiter) -> None:
        waiter.live = False
        if waiter.timer is not None:
            waiter.timer.cancel()
        if waiter.exclude:
            self._excluding[waiter.model] -= 1
        self._waiting[waiter.model] -= 1
        self._metrics.dispatch_waiting.set(self.waiting)
        queue = self._queues.get(waiter.model)
        if queue and len(queue) > 2 * self._waiting[waiter.model] + 64:
            queue[:] = [entry for entry in queue if entry[2].live]  # drop the dead entries
            heapq.heapify(queue)

    def _expire(self, waiter: _Waiter) -> None:
        if not waiter.live or waiter.future.done():  # done: cancelled, its task will leave
            return
        self._leave(waiter)
        assert waiter.deadline_s is not None
        waiter.future.set_exception(
            self._unmeetable(waiter.model, waiter.arrival_s, waiter.deadline_s)
        )

    def _unmeetable(self, model: str, arrival_s: float, deadline_s: float) -> ApiError:
        now = self._clock()
        budget_ms = 1000.0 * (deadline_s - arrival_s)
        fastest_ms = 1000.0 * self._fastest(model)
        return ApiError(
            504,
            f"the deadline cannot be met: the first token was due {budget_ms:.0f} ms after "
            f"arrival, {1000.0 * (now - arrival_s):.0f} ms have passed, and the fastest recent "
            f"first token of {model!r} took {fastest_ms:.0f} ms (fleet busy: retry later or "
            "with a longer deadline)",
            code="deadline_unmeetable",
        )
