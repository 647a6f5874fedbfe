"""The gateway's view of its workers: health, models served, requests in flight.

Owned by the app; mutated only on the event loop (handlers and the health prober), so no locks.
A worker leaves rotation when a request to it fails, when a probe is refused or reset
(`unhealthy_after_failures` in a row), or when probes time out (`unhealthy_after_timeouts` in a
row), and comes back on its first good probe. Timeouts get their own, longer count: a worker
whose loop or box is busy is slow, not gone, and taking a fleet's only busy worker out would turn
a slow fleet into a 503 for everyone. A probe that times out while the worker's replies keep
arriving does not count at all. `progress` is that sign of life: the relay bumps it for every
piece of a reply it reads, and the prober compares it before and after a probe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable
from typing import Protocol

from gateway.metrics import GatewayMetrics
from policies.routing import WorkerView

log = logging.getLogger(__name__)


class WorkerState:
    __slots__ = (
        "worker_id",
        "url",
        "healthy",
        "in_flight",
        "models",
        "failures",
        "timeouts",
        "progress",
    )

    def __init__(self, worker_id: str, url: str) -> None:
        self.worker_id = worker_id
        self.url = url.rstrip("/")
        self.healthy = False  # until its first good probe
        self.in_flight = 0
        self.models: frozenset[str] = frozenset()
        self.failures = 0  # failed probes in a row
        self.timeouts = 0  # probes in a row that timed out with nothing arriving meanwhile
        self.progress = 0  # reply pieces read from it so far (a sign of life; see module doc)

    def view(self) -> WorkerView:
        return WorkerView(worker_id=self.worker_id, in_flight=self.in_flight)


class FleetListener(Protocol):
    """Told, on the event loop, when a worker's request finishes and when its health flips."""

    def released(self, worker: WorkerState) -> None: ...
    def health_changed(self, worker: WorkerState) -> None: ...


class FleetView:
    def __init__(
        self,
        urls: Iterable[str],
        metrics: GatewayMetrics,
        unhealthy_after_failures: int = 1,
        unhealthy_after_timeouts: int = 3,
    ) -> None:
        self.workers = [WorkerState(f"w{i}", url) for i, url in enumerate(urls)]
        self._metrics = metrics
        self._unhealthy_after = unhealthy_after_failures
        self._unhealthy_after_timeouts = unhealthy_after_timeouts
        self._changed: asyncio.Event | None = None  # made on first wait (needs a running loop)
        self._listeners: list[FleetListener] = []
        for w in self.workers:
            metrics.healthy.labels(w.worker_id).set(0)
            metrics.in_flight.labels(w.worker_id).set(0)

    def models(self) -> list[str]:
        """Models some healthy worker serves now."""
        return sorted({m for w in self.workers if w.healthy for m in w.models})

    def serves(self, model: str) -> bool:
        """Whether any worker, healthy or not, has ever reported serving `model`."""
        return any(model in w.models for w in self.workers)

    def candidates(self, model: str, exclude: Collection[str] = ()) -> list[WorkerState]:
        return [
            w
            for w in self.workers
            if w.healthy and model in w.models and w.worker_id not in exclude
        ]

    def acquire(self, worker: WorkerState) -> None:
        worker.in_flight += 1
        self._metrics.sent.labels(worker.worker_id).inc()
        self._metrics.in_flight.labels(worker.worker_id).set(worker.in_flight)

    def release(self, worker: WorkerState) -> None:
        worker.in_flight -= 1
        self._metrics.in_flight.labels(worker.worker_id).set(worker.in_flight)
        for listener in self._listeners:
            listener.released(worker)

    def add_listener(self, listener: FleetListener) -> None:
        self._listeners.append(listener)

    def mark_failed(self, worker: WorkerState, reason: str) -> None:
        """A request to `worker` failed at the transport level: out of rotation at once."""
        if worker.healthy:
            log.warning("worker %s (%s) out of rotation: %s", worker.worker_id, worker.url, reason)
        self._set_healthy(worker, False)

    def probe_ok(self, worker: WorkerState, models: Iterable[str] | None) -> None:
        worker.failures = 0
        worker.timeouts = 0
        if models is not None:
            worker.models = frozenset(models)
        if not worker.healthy:
            log.info(
                "worker %s (%s) in rotation, models %s",
                worker.worker_id,
                worker.url,
                sorted(worker.models),
            )
        self._set_healthy(worker, True)

    def probe_failed(self, worker: WorkerState, reason: str) -> None:
        worker.failures += 1
        if worker.healthy and worker.failures >= self._unhealthy_after:
            log.warning(
                "worker %s (%s) failed its health probe: %s", worker.worker_id, worker.url, reason
            )
            self._set_healthy(worker, False)

    def probe_timed_out(self, worker: WorkerState, reason: str) -> None:
        """A probe timed out and nothing arrived from `worker` meanwhile."""
        worker.timeouts += 1
        self._metrics.error("probe_timeout")
        if worker.healthy and worker.timeouts >= self._unhealthy_after_timeouts:
            log.warning(
                "worker %s (%s) timed out %d probes in a row: %s",
                worker.worker_id,
                worker.url,
                worker.timeouts,
                reason,
            )
            self._set_healthy(worker, False)

    def probe_slow(self, worker: WorkerState, reason: str) -> None:
        """A probe timed out while `worker`'s replies kept arriving: not a failure."""
        log.info(
            "worker %s (%s) slow to answer its probe: %s", worker.worker_id, worker.url, reason
        )
        self._metrics.error("probe_slow_while_serving")

    async def health_changed(self) -> None:
        """Return after the next time some worker leaves or rejoins rotation."""
        if self._changed is None:
            self._changed = asyncio.Event()
        await self._changed.wait()

    def _set_healthy(self, worker: WorkerState, healthy: bool) -> None:
        changed = worker.healthy != healthy
        if changed and self._changed is not None:
            self._changed.set()
            self._changed = None
        worker.healthy = healthy
        self._metrics.healthy.labels(worker.worker_id).set(1 if healthy else 0)
        if changed:
            for listener in self._listeners:
                listener.health_changed(worker)
