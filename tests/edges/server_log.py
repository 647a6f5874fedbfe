"""What the servers logged: the edges tests hold the gateway, the workers and aiohttp's server
to "nothing at ERROR" while clients misbehave."""

from __future__ import annotations

import logging

# The servers' loggers, and asyncio's (a task of theirs that fails unawaited logs there): what
# these tests hold to "no ERROR". Not the clients' libraries (httpx, openai): a client of an
# earlier test collected in this test's loop is not the servers' doing.
SERVER_LOGGERS = ("gateway", "gpu_worker", "backends", "aiohttp", "asyncio")


def server_errors(records: list[logging.LogRecord]) -> list[str]:
    """Messages the gateway, the workers, aiohttp's server or asyncio logged at ERROR or
    above."""
    return [
        r.getMessage()
        for r in records
        if r.levelno >= logging.ERROR and r.name.startswith(SERVER_LOGGERS)
    ]
