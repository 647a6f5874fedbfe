"""The worker's HTTP server (aiohttp): OpenAI endpoints over any `Engine`, plus `/health`,
`/stats`, `/v1/models` and the `/kv_events` stream. See docs/worker.md for the API.

Threads: the event loop owns all I/O and the per-request output queues (gpu_worker/worker_state.py);
one `EngineThread` owns the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from config.protocol import MAX_HEADER_BYTES, ModelCard, ModelList, RequestError, error_body
from config.worker import WorkerConfig
from gpu_worker.engine_api import Engine
from gpu_worker.framing_log import FramingErrorLog
from gpu_worker.openai_handlers import check_model, handle_chat, handle_completion
from gpu_worker.worker_state import STATE_KEY, WorkerState

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: msgspec.Struct, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body), status=status, content_type="application/json"
    )


def error_response(err: RequestError) -> web.Response:
    headers = {"Retry-After": "1"} if err.status in (429, 503) else None
    response = web.Response(
        body=err.body(), status=err.status, content_type="application/json", headers=headers
    )
    if err.close:
        response.force_close()
    return response


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves in the OpenAI shape, whatever raised it."""
    try:
        return await handler(request)
    except RequestError as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.Response(
            body=error_body(exc.status, exc.reason),
            status=exc.status,
            content_type="application/json",
        )
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.Response(
            body=error_body(500, "internal error"), status=500, content_type="application/json"
        )


async def handle_health(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if state.closing or not state.engine_thread.alive:
        raise RequestError(503, "engine not running", code="engine_unavailable")
    return web.json_response({"status": "ok", "model": state.engine.model_id})


async def handle_stats(request: web.Request) -> web.Response:
    return json_response(request.app[STATE_KEY].stats())


def _model_card(state: WorkerState) -> ModelCard:
    engine = state.engine
    return ModelCard(id=engine.model_id, created=state.created, max_model_len=engine.max_model_len)


async def handle_models(request: web.Request) -> web.Response:
    return json_response(ModelList(data=[_model_card(request.app[STATE_KEY])]))


async def handle_model(request: web.Request) -> web.Response:
    """`GET /v1/models/{model}`: the served model's card, else 404."""
    state = request.app[STATE_KEY]
    check_model(state, request.match_info["model"])
    return json_response(_model_card(state))


async def handle_kv_events(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    sub, snapshot = state.kv_hub.subscribe()
    try:
        await resp.write(b"data: " + snapshot + b"\n\n")
        while True:
            try:
                # asyncio.timeout, not wait_for: no task per wake-up (one wake-up per step).
                async with asyncio.timeout(state.cfg.kv_heartbeat_s):
                    await sub.wake.wait()
            except TimeoutError:
                await resp.write(b": ping\n\n")
                continue
            sub.wake.clear()
            if sub.overflowed or sub.closed:
                break  # the client reconnects and resyncs from a fresh snapshot
            # Everything queued goes out in one write (one syscall, one chunk).
            events = [b"data: " + sub.backlog.popleft() + b"\n\n" for _ in range(len(sub.backlog))]
            if events:
                await resp.write(b"".join(events))
    finally:
        state.kv_hub.unsubscribe(sub)
    return resp


def build_app(state: WorkerState) -> web.Application:
    app = web.Application(client_max_size=state.cfg.max_body_bytes, middlewares=[openai_errors])
    app[STATE_KEY] = state
    app.router.add_post("/v1/chat/completions", handle_chat)
    app.router.add_post("/v1/completions", handle_completion)
    app.router.add_get("/v1/models", handle_models)
    app.router.add_get("/v1/models/{model:.+}", handle_model)
    app.router.add_get("/health", handle_health)
    app.router.add_get("/stats", handle_stats)
    app.router.add_get("/kv_events", handle_kv_events)
    return app


class WorkerHandle:
    """A running worker (server + engine thread). `async with await start_worker(...)` or call
    `close()`; closing ends every stream, joins the engine thread and frees the port."""

    def __init__(self, state: WorkerState, runner: web.AppRunner, host: str, port: int) -> None:
        self.state = state
        self._runner = runner
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        await self.state.close()
        await self._runner.cleanup()

    async def __aenter__(self) -> WorkerHandle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_worker(
    engine: Engine,
    cfg: WorkerConfig | None = None,
    host: str | None = None,
    port: int | None = None,
) -> WorkerHandle:
    """Serve `engine` on host:port (port 0 = any free port; see `.url`). Defaults from `cfg`."""
    cfg = cfg or WorkerConfig(host="127.0.0.1", port=0)
    host = cfg.host if host is None else host
    port = cfg.port if port is None else port
    state = WorkerState(engine, cfg, asyncio.get_running_loop())
    state.engine_thread.start()
    # handler_cancellation: a client that goes away cancels its handler at once, whose cleanup
    # aborts the request in the engine (frees its blocks) instead of decoding for nobody.
    # max_field_size: the gateway's own limit, so every hint header it passes on is read here.
    runner = web.AppRunner(
        build_app(state),
        handler_cancellation=True,
        shutdown_timeout=cfg.shutdown_timeout_s,
        access_log=None,
        max_field_size=MAX_HEADER_BYTES,
        logger=FramingErrorLog(),  # a request aiohttp cannot frame: one WARNING line
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await state.close()
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if port == 0 else port
    return WorkerHandle(state, runner, host, bound)
