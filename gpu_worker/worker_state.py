"""Loop-side state of one worker: the pending requests and their output queues, the engine
thread, and the KV event hub. `WorkerState` is their single owner; every method runs on the event
loop. The app reaches it through `STATE_KEY`.
"""

from __future__ import annotations

import asyncio
import queue
import time

import msgspec
from aiohttp import web

from config.protocol import RequestError
from config.worker import WorkerConfig
from config.worker_wire import WorkerStats
from gpu_worker.engine_api import Engine, EngineRequest, RequestOutput
from gpu_worker.engine_thread import EngineThread
from gpu_worker.kv_events import KvEventHub

# What a request's output queue carries: engine outputs, or the error that ends the request.
Item = RequestOutput | RequestError


class WorkerState:
    """Loop-side state of one worker. Every method runs on the event loop."""

    def __init__(self, engine: Engine, cfg: WorkerConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.cfg = cfg
        self.created = int(time.time())
        self.tokenizer_name = str(
            getattr(engine.tokenizer, "name", type(engine.tokenizer).__name__)
        )
        self._pending: dict[str, asyncio.Queue[Item]] = {}
        self.closing = False
        self.kv_hub = KvEventHub(engine.held_hashes(), cfg.kv_subscriber_queue)
        # Each pending request puts at most one add and one abort in the inbox.
        self.engine_thread = EngineThread(
            engine,
            loop,
            self._deliver,
            self._fail_all,
            self._reject,
            max_commands=2 * cfg.max_pending_requests + 8,
        )

    @property
    def num_pending(self) -> int:
        return len(self._pending)

    def submit(self, request: EngineRequest) -> asyncio.Queue[Item]:
        """Hands a request to the engine; its outputs arrive on the returned queue until one
        has `finished`. The caller must `abort` it if it stops listening before that."""
        if self.closing or not self.engine_thread.alive:
            raise RequestError(503, "the worker is shutting down or its engine has failed")
        if len(self._pending) >= self.cfg.max_pending_requests:
            raise RequestError(
                503,
                f"the worker is at capacity ({self.cfg.max_pending_requests} requests pending);"
                " retry later or on another worker",
                code="worker_overloaded",
            )
        outputs: asyncio.Queue[Item] = asyncio.Queue()
        try:
            self.engine_thread.submit(request)
        except queue.Full as exc:
            raise RequestError(503, "the engine queue is full", code="worker_overloaded") from exc
        self._pending[request.request_id] = outputs
        return outputs

    def abort(self, request_id: str) -> None:
        if request_id in self._pending:
            self.engine_thread.abort(request_id)

    def stats(self) -> WorkerStats:
        stats = msgspec.structs.asdict(self.engine_thread.latest_stats)
        return WorkerStats(
            model=self.engine.model_id,
            tokenizer=self.tokenizer_name,
            system_prompt=getattr(self.engine.tokenizer, "default_system_prompt", None),
            pending_requests=len(self._pending),
            max_pending_requests=self.cfg.max_pending_requests,
            max_model_len=self.engine.max_model_len,
            max_prompt_tokens=self.engine.max_prompt_tokens,
            kv_seq=self.kv_hub.seq,
            **stats,
        )

    def _deliver(self, outputs: list[RequestOutput], stored: list[int], removed: list[int]) -> None:
        if stored or removed:
            self.kv_hub.publish(stored, removed)
        for out in outputs:
            pending = self._pending.get(out.request_id)
            if pending is None:
                continue
            pending.put_nowait(out)
            if out.finished:
                del self._pending[out.request_id]

    def _reject(self, request_id: str, exc: Exception) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            message = f"the engine refused the request: {type(exc).__name__}: {exc}"
            pending.put_nowait(RequestError(400, message, code="engine_refused"))

    def _fail_all(self, exc: BaseException | None = None) -> None:
        reason = "the worker is shutting down" if exc is None else "the engine failed"
        for pending in self._pending.values():
            pending.put_nowait(RequestError(503, reason, code="engine_unavailable"))
        self._pending.clear()

    async def close(self) -> None:
        self.closing = True
        self.kv_hub.close()
        await asyncio.to_thread(self.engine_thread.stop)
        self._fail_all()


STATE_KEY = web.AppKey("kvgate_worker", WorkerState)
