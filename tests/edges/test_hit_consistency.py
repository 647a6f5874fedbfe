"""A semantic-cache hit answers what a miss would: a request a worker refuses for its context
length gets the same 400 from the gateway when its answer is in the cache (gateway/hit_context.py).
Real gateway over an in-process sim worker with a 256-token context, the real `openai` client."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from gateway.keys import SEMANTIC
from gateway.server import RunningGateway
from gpu_worker.byte_tokenizer import ByteTokenizer
from tests.cancel.harness import MODEL, Stack
from tests.cancel.stages import CATEGORIES

from .conftest import CONTEXT_TOKENS, small_worker

# One question per endpoint (a completion's prompt may hit a chat's entry of the same text).
QUESTION = {
    "chat": "what is a monad in functional programming",
    "completions": "explain how a hash table resolves collisions",
}
NO_CACHE = {"Cache-Control": "no-cache"}  # looked up never, answered by the worker
STOP = [" "]  # the sim worker emits words: a reply cut at a space is complete ("stop"), storable


def client(gw: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0, timeout=20)


async def gateway(stack: Stack, st_model: object, urls: list[str], lookup: str) -> RunningGateway:
    return await stack.gateway(
        urls,
        semantic_cache={"categories": CATEGORIES, "lookup": lookup},
        app_options={"semantic_model": st_model},
    )


async def ask(gw: RunningGateway, endpoint: str, headers: Any = None, **fields: Any):
    """(status, x-kvgate-cache, error dict or None) of one request."""
    c = client(gw)
    try:
        if endpoint == "chat":
            messages = [{"role": "user", "content": QUESTION[endpoint]}]
            raw = await c.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=messages,
                temperature=0,
                stop=STOP,
                extra_headers=headers,
                **fields,
            )
        else:
            raw = await c.completions.with_raw_response.create(
                model=MODEL,
                prompt=QUESTION[endpoint],
                temperature=0,
                stop=STOP,
                extra_headers=headers,
                **fields,
            )
        return raw.status_code, raw.headers.get("x-kvgate-cache"), None
    except openai.APIStatusError as exc:
        return exc.status_code, exc.response.headers.get("x-kvgate-cache"), exc.body
    finally:
        await c.close()


async def stored(gw: RunningGateway, endpoint: str) -> None:
    """A miss whose reply the cache keeps; the same request then hits."""
    assert (await ask(gw, endpoint, max_tokens=40))[:2] == (200, "miss")
    await gw.app[SEMANTIC].drain()
    assert (await ask(gw, endpoint, max_tokens=40))[:2] == (200, "hit")


@pytest.mark.parametrize("lookup", ["sequential", "parallel"])
async def test_a_hit_refuses_what_a_miss_refuses(stack: Stack, st_model: object, lookup: str):
    worker = await small_worker(stack)
    gw = await gateway(stack, st_model, [worker.url], lookup)
    for endpoint in ("chat", "completions"):
        await stored(gw, endpoint)
        too_long = {"max_tokens": CONTEXT_TOKENS}
        miss = await ask(gw, endpoint, NO_CACHE, **too_long)
        assert miss[0] == 400 and miss[1] == "bypass"  # no-cache: not looked up
        assert miss[2]["code"] == "context_length_exceeded", miss
        hit = await ask(gw, endpoint, **too_long)
        assert hit[0] == 400 and hit[2] == miss[2]  # the worker's very refusal, word for word
    # The newer field name counts alike; a request that fits still hits.
    hit = await ask(gw, "chat", max_completion_tokens=CONTEXT_TOKENS)
    assert hit[0] == 400 and hit[2]["param"] == "max_tokens"
    assert (await ask(gw, "chat", max_completion_tokens=40))[:2] == (200, "hit")
    assert (await ask(gw, "chat"))[:2] == (200, "hit")  # no max_tokens: the prompt fits


class _OtherBytes(ByteTokenizer):
    name = "bytes-unknown-to-the-gateway"


async def test_a_hit_the_gateway_cannot_check_goes_to_the_worker(stack: Stack, st_model: object):
    """The worker reports its limits but a tokenizer the gateway lacks: the gateway cannot count
    the prompt, so a hit is not answered from the cache; the worker decides."""
    tokenizer = _OtherBytes(ByteTokenizer().default_system_prompt)
    worker = await small_worker(stack, tokenizer=tokenizer)
    gw = await gateway(stack, st_model, [worker.url], "sequential")
    assert (await ask(gw, "chat", max_tokens=40))[:2] == (200, "miss")
    await gw.app[SEMANTIC].drain()
    too_long = await ask(gw, "chat", max_tokens=CONTEXT_TOKENS)
    assert too_long[:2] == (400, "bypass")
    assert too_long[2]["code"] == "context_length_exceeded"
    assert (await ask(gw, "chat", max_tokens=40))[:2] == (200, "bypass")
    # The stats count what the client got: one miss, two bypasses, no hit.
    counts = next(iter(gw.app[SEMANTIC].cache.stats_by_category.snapshot().values()))
    assert (counts["hits"], counts["misses"], counts["bypasses"]) == (0, 1, 2)
