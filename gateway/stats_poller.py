"""Poll every worker's `GET /stats` into its `WorkerCache` every `stats_interval_s`.

A 404 (an upstream without `/stats`) clears the worker's stats: it is then routed on the
gateway's own in-flight count and approximate hashes. Any other failure keeps the last figures:
a worker that is really down leaves rotation through the health prober, not here. The first
poll of a worker on a new tokenizer also builds that tokenizer (off the event loop).
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from backends.openai_upstream import UpstreamClient, UpstreamError, UpstreamStatusError
from config.gateway import FleetViewConfig
from config.worker_wire import WorkerStats
from gateway.worker_cache import FleetCache, WorkerCache

log = logging.getLogger(__name__)


class StatsPoller:
    def __init__(self, fleet: FleetCache, upstream: UpstreamClient, cfg: FleetViewConfig) -> None:
        self._fleet = fleet
        self._upstream = upstream
        self._cfg = cfg

    async def poll_all(self) -> None:
        await asyncio.gather(*(self._poll(c) for c in self._fleet.workers.values()))

    async def run(self) -> None:
        """Poll forever (cancel to stop). Each worker on its own clock: a worker slow to answer
        (up to the poll's timeout) must not hold back the figures of the others."""
        await asyncio.gather(*(self._run_one(c) for c in self._fleet.workers.values()))

    async def _run_one(self, cache: WorkerCache) -> None:
        while True:
            await asyncio.sleep(self._cfg.stats_interval_s)
            await self._poll(cache)

    async def _poll(self, cache: WorkerCache) -> None:
        url = cache.worker.url
        try:
            raw = await self._upstream.get_json(url, "/stats", self._cfg.stats_interval_s + 1.0)
            stats = msgspec.convert(raw, WorkerStats)
        except UpstreamStatusError as exc:
            if exc.status == 404 and cache.stats is not None:
                cache.set_stats(None)
            return
        except (UpstreamError, ValueError, msgspec.ValidationError) as exc:
            log.debug("stats of %s: %s", cache.worker.worker_id, exc)
            return
        cache.set_stats(stats)
        # A new tokenizer profile (first poll, or a worker restarted on another model) is built
        # off the loop here, so routing never waits for it (gateway/worker_cache.py).
        await self._fleet.prepare(cache.profile)
