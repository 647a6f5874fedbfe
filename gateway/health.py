"""Active health checks: probe every worker's `/health` every `interval_s`.

A worker that answers is asked for its `/v1/models` when it (re)joins, so the fleet knows which
models it serves even after a restart with a different model. A probe that times out while the
worker's replies kept arriving (its `progress` moved) is reported slow, not failed; one that
times out with nothing arriving counts towards `unhealthy_after_timeouts`; a refused or reset
connection counts towards `unhealthy_after_failures` (fleet.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from backends.openai_upstream import UpstreamClient, UpstreamError, UpstreamTimeout
from config.gateway import HealthConfig
from gateway.fleet import FleetView, WorkerState

log = logging.getLogger(__name__)


def model_ids(listing: Any) -> list[str]:
    """Model ids from an OpenAI `/v1/models` reply; [] when it has none or a foreign shape."""
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        return []
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


class HealthProber:
    def __init__(self, fleet: FleetView, upstream: UpstreamClient, cfg: HealthConfig) -> None:
        self._fleet = fleet
        self._upstream = upstream
        self._cfg = cfg

    async def probe_all(self) -> None:
        await asyncio.gather(*(self._probe(w) for w in self._fleet.workers))

    async def run(self) -> None:
        """Probe forever (cancel to stop)."""
        while True:
            await asyncio.sleep(self._cfg.interval_s)
            await self.probe_all()

    async def _probe(self, worker: WorkerState) -> None:
        timeout_s = self._cfg.timeout_s
        progress = worker.progress
        try:
            await self._upstream.check(worker.url, "/health", timeout_s)
            models = None
            if not worker.healthy or not worker.models:
                models = model_ids(
                    await self._upstream.get_json(worker.url, "/v1/models", timeout_s)
                )
        except (UpstreamError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, UpstreamTimeout) and worker.healthy and worker.progress != progress:
                self._fleet.probe_slow(worker, reason)
            elif isinstance(exc, UpstreamTimeout):
                self._fleet.probe_timed_out(worker, reason)
            else:
                self._fleet.probe_failed(worker, reason)
            return
        self._fleet.probe_ok(worker, models)
