"""The gateway's own settings (the `gateway:` section of kvgate.yaml).

Every duration is in seconds and every size in bytes, as the names say. `api_keys` maps a key to
the tenant it stands for; when it is empty the gateway is open and every request belongs to the
tenant "" (anonymous). Keys are secrets: set them through the environment
(`KVGATE__GATEWAY__API_KEYS='{sk-abc: team-a}'`) rather than committing them to YAML.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from config.base import Frozen
from config.routing import DEFAULT_ROUTING, RoutingConfig
from config.semantic import SemanticCacheConfig

# Finite (an infinite timeout raised inside aiohttp at start-up); 1e9 s is 31 years.
PositiveS = Annotated[float, msgspec.Meta(gt=0, le=1e9)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]  # 0 = any free port


class UpstreamConfig(Frozen):
    """The one pooled HTTP client the gateway uses to reach its workers."""

    connect_timeout_s: PositiveS = 2.0
    # Longest silence between two bytes of a worker's reply (not the whole reply): a streamed
    # answer may take minutes, but a worker that says nothing for this long is treated as hung.
    read_timeout_s: PositiveS = 60.0
    max_connections: PositiveInt = 512
    keepalive_timeout_s: PositiveS = 30.0  # an idle pooled connection is closed after this
    # Tries on *different* workers when one fails before its first byte (connection refused,
    # reset before any reply). A timeout is never retried: a slow fleet must not get more load.
    max_attempts: PositiveInt = 2
    # A non-streamed reply longer than this is answered 502 rather than held in memory whole
    # (a streamed one is relayed as it comes and never held).
    max_reply_bytes: PositiveInt = 32 * 1024 * 1024


class HealthConfig(Frozen):
    """Active health checks: each worker's `/health` is probed every `interval_s`."""

    interval_s: PositiveS = 2.0
    timeout_s: PositiveS = 1.0
    # A worker is taken out after this many failed probes in a row (a failed request takes it
    # out at once) and put back on its first good probe.
    unhealthy_after_failures: PositiveInt = 1
    # Probes in a row that *time out*, with nothing arriving from the worker meanwhile, before it
    # leaves rotation. A timeout is weak evidence: a worker whose loop is busy for a second (a
    # long prefill, a saturated box) is slow, not gone, and taking a fleet's only worker out for
    # it turns slowness into 503s for everyone. A refused or reset probe is strong evidence and
    # counts under `unhealthy_after_failures`.
    unhealthy_after_timeouts: PositiveInt = 3


class FleetViewConfig(Frozen):
    """What the gateway keeps of each worker for routing: its load and its prefix-block hashes.

    Load comes from the worker's `/stats` every `stats_interval_s` (the gateway's own in-flight
    count fills the gaps between polls). Block hashes come from its `/kv_events` stream; a
    worker without one (any OpenAI-compatible server) gets a view built from the gateway's own
    routing decisions, at most `routed_max_hashes` hashes per worker, each forgotten after
    `routed_ttl_s` without a request.
    """

    stats_interval_s: PositiveS = 0.5
    # Silence on the event stream longer than this ends it (the worker pings every 5 s).
    events_read_timeout_s: PositiveS = 15.0
    # Waits before reconnecting a lost stream: doubling from min to max, reset by a connection
    # that brought a snapshot and lasted `reconnect_max_s`.
    reconnect_min_s: PositiveS = 0.05
    reconnect_max_s: PositiveS = 5.0
    max_event_bytes: PositiveInt = 64 * 1024 * 1024  # one snapshot of a large cache fits
    max_hashes_per_worker: PositiveInt = 4_000_000
    routed_max_hashes: PositiveInt = 200_000
    routed_ttl_s: PositiveS = 600.0
    # Long new chat turns are tokenized in a thread (gateway/tokenize_ahead.py): those with more
    # new characters than this (measured: benchmarks/request_hashing.py --cutoff) ...
    tokenize_inline_max_chars: Annotated[int, msgspec.Meta(ge=0)] = 4000
    # ... and at most this many requests wait for their turn to route; beyond it a request is
    # routed at once, without prefix information when its new turns are long.
    tokenize_queue_max: PositiveInt = 256


class DispatchConfig(Frozen):
    """Deadline-aware admission (gateway/dispatch.py).

    With `max_in_flight_per_worker` > 0 the gateway sends a worker at most that many requests at
    once; the rest wait in the gateway, earliest deadline first, and a request whose deadline
    (`x-kvgate-deadline-ms`: its first token within that many ms of arrival) can no longer be
    met is refused with 504 at once. 0 = no gateway-side bound: requests go straight to routing
    and each worker's own bound (`max_pending_requests`, answered 503) is the limit.
    """

    max_in_flight_per_worker: NonNegativeInt = 0
    max_waiting: PositiveInt = 4096  # beyond it: 503 `gateway_queue_full` with Retry-After
    # A request without a deadline is ordered as if its first token were due this long after
    # arrival (so it is not starved by a stream of deadlines); it is never refused for lateness.
    no_deadline_ms: PositiveS = 30_000.0
    max_deadline_ms: PositiveS = 86_400_000.0  # larger header values are a client error (400)


class GatewayConfig(Frozen):
    host: str = "127.0.0.1"
    port: Port = 8000
    max_body_bytes: PositiveInt = 1_048_576
    # A client that has not sent its whole request body this long after its headers is answered
    # 408 and its connection closed: a stalled or trickling upload (or a Content-Length longer
    # than what is sent) must not hold a handler and its buffer for ever.
    body_read_timeout_s: PositiveS = 30.0
    api_keys: dict[str, str] = msgspec.field(default_factory=dict)
    routing: RoutingConfig = DEFAULT_ROUTING
    upstream: UpstreamConfig = UpstreamConfig()
    health: HealthConfig = HealthConfig()
    fleet_view: FleetViewConfig = FleetViewConfig()
    dispatch: DispatchConfig = DispatchConfig()
    # The semantic cache (on by default; `semantic_cache: {enabled: false}` turns it off and
    # skips loading the embedding model).
    semantic_cache: SemanticCacheConfig = msgspec.field(default_factory=SemanticCacheConfig)
    # Keys for the /admin endpoints (secrets: set them through the environment). With none
    # configured the admin endpoints answer 404: they do not exist on that gateway.
    admin_keys: tuple[str, ...] = ()
    # On shutdown, replies in progress get this long to finish; then their connections (and the
    # workers' with them) are closed. Requests still waiting for a worker slot are answered 503
    # `gateway_shutting_down` at once. Under Kubernetes' default 30 s grace period, so the
    # gateway ends its streams itself before it is killed.
    shutdown_timeout_s: PositiveS = 20.0
