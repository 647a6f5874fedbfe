"""Start and stop a gateway inside a running event loop (CLI, `kvgate up`, tests, benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from config.gateway import GatewayConfig
from config.protocol import MAX_HEADER_BYTES
from gateway.app import create_app
from gpu_worker.framing_log import FramingErrorLog

# How long after the gateway's own cut (gateway/reply_cut.py) aiohttp closes what is still open:
# the handlers the cut ended are answering meanwhile. Were it the same moment, aiohttp's wait
# could end as a handler finishes, which aiohttp logs as an error (its waiter is set twice).
AIOHTTP_CUT_AFTER_S = 1.0


class RunningGateway:
    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self.runner = runner
        self.url = url  # e.g. http://127.0.0.1:8000 (clients add /v1)

    @property
    def app(self) -> web.Application:
        return self.runner.app

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_gateway(
    cfg: GatewayConfig,
    worker_urls: Sequence[str],
    host: str | None = None,
    port: int | None = None,
    **app_options: Any,
) -> RunningGateway:
    """Serve on `host:port` (the config's when None; port 0 = a free one) and return its URL."""
    # handler_cancellation: a client that hangs up cancels its handler, which closes the upstream
    # connection, which makes the worker drop the request (no generating for nobody).
    # max_field_size: header lines up to 32 KiB (config.protocol.MAX_HEADER_BYTES). Beyond it
    # aiohttp's HTTP parser answers 400 in plain text before any handler runs: framing errors
    # never reach the API layer, so they cannot be in OpenAI's error shape; `logger` logs each
    # as one WARNING line rather than an ERROR with a traceback (gpu_worker/framing_log.py).
    runner = web.AppRunner(
        create_app(cfg, worker_urls, **app_options),
        access_log=None,
        handler_cancellation=True,
        max_field_size=MAX_HEADER_BYTES,
        logger=FramingErrorLog(),
        # The gateway ends what is left at `shutdown_timeout_s` itself, with a reason for each
        # client (gateway/reply_cut.py); aiohttp's cut, which closes connections, comes later.
        shutdown_timeout=cfg.shutdown_timeout_s + AIOHTTP_CUT_AFTER_S,
    )
    await runner.setup()
    site = web.TCPSite(runner, host or cfg.host, cfg.port if port is None else port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    if ":" in bound_host:
        bound_host = f"[{bound_host}]"
    return RunningGateway(runner, f"http://{bound_host}:{bound_port}")
