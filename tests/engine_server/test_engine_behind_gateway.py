"""The torch engine (tiny model) behind the worker server, behind the gateway, with the openai
client: the whole request path of `kvgate up` on real servers on 127.0.0.1."""

from __future__ import annotations

import openai
import pytest

from config.engine import EngineConfig
from config.gateway import GatewayConfig
from config.loader import build
from gateway.keys import PROBER
from gateway.server import start_gateway
from gpu_worker.engine import TorchEngine
from gpu_worker.server import start_worker

PROMPT = "Tell me about paged attention. " * 6  # several full 16-token blocks


@pytest.fixture
async def client():
    engine = TorchEngine(EngineConfig(model="tiny", device="cpu", num_blocks=128, num_threads=1))
    worker = await start_worker(engine)
    cfg = build({"port": 0, "health": {"interval_s": 30.0}}, GatewayConfig)
    gateway = await start_gateway(cfg, [worker.url])
    await gateway.app[PROBER].probe_all()
    async with openai.AsyncOpenAI(
        base_url=gateway.url + "/v1", api_key="unused", max_retries=0
    ) as c:
        yield c
    await gateway.stop()
    await worker.close()


async def test_chat_non_streamed_then_cached_prefix(client):
    messages = [{"role": "user", "content": PROMPT}]
    first = await client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=8, temperature=0
    )
    assert first.choices[0].finish_reason in ("stop", "length")
    assert first.usage.completion_tokens >= 1
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    again = await client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=8, temperature=0
    )
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert cached > 0 and cached % 16 == 0 and cached < again.usage.prompt_tokens
    # Greedy output does not depend on whether the prefix came from the cache.
    assert again.choices[0].message.content == first.choices[0].message.content


async def test_completion_streamed_equals_non_streamed(client):
    kwargs = dict(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0)
    whole = await client.completions.create(**kwargs)
    stream = await client.completions.create(stream=True, **kwargs)
    parts = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert "".join(parts) == whole.choices[0].text
    assert whole.usage.completion_tokens >= 1


async def test_stop_string_ends_the_reply(client):
    # Greedy text of the tiny random model is deterministic: take a piece of it as a stop string.
    base = await client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=16, temperature=0
    )
    text = base.choices[0].text
    if len(text) < 4:
        pytest.skip("the tiny model stopped too early to pick a stop string")
    stop = text[2:4]
    cut = await client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=16, temperature=0, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]


async def test_predicted_outputs_keep_the_answer_and_count_tokens(client):
    messages = [{"role": "user", "content": PROMPT}]
    kwargs = dict(model="tiny", messages=messages, max_tokens=12, temperature=0)
    plain = await client.chat.completions.create(**kwargs)
    answer = plain.choices[0].message.content
    assert plain.usage.completion_tokens_details is None  # reported only with a prediction
    # The tiny model's random bytes do not survive a round trip through text, so how much of
    # its own answer is kept is not pinned here (tests/model checks that on SmolLM2).
    for prediction in (answer, "zq" * 8):
        spec = {"type": "content", "content": prediction}
        reply = await client.chat.completions.create(prediction=spec, **kwargs)
        assert reply.choices[0].message.content == answer
        details = reply.usage.completion_tokens_details
        assert details.accepted_prediction_tokens + details.rejected_prediction_tokens > 0
        assert details.accepted_prediction_tokens < reply.usage.completion_tokens
    stream = await client.chat.completions.create(
        prediction={"type": "content", "content": answer},
        stream=True,
        stream_options={"include_usage": True},
        **kwargs,
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer
    assert chunks[-1].usage.completion_tokens_details is not None
