"""The gateway's aiohttp app: every shared object lives under a typed `AppKey`; the upstream
client and the health prober start and stop with the app (`cleanup_ctx`). No module state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial

from aiohttp import web

from backends.openai_upstream import UpstreamClient
from config.gateway import GatewayConfig
from gateway import admin, handlers
from gateway.auth import Authenticator
from gateway.dispatch import Dispatcher
from gateway.errors import error_middleware
from gateway.fleet import FleetView
from gateway.health import HealthProber
from gateway.keys import (
    AUTH,
    CONFIG,
    FLEET,
    FLEET_CACHE,
    METRICS,
    PROBER,
    RELAY,
    ROUTER,
    SEMANTIC,
    UPSTREAM,
)
from gateway.kv_events import KvEventSubscriber
from gateway.metrics import GatewayMetrics
from gateway.relay import Relay
from gateway.semantic.cache import build_semantic_cache
from gateway.semantic_stage import CacheCollector, SemanticStage
from gateway.stats_poller import StatsPoller
from gateway.tokenize_ahead import TokenizeCollector
from gateway.worker_cache import FleetCache
from policies.routing import build_routing


def create_app(
    cfg: GatewayConfig,
    worker_urls: Sequence[str],
    *,
    semantic_model: object | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The app for `cfg` over the workers at `worker_urls` (base URLs, no `/v1`).

    `semantic_model` reuses a loaded embedding model (tests); `clock` drives the cache's TTLs.
    """
    metrics = GatewayMetrics()
    app = web.Application(
        middlewares=[error_middleware(metrics.rejected)], client_max_size=cfg.max_body_bytes
    )
    app[CONFIG] = cfg
    app[METRICS] = metrics
    app[FLEET] = FleetView(
        worker_urls,
        metrics,
        cfg.health.unhealthy_after_failures,
        cfg.health.unhealthy_after_timeouts,
    )
    app[AUTH] = Authenticator(cfg.api_keys)
    app[ROUTER] = build_routing(cfg.routing)
    app[FLEET_CACHE] = FleetCache(
        app[FLEET],
        cfg.fleet_view,
        app[ROUTER].reads_matched_blocks,
        needs_tokens=cfg.semantic_cache.enabled,  # a hit's usage and context check (handlers)
    )
    metrics.registry.register(TokenizeCollector(app[FLEET_CACHE].ahead))
    app.cleanup_ctx.append(_upstream_ctx)
    app.on_shutdown.append(_shutting_down)
    if cfg.semantic_cache.enabled:
        app.cleanup_ctx.append(partial(_semantic_ctx, model=semantic_model, clock=clock))
    app.router.add_post("/v1/chat/completions", handlers.chat_completions)
    app.router.add_post("/v1/completions", handlers.completions)
    app.router.add_get("/v1/models", handlers.models)
    app.router.add_get("/v1/models/{model:.+}", handlers.model)  # ids may hold "/"
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/admin/semantic-cache", admin.cache_stats)
    app.router.add_post("/admin/semantic-cache/clear", admin.cache_clear)
    return app


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    upstream = UpstreamClient(cfg.upstream)
    app[UPSTREAM] = upstream
    app[RELAY] = Relay(
        app[FLEET],
        app[ROUTER],
        upstream,
        app[METRICS],
        cfg.upstream.max_attempts,
        cfg.upstream.read_timeout_s,
        max_reply_bytes=cfg.upstream.max_reply_bytes,
        dispatch=Dispatcher(cfg.dispatch, app[FLEET], app[METRICS]),
        cache=app[FLEET_CACHE],
    )
    prober = HealthProber(app[FLEET], upstream, cfg.health)
    app[PROBER] = prober
    # One round before serving, so the first request already sees the healthy workers.
    await prober.probe_all()
    tasks = [asyncio.create_task(prober.run(), name="kvgate-health")]
    tasks += await _start_fleet_view(app[FLEET_CACHE], upstream)
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    app[RELAY].cutter.close()
    await upstream.aclose()
    app[FLEET_CACHE].close()


async def _shutting_down(app: web.Application) -> None:
    """Runs once the gateway stopped listening, before aiohttp waits (`shutdown_timeout_s`) for
    the replies in progress: requests that wait for a worker slot are answered now rather than
    kept waiting for those replies to end."""
    relay = app.get(RELAY)  # absent when the app's start-up failed before making it
    if relay is not None:
        relay.shutting_down(app[CONFIG].shutdown_timeout_s)


async def _start_fleet_view(
    cache: FleetCache, upstream: UpstreamClient
) -> list[asyncio.Task[None]]:
    """Stats polling and one KV event subscriber per worker (gateway/worker_cache.py)."""
    poller = StatsPoller(cache, upstream, cache.cfg)
    await poller.poll_all()  # the first request already sees load and tokenizer profiles
    tasks = [asyncio.create_task(poller.run(), name="kvgate-stats")]
    for worker_id, worker in cache.workers.items():
        sub = KvEventSubscriber(worker, upstream, cache.cfg)
        tasks.append(asyncio.create_task(sub.run(), name=f"kvgate-kv-events-{worker_id}"))
    return tasks


async def _semantic_ctx(
    app: web.Application, *, model: object | None, clock: Callable[[], float]
) -> AsyncIterator[None]:
    cfg = app[CONFIG].semantic_cache
    # Loading the model takes seconds: off the loop, once, before serving.
    cache = await asyncio.to_thread(build_semantic_cache, cfg, clock, model)
    await cache.start()
    stage = SemanticStage(cache)
    app[SEMANTIC] = stage
    collector = CacheCollector(cache)
    app[METRICS].registry.register(collector)
    yield
    await stage.drain()
    app[METRICS].registry.unregister(collector)
    await cache.close()
