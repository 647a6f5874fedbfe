"""The OpenAI endpoints through the real openai client against a real sim worker."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from gpu_worker.server import WorkerHandle

from .conftest import MODEL, make_engine, start

LONG = "The quick brown fox jumps over the lazy dog while the cache keeps every block. " * 8


async def test_models_lists_the_served_model(client: AsyncOpenAI) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert (await client.models.retrieve(MODEL)).id == MODEL
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("org/other-model")


async def test_chat_completion_reports_usage_and_honours_max_tokens(client: AsyncOpenAI) -> None:
    resp = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=24
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.role == "assistant"
    assert len(choice.message.content.encode()) == 24  # byte tokenizer: one token per byte
    assert resp.usage.completion_tokens == 24
    # ChatML with the default system line: prompt tokens = template bytes + specials.
    assert resp.usage.prompt_tokens > len("hello")
    assert resp.usage.prompt_tokens_details.cached_tokens == 0
    assert resp.id.startswith("chatcmpl-")


async def test_chat_stream_matches_the_unstreamed_text() -> None:
    # Realistic step times (~5 ms a token): a fast engine may rightly coalesce tokens into few
    # SSE events when the machine is busy, and "really streamed" is what is checked here.
    handle = await start(make_engine(time_scale=0.5))
    try:
        async with AsyncOpenAI(base_url=handle.url + "/v1", api_key="none", max_retries=0) as c:
            await _stream_matches_the_unstreamed_text(c)
    finally:
        await handle.close()


async def _stream_matches_the_unstreamed_text(client: AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "stream me"}]
    full = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=40)
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, reasons, usage, roles = [], [], None, []
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            roles.append(choice.delta.role)
            pieces.append(choice.delta.content or "")
            reasons.append(choice.finish_reason)
    assert "".join(pieces) == full.choices[0].message.content
    assert roles[0] == "assistant"
    assert len(pieces) > 5  # really streamed, not one chunk
    assert reasons[-1] == "length" and set(reasons[:-1]) == {None}
    assert usage is not None and usage.completion_tokens == 40
    assert usage.prompt_tokens == full.usage.prompt_tokens


async def test_completion_text_and_token_ids_agree(client: AsyncOpenAI) -> None:
    by_text = await client.completions.create(model=MODEL, prompt="abc", max_tokens=10)
    ids = [3 + b for b in b"abc"]
    by_ids = await client.completions.create(model=MODEL, prompt=ids, max_tokens=10)
    assert by_text.choices[0].text == by_ids.choices[0].text
    assert by_text.usage.prompt_tokens == 3
    one_string = await client.completions.create(model=MODEL, prompt=["abc"], max_tokens=10)
    assert one_string.choices[0].text == by_text.choices[0].text


async def test_completion_stream_without_usage(client: AsyncOpenAI) -> None:
    stream = await client.completions.create(
        model=MODEL, prompt="count", max_tokens=12, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.usage is None for c in chunks)
    assert len("".join(c.choices[0].text for c in chunks).encode()) == 12
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_repeated_long_prompt_is_served_from_the_prefix_cache(client: AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": LONG}]
    first = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    second = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    # Every full 16-token block of the prompt is reused; only the partial tail is recomputed.
    assert cached == (second.usage.prompt_tokens // 16) * 16 > 0


async def test_stop_string_ends_the_text_before_it(client: AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "stops"}]
    full = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=60)
    text = full.choices[0].message.content
    word = text.split()[3]
    for stream in (False, True):
        resp = await client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=60, stop=[word, "zzz"], stream=stream
        )
        if stream:
            parts = [
                (c.choices[0].delta.content or "", c.choices[0].finish_reason) async for c in resp
            ]
            got, reason = "".join(p for p, _ in parts), parts[-1][1]
        else:
            got, reason = resp.choices[0].message.content, resp.choices[0].finish_reason
        assert got == text[: text.index(word)]
        assert reason == "stop"


async def test_same_seed_same_text_other_seed_other_text(client: AsyncOpenAI) -> None:
    async def text(seed: int) -> str:
        r = await client.completions.create(model=MODEL, prompt="x", max_tokens=30, seed=seed)
        return r.choices[0].text

    assert await text(1) == await text(1)
    assert await text(1) != await text(2)
    assert await text(-5) == await text(-5)  # any int64 seed is fine


async def test_unknown_fields_and_no_op_answer_options_are_accepted(worker: WorkerHandle) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_completion_tokens": 3,
        "presence_penalty": 0,
        "logit_bias": {},
        "tools": [],
        "tool_choice": "none",
        "logprobs": False,
        "response_format": {"type": "text"},
        "metadata": {"trace": "abc"},
    }
    async with httpx.AsyncClient() as http:
        resp = await http.post(worker.url + "/v1/chat/completions", json=body)
    assert resp.status_code == 200
    assert resp.json()["usage"]["completion_tokens"] == 3


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/v1/chat/completions", "tools", [TOOL]),
        ("/v1/chat/completions", "response_format", {"type": "json_object"}),
        ("/v1/chat/completions", "logprobs", True),
        ("/v1/chat/completions", "presence_penalty", 0.5),
        ("/v1/chat/completions", "logit_bias", {"1": 2}),
        ("/v1/completions", "echo", True),
        ("/v1/completions", "best_of", 3),
        ("/v1/completions", "logprobs", 2),
    ],
)
async def test_answer_options_it_cannot_honour_are_refused(
    worker: WorkerHandle, path: str, field: str, value: object
) -> None:
    if path == "/v1/chat/completions":
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    else:
        body = {"model": MODEL, "prompt": "hi"}
    async with httpx.AsyncClient() as http:
        resp = await http.post(worker.url + path, json=body | {field: value, "max_tokens": 2})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == field


@pytest.mark.parametrize(
    "headers",
    [{"x-kvgate-category": "code", "x-kvgate-turn": "2", "x-kvgate-deadline-ms": "5000"}],
)
async def test_hint_headers_are_accepted(worker: WorkerHandle, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            worker.url + "/v1/completions",
            json={"model": MODEL, "prompt": "hi", "max_tokens": 2},
            headers=headers,
        )
    assert resp.status_code == 200


async def test_cache_salt_isolates_the_prefix_cache(worker: WorkerHandle) -> None:
    body = {"model": MODEL, "prompt": LONG, "max_tokens": 1}
    async with httpx.AsyncClient() as http:
        url = worker.url + "/v1/completions"
        await http.post(url, json=body, headers={"x-kvgate-cache-salt": "tenant-a"})
        other = await http.post(url, json=body, headers={"x-kvgate-cache-salt": "tenant-b"})
        same = await http.post(url, json=body, headers={"x-kvgate-cache-salt": "tenant-a"})
    assert other.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert same.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0


async def test_a_prediction_longer_than_the_context_is_cut_not_refused(
    client: AsyncOpenAI,
) -> None:
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    plain = await client.chat.completions.create(**kwargs)
    huge = {"type": "content", "content": "word " * 2_000_000}  # 10 MB
    reply = await client.chat.completions.create(prediction=huge, **kwargs)
    assert reply.choices[0].message.content == plain.choices[0].message.content
    details = reply.usage.completion_tokens_details
    assert details.accepted_prediction_tokens + details.rejected_prediction_tokens <= 8
