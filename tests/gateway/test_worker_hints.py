"""The gateway tells the worker what its KV cache policy can use: the turn and conversation of a
chat request (from its messages) and the client's own x-kvgate-* hints, as request headers.

The upstream here is a plain OpenAI-compatible server that records the headers it gets (the
gateway fronts any such server); the simulated worker does not echo request headers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from config.protocol import (
    HEADER_CACHE_SALT,
    HEADER_CATEGORY,
    HEADER_CONVERSATION,
    HEADER_DEADLINE_MS,
    HEADER_TURN,
)

MODEL = "rec-model"
HINTS = (HEADER_TURN, HEADER_CONVERSATION, HEADER_CATEGORY, HEADER_CACHE_SALT, HEADER_DEADLINE_MS)


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append({h: request.headers[h] for h in HINTS if h in request.headers})
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        )

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL}]})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}", seen
    await runner.cleanup()


async def test_turn_conversation_and_client_hints_reach_the_worker(
    recorder, make_gateway, openai_client
):
    url, seen = recorder
    client = openai_client(await make_gateway([url]))
    system = {"role": "system", "content": "You are terse."}
    first = {"role": "user", "content": "Name a prime."}
    history = [system, first, {"role": "assistant", "content": "7"}]
    await client.chat.completions.create(model=MODEL, messages=[system, first])
    await client.chat.completions.create(
        model=MODEL, messages=[*history, {"role": "user", "content": "Another?"}]
    )
    other = {"role": "user", "content": "Name a colour."}
    await client.chat.completions.create(
        model=MODEL,
        messages=[system, other],
        extra_headers={
            HEADER_CATEGORY: "chat",
            HEADER_CACHE_SALT: "s1",
            HEADER_TURN: "5",
            HEADER_DEADLINE_MS: "5000",
        },
    )
    assert [h[HEADER_TURN] for h in seen] == ["0", "1", "5"]  # a client's own turn wins
    conversations = [h[HEADER_CONVERSATION] for h in seen]
    assert conversations[0] == conversations[1] != conversations[2]
    assert int(conversations[0]) >= 0
    assert seen[2][HEADER_CATEGORY] == "chat" and seen[2][HEADER_CACHE_SALT] == "s1"
    assert HEADER_CACHE_SALT not in seen[0] and HEADER_DEADLINE_MS not in seen[0]
    # The worker gets what is left of the deadline after the gateway's own time.
    assert 4000 < int(seen[2][HEADER_DEADLINE_MS]) <= 5000
