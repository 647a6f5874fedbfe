"""Follow each worker's `GET /kv_events` stream into its `EventPrefixIndex`.

One task per worker (`KvEventSubscriber.run`), on the gateway's one upstream client. Rules:
- The first event of a connection must be a snapshot; each later one must carry the next `seq`.
  A gap, a malformed event, an event over `max_event_bytes`, silence past
  `events_read_timeout_s` or the stream ending (worker restarted, died, cut us off for lagging)
  all end the connection: the worker's index is reset at once (its entries matter nothing until
  a fresh snapshot) and the task reconnects after a backoff that doubles from
  `reconnect_min_s` to `reconnect_max_s` and starts over once a connection that brought a
  snapshot lasted `reconnect_max_s` (a worker that cuts every stream right after its snapshot
  would otherwise have its snapshot fetched every `reconnect_min_s`).
- A 404 means the upstream publishes no events (any OpenAI-compatible server): the worker is
  routed on the gateway's own decisions instead (`WorkerCache.publishes_events = False`), and the
  stream is asked for again every `reconnect_max_s` in case a worker that has one takes its place.
Memory is bounded by `max_event_bytes` for the read buffer and `max_hashes_per_worker` per index.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from backends.openai_upstream import UpstreamClient, UpstreamError
from config.gateway import FleetViewConfig
from config.worker_wire import KvEventBatch
from gateway.worker_cache import WorkerCache

log = logging.getLogger(__name__)

PATH = "/kv_events"


class StreamBroken(Exception):
    """The connection's events cannot be trusted past this point; resync from a snapshot."""


def sse_data(event: bytes) -> bytes | None:
    """The `data:` payload of one SSE event (lines joined by newlines); None for a comment."""
    parts = [
        line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
    ]
    return b"\n".join(parts) if parts else None


class KvEventSubscriber:
    def __init__(self, cache: WorkerCache, upstream: UpstreamClient, cfg: FleetViewConfig) -> None:
        self._cache = cache
        self._upstream = upstream
        self._cfg = cfg
        self._decoder = msgspec.json.Decoder(KvEventBatch)
        self.connections = 0  # streams opened so far (for tests and logs)

    async def run(self) -> None:
        """Follow the stream forever (cancel to stop)."""
        worker = self._cache.worker
        delay_s = self._cfg.reconnect_min_s
        while True:
            synced = False
            started_s = time.monotonic()
            try:
                synced = await self._follow()
                reason = "stream ended"
            except (UpstreamError, StreamBroken) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if self._cache.events.synced or synced:
                log.info("KV events of %s lost (%s); resyncing", worker.worker_id, reason)
            self._cache.events_lost()
            if synced and time.monotonic() - started_s >= self._cfg.reconnect_max_s:
                delay_s = self._cfg.reconnect_min_s
            await asyncio.sleep(delay_s)
            delay_s = min(2 * delay_s, self._cfg.reconnect_max_s)

    async def _follow(self) -> bool:
        """One connection; returns whether a snapshot arrived before it ended."""
        url = self._cache.worker.url
        reply = await self._upstream.open_stream(url, PATH, self._cfg.events_read_timeout_s)
        synced = False
        try:
            if reply.status == 404:
                if self._cache.publishes_events:
                    log.info("%s publishes no KV events: routing on own decisions", url)
                self._cache.publishes_events = False
                return False
            if reply.status != 200:
                raise StreamBroken(f"{PATH} answered {reply.status}")
            self.connections += 1
            self._cache.publishes_events = True
            buf = bytearray()
            scan_from = 0
            while True:
                chunk = await reply.read_chunk()
                if not chunk:
                    return synced
                buf += chunk
                while (end := buf.find(b"\n\n", scan_from)) >= 0:
                    if end > self._cfg.max_event_bytes:  # whole in one read: still too big
                        raise StreamBroken(f"an event over {self._cfg.max_event_bytes} bytes")
                    data = sse_data(bytes(buf[:end]))
                    del buf[: end + 2]
                    scan_from = 0
                    if data is not None:
                        self._apply(data)
                        synced = True
                scan_from = max(len(buf) - 1, 0)
                if len(buf) > self._cfg.max_event_bytes:
                    raise StreamBroken(f"an event over {self._cfg.max_event_bytes} bytes")
        finally:
            reply.close()

    def _apply(self, data: bytes) -> None:
        try:
            batch = self._decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise StreamBroken(f"malformed event: {exc}") from exc
        if not self._cache.apply(batch):
            raise StreamBroken(f"sequence gap at seq {batch.seq}")
