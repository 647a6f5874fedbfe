"""The end of the shutdown grace period for the requests still in progress.

On shutdown, requests in progress get `shutdown_timeout_s` to finish. aiohttp then closes their
connections, which leaves a client with no answer, or a stream that just stops: nothing says
why. So the gateway ends them itself when the grace period is over (aiohttp's own cut comes
later, gateway/server.py): a reply being relayed fails with `ShutdownCut`, and the relay ends a
stream with an error event (503 `gateway_shutting_down`) and `data: [DONE]`, or answers a whole
reply 503 (gateway/relay.py); a request still waiting (semantic lookup, dispatch, tokenizing,
its worker's first bytes) is cancelled there and answered 503 `gateway_shutting_down` with
`Retry-After: 1`. Either way its worker connection is closed, so the worker stops.

Rules: `watch` a reply for as long as it is relayed (the relay's `deliver`), and `guard` a wait
that writes nothing to the client (a cancellation there must be as safe as a client's hang-up;
the two never nest); `start` once, when the gateway begins to shut down; `close` when the app
stops. Event loop only.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from backends.openai_upstream import PipedReply
from gateway.errors import gateway_shutting_down

log = logging.getLogger(__name__)


class ShutdownCut(Exception):
    """A reply was still being relayed when the shutdown grace period ended."""


class ReplyCutter:
    def __init__(self) -> None:
        # Both bounded by the connections the gateway serves.
        self._live: set[PipedReply] = set()
        self._waiting: set[asyncio.Task[object]] = set()
        self._cancelled: set[asyncio.Task[object]] = set()  # cancelled by the cut, not a client
        self._timer: asyncio.TimerHandle | None = None
        self.grace_s = 0.0
        self.cut = False  # the grace period is over

    def watch(self, reply: PipedReply) -> _Watch:
        """`with cutter.watch(reply):` cut `reply` at the end of the grace period while the
        block runs (at once when that is over already)."""
        return _Watch(self, reply)

    def guard(self) -> _Guard:
        """`with cutter.guard():` raise 503 `gateway_shutting_down` (`ApiError`) if the grace
        period ends while the block runs (at once when it is over already)."""
        return _Guard(self)

    def start(self, grace_s: float) -> None:
        """The gateway is shutting down: cut what is still relayed `grace_s` from now."""
        if self._timer is None and not self.cut:
            self.grace_s = grace_s
            self._timer = asyncio.get_running_loop().call_later(grace_s, self._cut)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _cut(self) -> None:
        self._timer = None
        self.cut = True
        count = len(self._live) + len(self._waiting)
        if count:
            log.warning(
                "shutdown: %d requests still in progress after %g s: cut", count, self.grace_s
            )
        for reply in list(self._live):
            reply.fail(ShutdownCut())
        for task in list(self._waiting):
            self._cancelled.add(task)
            task.cancel()


# Context managers as small classes, not @contextmanager generators: they run for every request
# (medians on the loaded 2-core dev box: the pair ~4 µs a request, generators ~9 µs).


class _Watch:
    __slots__ = ("_cutter", "_reply")

    def __init__(self, cutter: ReplyCutter, reply: PipedReply) -> None:
        self._cutter = cutter
        self._reply = reply

    def __enter__(self) -> None:
        self._cutter._live.add(self._reply)  # noqa: SLF001 - the cutter's own helper
        if self._cutter.cut:
            self._reply.fail(ShutdownCut())

    def __exit__(self, *exc: object) -> None:
        self._cutter._live.discard(self._reply)  # noqa: SLF001


class _Guard:
    __slots__ = ("_cutter", "_task")

    def __init__(self, cutter: ReplyCutter) -> None:
        self._cutter = cutter
        self._task: asyncio.Task[object] | None = None

    def __enter__(self) -> None:
        if self._cutter.cut:
            raise gateway_shutting_down()
        self._task = asyncio.current_task()
        self._cutter._waiting.add(self._task)  # noqa: SLF001 - the cutter's own helper

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        cutter, task = self._cutter, self._task
        assert task is not None
        cutter._waiting.discard(task)  # noqa: SLF001
        if task not in cutter._cancelled:  # noqa: SLF001
            return  # ended normally, failed, or cancelled by the client's hang-up: as it is
        cutter._cancelled.discard(task)  # noqa: SLF001
        if kind is not None and issubclass(kind, asyncio.CancelledError):
            task.uncancel()  # the cut's own cancellation, answered instead
            raise gateway_shutting_down() from None
