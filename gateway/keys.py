"""Typed keys of the app-wide objects (one module, so handlers and the app factory share them)."""

from __future__ import annotations

from aiohttp import web

from backends.openai_upstream import UpstreamClient
from config.gateway import GatewayConfig
from gateway.auth import Authenticator
from gateway.fleet import FleetView
from gateway.health import HealthProber
from gateway.metrics import GatewayMetrics
from gateway.relay import Relay
from gateway.semantic_stage import SemanticStage
from gateway.worker_cache import FleetCache
from policies.routing import RoutingPolicy

CONFIG = web.AppKey("config", GatewayConfig)
METRICS = web.AppKey("metrics", GatewayMetrics)
FLEET = web.AppKey("fleet", FleetView)
AUTH = web.AppKey("auth", Authenticator)
ROUTER = web.AppKey("router", RoutingPolicy)
UPSTREAM = web.AppKey("upstream", UpstreamClient)
RELAY = web.AppKey("relay", Relay)
PROBER = web.AppKey("prober", HealthProber)
FLEET_CACHE = web.AppKey("fleet_cache", FleetCache)
SEMANTIC = web.AppKey("semantic", SemanticStage)  # present only when the cache is enabled
