"""Fixtures shared across test directories."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
import pytest

from config.semantic import SemanticCacheConfig
from gateway.semantic.embedder import load_model


class FakeClock:
    """An injectable clock: tests move `now` instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def st_model() -> object:
    """The embedding model, loaded once per test session (semantic cache and gateway tests)."""
    return load_model(SemanticCacheConfig().embedder)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def _stalled_upload(url: str, path: str) -> tuple[int, dict, bytes]:
    """Send headers promising a 100-byte body, then 1 byte, then nothing: the status, the JSON
    error and what the server sends after its reply (b"" once it closed the connection)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n{".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        body = await asyncio.wait_for(reader.readexactly(length), 10)
        after = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1]), orjson.loads(body)["error"], after


@pytest.fixture
def stalled_upload() -> Callable[[str, str], Awaitable[tuple[int, dict, bytes]]]:
    """`await stalled_upload(url, path)`: a POST whose body stops after one byte (see above)."""
    return _stalled_upload
