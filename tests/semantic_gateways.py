"""Gateways with the semantic cache on, over one worker, made on demand by a test and stopped
after it (the semwire and verify suites' `make_gateway` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from config.gateway import GatewayConfig
from config.loader import build
from gateway.server import RunningGateway, start_gateway

MakeGateway = Callable[..., Awaitable[RunningGateway]]


@asynccontextmanager
async def gateway_factory(
    worker_url: str,
    st_model: object,
    clock: Callable[[], float],
    api_keys: dict[str, str],
    admin_key: str,
) -> AsyncIterator[MakeGateway]:
    """`make(semantic=None, **overrides)` starts a gateway on port 0 with those semantic-cache
    settings and gateway-config overrides; every gateway made is stopped on exit."""
    gateways: list[RunningGateway] = []

    async def make(semantic: dict[str, Any] | None = None, **overrides: Any) -> RunningGateway:
        cfg: dict[str, Any] = {
            "port": 0,
            "health": {"interval_s": 30.0, "timeout_s": 2.0},
            "api_keys": api_keys,
            "admin_keys": [admin_key],
            "semantic_cache": semantic or {},
        } | overrides
        gw = await start_gateway(
            build(cfg, GatewayConfig), [worker_url], semantic_model=st_model, clock=clock
        )
        gateways.append(gw)
        return gw

    try:
        yield make
    finally:
        for gw in gateways:
            await gw.stop()
