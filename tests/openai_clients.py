"""Real `openai` clients for tests, closed in the test's own event loop.

A client left to the garbage collector closes its connections in a later test's loop, or after
this one is closed, and logs "Event loop is closed" there (which broke other tests' no-ERROR
checks). Rule: make clients through one `OpenAIClients` per test and `await close()` at its end.
"""

from __future__ import annotations

import openai

from gateway.server import RunningGateway


class OpenAIClients:
    def __init__(self, api_key: str = "unused", timeout_s: float = 20.0):
        self.api_key = api_key
        self.timeout_s = timeout_s
        self._made: list[openai.AsyncOpenAI] = []

    def __call__(self, gw: RunningGateway, api_key: str | None = None) -> openai.AsyncOpenAI:
        """A client of `gw`'s OpenAI API (no retries: a test sees every answer as it came)."""
        client = openai.AsyncOpenAI(
            base_url=gw.url + "/v1",
            api_key=api_key or self.api_key,
            max_retries=0,
            timeout=self.timeout_s,
        )
        self._made.append(client)
        return client

    async def close(self) -> None:
        for client in self._made:
            await client.close()
        self._made.clear()
