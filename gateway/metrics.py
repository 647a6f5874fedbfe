"""Prometheus metrics of one gateway; each app owns its own registry (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Buckets from 1 ms to 2 min: TTFT of a cached hit and the total time of a long reply both fit.
LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)


# The gateway's own share of a request's latency: tens of microseconds to a few milliseconds.
OWN_TIME_BUCKETS_S = (
    25e-6,
    50e-6,
    100e-6,
    200e-6,
    400e-6,
    800e-6,
    1.6e-3,
    3.2e-3,
    6.4e-3,
    12.8e-3,
    25.6e-3,
    0.1,
)


# Path -> `endpoint` label; every other path is "other" (labels stay few, whatever clients send).
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/models": "models",
}


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "kvgate_requests", "Requests answered", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "kvgate_request_duration_seconds",
            "Time from request to the last byte of the reply",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.ttft = Histogram(
            "kvgate_time_to_first_token_seconds",
            "Time from request to the first byte of the worker's reply body",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.in_flight = Gauge(
            "kvgate_worker_in_flight",
            "Requests sent to a worker and not finished",
            ["worker"],
            registry=r,
        )
        self.sent = Counter(
            "kvgate_worker_requests",
            "Requests sent to a worker (retries included)",
            ["worker"],
            registry=r,
        )
        self.healthy = Gauge(
            "kvgate_worker_healthy", "1 while the worker is in rotation", ["worker"], registry=r
        )
        self.errors = Counter(
            "kvgate_errors", "Error replies and failures by kind", ["kind"], registry=r
        )
        self.retries = Counter(
            "kvgate_upstream_retries",
            "Worker attempts that failed before the first byte",
            registry=r,
        )

        self.own_time = Histogram(
            "kvgate_gateway_own_seconds",
            "The gateway's own time on a request's path to its first token: `to_worker` from "
            "arrival until the request is written to a worker (dispatch waits and retried "
            "attempts left out), `to_client` from a stream's first chunk in to its write out",
            ["phase"],
            buckets=OWN_TIME_BUCKETS_S,
            registry=r,
        )
        self.dispatch_waiting = Gauge(
            "kvgate_dispatch_waiting",
            "Requests waiting in the gateway for a worker slot (gateway/dispatch.py)",
            registry=r,
        )
        self.dispatch_wait = Histogram(
            "kvgate_dispatch_wait_seconds",
            "Time a request waited in the gateway for a worker slot",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def rejected(self, path: str, status: int, code: str) -> None:
        """An error reply (the error middleware's hook)."""
        self.errors.labels(code).inc()
        self.requests.labels(ENDPOINTS.get(path, "other"), str(status)).inc()

    def observe(self, endpoint: str, status: int, total_s: float, ttft_s: float | None) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(total_s)
        if ttft_s is not None:
            self.ttft.labels(endpoint).observe(ttft_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
