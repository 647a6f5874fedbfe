"""The one pooled HTTP client for OpenAI-compatible workers (ours, vLLM, anything alike).

One `UpstreamClient` per gateway, shared by every request, so connections are kept alive and
reused. Requests (`open`) go through `WorkerPool` (worker_conn.py): a streamed reply's chunks go
from the socket to the relay's callback with no task wake-up per chunk, which is most of the
gateway's CPU per request. Probes, `/stats` and long-lived event streams use aiohttp's client
(rather than httpx: aiohttp costs ~4x less CPU per streamed chunk, docs/architecture.md).

Failures come out as the three exception types of upstream_errors.py, so callers never see a
library's own. Rule for callers: `close()` every reply `open()` returns (a reply read to its end
goes back to the pool; one closed early drops its connection, which tells the worker to stop
generating).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from backends.upstream_errors import (
    ReplyTooLarge,
    UpstreamBusy,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from backends.worker_conn import PipedReply, WorkerPool
from config.gateway import UpstreamConfig

__all__ = [
    "PipedReply",
    "ReplyTooLarge",
    "StreamReply",
    "UpstreamBusy",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


def _classify(exc: BaseException) -> UpstreamError:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamUnavailable(f"connect timeout: {exc}")
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(str(exc) or "read timeout")
    return UpstreamUnavailable(f"{type(exc).__name__}: {exc}")


_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
# Longest `/health`, `/v1/models` or `/stats` reply read: far more than a real one needs.
_MAX_GET_BYTES = 4 * 1024 * 1024


class StreamReply:
    """A long-lived GET stream (e.g. `/kv_events`) whose headers are in; read chunk by chunk."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def retry_after(self) -> str | None:
        return self._response.headers.get("Retry-After")

    @property
    def content_type(self) -> str:
        return self._response.headers.get("Content-Type", "application/json")

    async def read_chunk(self) -> bytes:
        """The next bytes of the body as they arrive; b"" at its end."""
        try:
            return await self._response.content.readany()
        except _ERRORS as exc:
            raise _classify(exc) from exc

    def close(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class UpstreamClient:
    """Make inside a running event loop (both pools bind to the loop)."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=cfg.connect_timeout_s, sock_read=cfg.read_timeout_s
        )
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=cfg.max_connections, keepalive_timeout=cfg.keepalive_timeout_s
            ),
            timeout=self._timeout,
            # Workers are local or on a private network: no proxies from the environment, and
            # no cookies or auto-decompression work on the hot path.
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )
        self._pool = WorkerPool(
            cfg.connect_timeout_s, cfg.read_timeout_s, cfg.max_connections, cfg.keepalive_timeout_s
        )

    async def aclose(self) -> None:
        self._pool.close()
        await self._session.close()

    async def open(
        self, base_url: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> PipedReply:
        """POST `body` as is; returns once the reply's headers are in (its body is not read)."""
        return await self._pool.post(base_url, path, body, headers)

    async def open_stream(self, base_url: str, path: str, read_timeout_s: float) -> StreamReply:
        """GET a long-lived stream (e.g. `/kv_events`); any status comes back, the caller checks
        it. `read_timeout_s` is the longest silence allowed between two chunks."""
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._timeout.connect, sock_read=read_timeout_s
        )
        try:
            response = await self._session.get(base_url + path, timeout=timeout)
        except _ERRORS as exc:
            raise _classify(exc) from exc
        return StreamReply(response)

    async def check(self, base_url: str, path: str, timeout_s: float) -> None:
        """GET `path`; raises unless it answers 2xx (a health probe; the body is ignored)."""
        await self._get(base_url, path, timeout_s)

    async def get_json(self, base_url: str, path: str, timeout_s: float) -> Any:
        return orjson.loads(await self._get(base_url, path, timeout_s))

    async def _get(self, base_url: str, path: str, timeout_s: float) -> bytes:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._session.get(base_url + path, timeout=timeout) as response:
                if not 200 <= response.status < 300:
                    raise UpstreamStatusError(f"{path} answered {response.status}", response.status)
                return await _read_bounded(response, path)
        except _ERRORS as exc:
            raise _classify(exc) from exc


async def _read_bounded(response: aiohttp.ClientResponse, path: str) -> bytes:
    """The body of a small GET reply; `UpstreamUnavailable` past `_MAX_GET_BYTES` (a worker that
    sends more is broken, and `read()` would hold all it sent until the timeout: ~1 GB in 0.5 s
    on a loopback)."""
    if (response.content_length or 0) > _MAX_GET_BYTES:
        raise UpstreamUnavailable(f"{path}: a reply of {response.content_length} bytes")
    parts: list[bytes] = []
    size = 0
    async for piece in response.content.iter_any():
        size += len(piece)
        if size > _MAX_GET_BYTES:
            raise UpstreamUnavailable(f"{path}: a reply over {_MAX_GET_BYTES} bytes")
        parts.append(piece)
    return b"".join(parts)
