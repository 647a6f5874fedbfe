"""The one thread that drives an engine. The engine is synchronous and single-threaded: only this
thread calls it once `start()` has run.

Crossing in: `submit`/`abort` put commands on a bounded thread-safe queue (callable from the
event loop; they never block). Crossing out: after each step the thread hands the step's outputs
and KV events to the event loop in ONE `call_soon_threadsafe` callback, KV events first, so a
subscriber learns of stored blocks no later than the client learns its request finished.
`latest_stats` is refreshed before that hand-off, so what the loop reads is never older than
the outputs it has seen.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import NamedTuple

from gpu_worker.engine_api import Engine, EngineRequest, EngineStats, RequestOutput

log = logging.getLogger(__name__)

Deliver = Callable[[list[RequestOutput], list[int], list[int]], None]


class _Add(NamedTuple):
    request: EngineRequest


class _Abort(NamedTuple):
    request_id: str


class _Wake(NamedTuple):
    pass


_Command = _Add | _Abort | _Wake


class EngineThread:
    def __init__(
        self,
        engine: Engine,
        loop: asyncio.AbstractEventLoop,
        deliver: Deliver,
        on_fatal: Callable[[BaseException], None],
        reject: Callable[[str, Exception], None],
        max_commands: int,
    ) -> None:
        self._engine = engine
        self._loop = loop
        self._deliver = deliver
        self._on_fatal = on_fatal
        self._reject = reject
        self._inbox: queue.Queue[_Command] = queue.Queue(maxsize=max_commands)
        self._stopping = threading.Event()
        self.latest_stats: EngineStats = engine.stats()
        self.failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping.is_set()

    def submit(self, request: EngineRequest) -> None:
        """Raises `queue.Full` when the inbox is full (the server bounds requests before this)."""
        self._inbox.put_nowait(_Add(request))

    def abort(self, request_id: str) -> None:
        try:
            self._inbox.put_nowait(_Abort(request_id))
        except queue.Full:  # cannot happen while the server caps pending requests; log if it does
            log.error("engine inbox full; abort of %s dropped", request_id)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Blocking: ends the thread after its current step and joins it."""
        self._stopping.set()
        try:
            self._inbox.put_nowait(_Wake())
        except queue.Full:
            pass  # a full inbox means the thread is not blocked waiting on it
        self._thread.join(timeout_s)

    def _run(self) -> None:
        engine = self._engine
        try:
            while not self._stopping.is_set():
                commands: list[_Command] = []
                if not engine.has_work():
                    commands.append(self._inbox.get())
                while True:
                    try:
                        commands.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
                for command in commands:
                    if isinstance(command, _Add):
                        self._add(command.request)
                    elif isinstance(command, _Abort):
                        engine.abort(command.request_id)
                if self._stopping.is_set():
                    return
                outputs = engine.step() if engine.has_work() else []
                self.latest_stats = engine.stats()
                stored, removed = engine.drain_kv_events()
                if outputs or stored or removed:
                    self._call_loop(self._deliver, outputs, stored, removed)
        except BaseException as exc:  # the engine is broken: fail every request, go unhealthy
            log.exception("engine thread failed")
            self.failed = exc
            self._stopping.set()
            self._call_loop(self._on_fatal, exc)

    def _add(self, request: EngineRequest) -> None:
        # An engine that refuses one request (it raised before taking it) stays usable: only
        # that request fails. Anything raised by step() is fatal (state may be inconsistent).
        try:
            self._engine.add_request(request)
        except Exception as exc:
            log.exception("engine refused request %s", request.request_id)
            self._call_loop(self._reject, request.request_id, exc)

    def _call_loop(self, fn: Callable[..., None], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            log.warning("event loop closed; engine results dropped")
