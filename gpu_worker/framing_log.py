"""aiohttp's server logger for both kvgate servers (the worker's, and the gateway's, which
imports it from here: gpu_worker is the one package both may import that serves HTTP).

A request aiohttp's HTTP parser cannot frame (a header line over `MAX_HEADER_BYTES`, more than
128 headers, a bad Content-Length, bad chunked encoding, a malformed request line) never reaches
a handler: aiohttp answers a plain-text 400 itself and closes the connection, and logs it with
`logger.exception`, an ERROR with a traceback, for what is a client's mistake. The plain-text
body stays (nothing on that path is ours to shape: aiohttp builds it in
`RequestHandler.handle_error`, no middleware or response signal runs for a request that was never
routed, and `Server` makes its `RequestHandler` with no way to pass another class; aiohttp issue
#3287 asks for it). What we can change, through the documented `logger` argument of
`web.AppRunner` (passed to every `RequestHandler`), is the log: one WARNING line per refused
request, without the traceback or the client's bytes. Every other exception aiohttp logs keeps
its ERROR and traceback.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

_CLIENT_BYTES = re.compile(r"\s*:?\s*b['\"]")  # where aiohttp's message starts quoting the request


def framing_summary(exc: HttpProcessingError) -> str:
    """The first line of aiohttp's message, up to where it quotes the request's bytes."""
    text = str(exc.message or "").strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return _CLIENT_BYTES.split(first, maxsplit=1)[0].rstrip(":")[:120]


class FramingErrorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """`logger=` for `web.AppRunner`: a request aiohttp could not parse is one WARNING line."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__(logger or logging.getLogger("aiohttp.server"), {})

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            summary, name = framing_summary(exc_info), type(exc_info).__name__
            # aiohttp's message is "Error handling request from <address>".
            self.warning(f"{msg}: refused with 400 ({name}: %s)", *args, summary, **kwargs)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)
