"""Run as a script (`python -m tests.edges.framing_probe`, from the repo root): a gateway and a
worker in this process, each sent a chunked body whose framing breaks after the headers were
read (in a second packet). Prints one JSON line: per server, the status, the error code and the
ERROR records logged. tests/edges runs it with AIOHTTP_NO_EXTENSIONS=1, aiohttp's pure-Python
parser, which must be set before aiohttp is imported: hence a process of its own."""

from __future__ import annotations

import asyncio
import json
import logging

from tests.cancel.harness import Stack, chat_body

HEAD = (
    "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    "Transfer-Encoding: chunked\r\n\r\n"
)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


async def broken_chunk(url: str) -> tuple[int, bytes]:
    """Headers and a first good chunk, then (once the handler reads the body) a bad chunk size."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    body = chat_body("hi", 2)
    writer.write(HEAD.encode() + b"5\r\n" + body[:5] + b"\r\n")
    await writer.drain()
    await asyncio.sleep(0.2)  # the handler is reading the body now
    writer.write(b"zz\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


async def main() -> None:
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    stack = Stack()
    try:
        worker = await stack.worker()
        gw = await stack.gateway([worker.url])
        out = {}
        for name, url in (("gateway", gw.url), ("worker", worker.url)):
            status, body = await broken_chunk(url)
            code = json.loads(body)["error"]["code"] if body.startswith(b"{") else None
            out[name] = {"status": status, "code": code}
        await asyncio.sleep(0.1)  # what aiohttp logs after the reply
        out["errors"] = errors.messages
        print(json.dumps(out))
    finally:
        await stack.close()


if __name__ == "__main__":
    asyncio.run(main())
