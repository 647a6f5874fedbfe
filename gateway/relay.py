"""Route a request to a worker and relay the worker's reply to the client as it arrives.

Rules:
- The request body goes upstream as the client sent it; streamed chunks come back byte for byte
  (no per-chunk decoding), so the gateway adds copies, not work.
- A worker that fails before the first byte of its reply body (refused, reset, died) is taken out
  of rotation and the request goes to another worker, up to `max_attempts` workers in all. Nothing
  has reached the client yet, so the retry is invisible to it.
- A worker that answers 503 or 429 (at capacity, shutting down, rate-limited) did not take the
  request: it goes to another worker the same way, without marking the busy one failed. When no
  other worker is left to try, the last busy answer is relayed (status, `Retry-After`, and its
  message in OpenAI's shape), so the client sees the fleet's own reason.
- A timeout is answered 504 and never retried (a slow fleet must not get more load).
- A failure after the first byte ends a streamed reply with an SSE error event and `[DONE]`; the
  client is never left hanging. So does a stream that ends without `[DONE]`: a cut-off answer
  must not look whole. A non-streamed reply that breaks off is answered 502.
- A non-streamed reply is held whole up to `max_reply_bytes` (502 beyond) and checked before it
  is relayed (gateway/reply_check.py): a 200 that is not a completion is answered 502 (and its
  worker leaves rotation until its next good probe); an error reply reaches the client in
  OpenAI's shape, with the worker's 5xx other than 503/504 answered 502.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

import msgspec
from aiohttp import HttpVersion11, web

from backends.openai_upstream import (
    PipedReply,
    ReplyTooLarge,
    UpstreamBusy,
    UpstreamClient,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from config.protocol import HEADER_DEADLINE_MS, error_body
from gateway.errors import (
    gateway_busy,
    gateway_shutting_down,
    no_healthy_worker,
    upstream_failed,
    upstream_timeout,
)
from gateway.fleet import FleetView, WorkerState
from gateway.metrics import GatewayMetrics
from gateway.reply_check import ReplyBroken, check_whole, error_reply
from gateway.reply_cut import ReplyCutter, ShutdownCut
from policies.routing import RequestView, RoutingPolicy

if TYPE_CHECKING:
    from gateway.dispatch import Dispatcher
    from gateway.tokenize_ahead import Ticket
    from gateway.worker_cache import FleetCache

log = logging.getLogger(__name__)

_SSE_DONE = b"data: [DONE]\n\n"
_BUSY = frozenset((429, 503))  # the worker turned the request away; another one may take it
_CLIENT_HIGH_WATER_BYTES = 256 * 1024  # a slow client's queued bytes before the worker waits
_DRAIN_POLL_S = 0.01
_TAIL_CHUNKS = 32  # last chunks of a stream kept (by reference) to find its `[DONE]`


class ReplyObserver(Protocol):
    """Sees a relayed reply (the semantic cache's tap); must never block or raise."""

    headers: dict[str, str]

    def feed(self, chunk: bytes) -> None: ...
    def finish_stream(self) -> None: ...
    def finish_whole(self, status: int, body: bytes) -> None: ...


class UpstreamCall(msgspec.Struct, frozen=True, kw_only=True):
    """One parsed, authenticated request, ready to be sent to a worker."""

    endpoint: str  # metrics label, e.g. "chat"
    path: str  # worker path, e.g. "/v1/chat/completions"
    body: bytes  # the client's body, forwarded unchanged
    headers: Mapping[str, str]
    model: str
    stream: bool
    view: RequestView
    observer: ReplyObserver | None = None
    arrival_s: float = 0.0  # monotonic clock, when the gateway got the request
    deadline_s: float | None = None  # monotonic clock, when its first token is due (dispatch)


def _with_budget(call: UpstreamCall) -> Mapping[str, str]:
    """The worker gets what is left of the deadline (time spent in the gateway subtracted)."""
    if call.deadline_s is None:
        return call.headers
    left_ms = max(1.0, 1000.0 * (call.deadline_s - time.monotonic()))
    return {**call.headers, HEADER_DEADLINE_MS: f"{left_ms:.0f}"}


class Opened:
    """A worker's reply whose first bytes are in, not yet relayed."""

    __slots__ = ("first", "first_in_s", "reply", "start_s", "ttft_s", "worker")

    def __init__(
        self, worker: WorkerState, reply: PipedReply, first: bytes, start_s: float, ttft_s: float
    ) -> None:
        self.worker = worker
        self.reply = reply
        self.first = first
        self.first_in_s = time.monotonic()  # when the first bytes were in
        self.start_s = start_s  # perf_counter when the request was first sent
        self.ttft_s = ttft_s


class Relay:
    def __init__(
        self,
        fleet: FleetView,
        router: RoutingPolicy,
        upstream: UpstreamClient,
        metrics: GatewayMetrics,
        max_attempts: int,
        read_timeout_s: float,
        dispatch: Dispatcher,
        cache: FleetCache | None = None,
        max_reply_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self._fleet = fleet
        self._dispatch = dispatch
        self._router = router
        self._upstream = upstream
        self._metrics = metrics
        self._max_attempts = max_attempts
        self._read_timeout_s = read_timeout_s
        self._max_reply_bytes = max_reply_bytes  # a whole reply held in memory, at most
        self._cache = cache  # the fleet's KV caches and load; None = in-flight counts only
        self.cutter = ReplyCutter()  # ends the replies still relayed when shutdown's grace ends

    def pick(
        self, call: UpstreamCall, exclude: set[str], ticket: Ticket | None = None
    ) -> WorkerState | None:
        """A worker for `call` among the healthy ones not in `exclude` with room (dispatch)."""
        candidates = self._dispatch.with_room(self._fleet.candidates(call.model, exclude))
        if not candidates:
            return None
        if self._cache is not None:
            return self._cache.pick(call, candidates, self._router, ticket=ticket)
        views = [w.view() for w in candidates]
        return candidates[self._router.select(call.view, views, time.monotonic())]

    async def forward(
        self,
        request: web.Request,
        call: UpstreamCall,
        opening: asyncio.Future[Opened] | None = None,
    ) -> web.StreamResponse:
        """Send `call` to a worker and relay its reply. `opening`: the `open(call)` already under
        way (the semantic stage starts it while it looks the request up)."""
        try:
            if opening is None:
                opened = await self.open(call)
            else:
                try:
                    opened = await opening
                except asyncio.CancelledError:
                    # The open may have finished in the same loop turn as the client left (the
                    # handler is cancelled before it resumes): its slot and reply are ours.
                    self.abandon(opening)
                    raise
            return await self.deliver(request, call, opened)
        except asyncio.CancelledError:
            # The client hung up (aiohttp cancels the handler); the reply was closed on the way.
            self._metrics.error("client_disconnected")
            raise

    def shutting_down(self, grace_s: float) -> None:
        """The gateway is stopping: requests waiting for a worker slot are answered 503 now; the
        replies being relayed get `grace_s` to finish, then are ended (gateway/reply_cut.py)."""
        self._dispatch.close()
        self.cutter.start(grace_s)

    def abandon(self, opening: asyncio.Future[Opened]) -> None:
        """Drop an `open` that is no longer wanted (the cache answered): a worker that has the
        request sees its connection closed and stops; its in-flight slot is given back."""
        if not opening.done():
            opening.cancel()  # open()'s own cleanup closes the reply and releases the worker
        elif not opening.cancelled() and opening.exception() is None:
            opened = opening.result()
            opened.reply.close()
            self._fleet.release(opened.worker)

    async def open(self, call: UpstreamCall) -> Opened:
        """Pick a worker, send it the request and wait for the first bytes of its reply, retrying
        on other workers as the module's rules say. The caller must `deliver` (or `abandon`) the
        result: the worker's in-flight slot and connection are held until then."""
        try:
            with self.cutter.guard():
                return await self._open(call)
        except BaseException:
            self._dispatch.wake(call.model)  # a slot handed to this request may be unused now
            raise

    async def _open(self, call: UpstreamCall) -> Opened:
        start = time.perf_counter()
        tried: set[str] = set()
        last_error = ""
        dispatch = self._dispatch
        dispatch.check(call.model, call.arrival_s, call.deadline_s)
        waited_s = 0.0  # in dispatch's queue: policy, not the gateway's own time
        if dispatch.must_wait(call.model):
            waited_s -= time.monotonic()
            await dispatch.wait_turn(call.model, call.arrival_s, call.deadline_s)
            waited_s += time.monotonic()
        ticket = None
        if self._cache is not None:
            # Long new chat turns are tokenized off the loop; picks keep arrival order.
            ticket = await self._cache.ready(call, self._fleet.candidates(call.model, tried))
        attempt = 0
        while attempt < self._max_attempts:
            try:
                worker = self.pick(call, tried, ticket)
            finally:
                if ticket is not None:
                    ticket.release()  # the next request may pick now
            if worker is None:
                if dispatch.must_wait(call.model, tried):  # healthy workers, all of them full
                    waited_s -= time.monotonic()
                    await dispatch.wait_turn(call.model, call.arrival_s, call.deadline_s, tried)
                    waited_s += time.monotonic()
                    continue
                break
            attempt += 1
            tried.add(worker.worker_id)
            self._fleet.acquire(worker)
            reply: PipedReply | None = None
            try:
                sent = time.perf_counter()
                headers = _with_budget(call)
                if attempt == 1:  # up to the send itself (a pooled connection's write)
                    own_s = time.monotonic() - call.arrival_s - waited_s
                    self._metrics.own_time.labels("to_worker").observe(own_s)
                reply = await self._upstream.open(worker.url, call.path, call.body, headers)
                if reply.status in _BUSY and self._can_retry(call, tried, attempt):
                    reply.close()
                    self._fleet.release(worker)
                    last_error = f"{worker.worker_id}: busy ({reply.status})"
                    self._metrics.error("upstream_busy")
                    self._metrics.retries.inc()
                    continue
                first = await reply.read_chunk()
                worker.progress += 1
                if reply.status == 200 and call.stream:  # a whole reply's first bytes are its end
                    dispatch.record_ttft(call.model, time.perf_counter() - sent)
            except UpstreamUnavailable as exc:
                self._fleet.release(worker)
                if reply is not None:
                    reply.close()
                last_error = f"{worker.worker_id}: {exc}"
                self._fleet.mark_failed(worker, str(exc))
                self._metrics.error("upstream_unavailable")
                self._metrics.retries.inc()
                continue
            except BaseException as exc:
                self._fleet.release(worker)
                if reply is not None:
                    reply.close()
                if isinstance(exc, UpstreamTimeout):
                    raise upstream_timeout(self._read_timeout_s) from exc
                if isinstance(exc, UpstreamBusy):
                    self._metrics.error("gateway_busy")
                    raise gateway_busy(str(exc)) from exc
                raise
            return Opened(worker, reply, first, start, time.perf_counter() - start)
        if last_error and self._fleet.candidates(call.model, tried):
            # Healthy workers remain but the attempts are spent: the fleet is failing, not gone.
            raise upstream_failed(f"no worker answered ({last_error})")
        raise no_healthy_worker(call.model, last_error)

    async def deliver(
        self, request: web.Request, call: UpstreamCall, opened: Opened
    ) -> web.StreamResponse:
        """Relay an opened reply to the client; always closes it and releases the worker."""
        worker, reply = opened.worker, opened.reply
        try:
            with self.cutter.watch(reply):
                if call.stream and reply.status == 200:
                    response = await self._stream(request, opened, call.observer)
                else:
                    response = await self._whole(worker, reply, opened.first, call.observer)
                    worker.progress += 1
        finally:
            reply.close()
            self._fleet.release(worker)
        elapsed_s = time.perf_counter() - opened.start_s
        self._metrics.observe(call.endpoint, response.status, elapsed_s, opened.ttft_s)
        return response

    def _can_retry(self, call: UpstreamCall, tried: set[str], attempts: int) -> bool:
        """Whether another worker may be tried after `attempts` sends."""
        return attempts < self._max_attempts and bool(self._fleet.candidates(call.model, tried))

    async def _whole(
        self,
        worker: WorkerState,
        reply: PipedReply,
        first: bytes,
        observer: ReplyObserver | None = None,
    ) -> web.Response:
        try:
            rest = await reply.read_all(self._max_reply_bytes - len(first))
        except ReplyTooLarge as exc:
            self._metrics.error("upstream_reply_too_large")
            raise upstream_failed(str(exc)) from exc
        except UpstreamTimeout as exc:
            raise upstream_timeout(self._read_timeout_s) from exc
        except UpstreamUnavailable as exc:
            raise upstream_failed(f"reply broke off: {exc}") from exc
        except ShutdownCut as exc:
            self._metrics.error("shutdown_cut")
            raise gateway_shutting_down() from exc
        body = first + rest if rest else first
        status = reply.status
        headers = {"Content-Type": reply.content_type}
        if status == 200:
            try:
                check_whole(body)
            except ReplyBroken as exc:
                # A worker that answers 200 with something else is broken, not busy: out of
                # rotation until its next good probe, like one whose stream breaks off.
                self._metrics.error("upstream_bad_reply")
                self._fleet.mark_failed(worker, str(exc))
                raise upstream_failed(str(exc)) from None
        else:
            status, body = error_reply(status, body)
            headers["Content-Type"] = "application/json"
        if reply.retry_after is not None:
            headers["Retry-After"] = reply.retry_after
        if observer is not None:
            headers.update(observer.headers)
            observer.finish_whole(status, body)
        return web.Response(status=status, body=body, headers=headers)

    async def _stream(
        self, request: web.Request, opened: Opened, observer: ReplyObserver | None = None
    ) -> web.StreamResponse:
        worker, reply, first = opened.worker, opened.reply, opened.first
        headers = {"Content-Type": reply.content_type, "Cache-Control": "no-cache"}
        if observer is not None:
            headers.update(observer.headers)
        response = web.StreamResponse(status=200, headers=headers)
        piped = request.version == HttpVersion11 and request.transport is not None
        if piped:
            response.enable_chunked_encoding()  # the framing `_pipe` writes itself
        tail: deque[bytes] = deque((first,), maxlen=_TAIL_CHUNKS)  # where `[DONE]` must be
        ending = b""  # what the gateway adds at the end: an error event and `[DONE]`
        try:
            # Inside the `try`: a client that left (or half-closed) before the first chunk came
            # fails the head's write; that is a hang-up, not a 500 (aiohttp then sees the reset).
            await response.prepare(request)
            await response.write(first)  # the headers leave with the first chunk
            own_s = time.monotonic() - opened.first_in_s
            self._metrics.own_time.labels("to_client").observe(own_s)
            if observer is not None:
                observer.feed(first)
            if piped:
                await _pipe(request, worker, reply, observer, self._read_timeout_s, tail)
            else:  # HTTP/1.0: no chunked framing, aiohttp's own writer per chunk
                while chunk := await reply.read_chunk():
                    worker.progress += 1
                    tail.append(chunk)
                    await response.write(chunk)
                    if observer is not None:
                        observer.feed(chunk)
            if not ends_with_done(tail):
                # The worker ended its stream cleanly but never said it was complete: a client
                # must not take a cut-off answer for a whole one.
                log.warning("stream from %s ended without [DONE]", worker.worker_id)
                self._metrics.error("mid_stream_no_done")
                message = "the worker's stream ended without [DONE]"
                ending = _error_event(message, "upstream_error")
            if observer is not None:
                observer.finish_stream()  # it stores nothing without the worker's own `[DONE]`
        except ConnectionError:
            # The client went away: closing the upstream reply (caller) tells the worker to stop.
            log.debug("client of a stream from %s disconnected", worker.worker_id)
            self._metrics.error("client_disconnected")
            return response
        except (UpstreamTimeout, UpstreamUnavailable) as exc:
            kind = "timeout" if isinstance(exc, UpstreamTimeout) else "upstream_error"
            log.warning("stream from %s broke off: %s", worker.worker_id, exc)
            self._metrics.error(f"mid_stream_{kind}")
            if isinstance(exc, UpstreamUnavailable):
                self._fleet.mark_failed(worker, f"stream broke off: {exc}")
            ending = _error_event(f"the worker's stream broke off ({kind})", kind)
        except ShutdownCut:
            self._metrics.error("shutdown_cut")
            message = (
                f"the gateway is shutting down: the stream was cut after {self.cutter.grace_s:g} s"
                " of grace; retry (another gateway, or this one restarted)"
            )
            ending = _error_event(message, "gateway_shutting_down", 503)
        try:
            if ending:
                if not b"".join(tail).endswith(b"\n\n"):
                    ending = b"\n\n" + ending  # end the worker's unfinished event first
                await response.write(ending)
            await response.write_eof()
        except ConnectionError:  # the client left meanwhile: nobody to tell
            self._metrics.error("client_disconnected")
        return response


def _error_event(message: str, code: str, status: int = 502) -> bytes:
    """An SSE error event in OpenAI's error shape, then `[DONE]`: how a stream fails."""
    event = error_body(status, message, code=code, type="server_error" if status == 502 else None)
    return b"data: " + event + b"\n\n" + _SSE_DONE


def ends_with_done(tail: Iterable[bytes]) -> bool:
    """Whether the stream whose last chunks are `tail` ends with a `data: [DONE]` event."""
    last = b"".join(tail).rstrip().rsplit(b"\n", 1)[-1]
    return last.strip() in (b"data: [DONE]", b"data:[DONE]")


async def _pipe(
    request: web.Request,
    worker: WorkerState,
    reply: PipedReply,
    observer: ReplyObserver | None,
    stuck_after_s: float,
    tail: deque[bytes],
) -> None:
    """Relay the rest of a streamed reply with no task in between: each chunk is written to the
    client's socket, in HTTP/1.1 chunked framing, from the worker socket's own callback.

    Rules: the response was prepared with chunked encoding and has written its headers (aiohttp's
    own `write_eof` adds the last chunk). A client that reads slower than the worker writes gets
    at most `_CLIENT_HIGH_WATER_BYTES` queued: the worker's socket is then not read until the
    client's buffer drains (checked every `_DRAIN_POLL_S`; aiohttp has no public drain signal).
    A client that reads nothing for `stuck_after_s` is dropped, which ends the relay."""
    transport = request.transport
    assert transport is not None
    loop = asyncio.get_running_loop()
    draining: asyncio.Task[None] | None = None

    async def drain() -> None:
        give_up_s = loop.time() + stuck_after_s
        queued = transport.get_write_buffer_size()
        while queued > _CLIENT_HIGH_WATER_BYTES // 4:
            if transport.is_closing():
                break
            await asyncio.sleep(_DRAIN_POLL_S)
            now, before, queued = loop.time(), queued, transport.get_write_buffer_size()
            if queued < before:
                give_up_s = now + stuck_after_s  # it reads, if slowly
            elif now > give_up_s:
                log.warning(
                    "client of a stream from %s read nothing for %.0f s: dropped",
                    worker.worker_id,
                    stuck_after_s,
                )
                transport.close()
                break
        reply.resume()  # a closed client: the next chunk's write ends the relay

    def sink(chunk: bytes) -> None:
        nonlocal draining
        if transport.is_closing():
            raise ConnectionResetError("the client closed its connection")
        transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        tail.append(chunk)
        worker.progress += 1
        if observer is not None:
            observer.feed(chunk)
        if transport.get_write_buffer_size() > _CLIENT_HIGH_WATER_BYTES and (
            draining is None or draining.done()
        ):
            reply.pause()
            draining = loop.create_task(drain())

    try:
        await reply.pipe(sink)
    finally:
        if draining is not None and not draining.done():
            draining.cancel()
