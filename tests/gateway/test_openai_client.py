"""The official openai client against the gateway over two simulated workers."""

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

MODEL = "sim-llama"
MESSAGES = [{"role": "user", "content": "Tell me about paged attention."}]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_chat_not_streamed(gateway, openai_client):
    reply = await openai_client(gateway).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=8
    )
    assert reply.model == MODEL
    assert reply.choices[0].message.content
    assert 1 <= reply.usage.completion_tokens <= 8


async def test_chat_streamed_in_several_chunks(make_worker, make_gateway, openai_client):
    # A worker with realistic step times (~5 ms a token): a fast one may rightly coalesce all
    # its tokens into one or two SSE events when the machine is busy.
    gateway = await make_gateway([make_worker(time_scale=0.5).url])
    stream = await openai_client(gateway).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=12, stream=True
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3 and text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


async def test_completion_streamed_and_not(make_worker, make_gateway, openai_client):
    # Realistic step times, as above: a fast worker may rightly coalesce a short reply.
    client = openai_client(await make_gateway([make_worker(time_scale=0.5).url]))
    reply = await client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6)
    assert reply.choices[0].text and reply.usage.completion_tokens <= 6
    stream = await client.completions.create(
        model=MODEL, prompt=[1, 2, 3, 4], max_tokens=6, stream=True
    )
    parts = [c.choices[0].text async for c in stream if c.choices]
    assert len(parts) > 1 and "".join(parts)


async def test_models_lists_the_fleets_model(gateway, openai_client):
    client = openai_client(gateway)
    models = await client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert (await client.models.retrieve(MODEL)).id == MODEL
    with pytest.raises(openai.NotFoundError) as missing:
        await client.models.retrieve("org/other-model")  # ids may hold a slash
    assert missing.value.body["code"] == "model_not_found"


async def test_round_robin_uses_both_workers_and_metrics_count(gateway, openai_client):
    client = openai_client(gateway)
    for _ in range(4):
        await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
    async with httpx.AsyncClient() as http:
        text = (await http.get(gateway.url + "/metrics")).text
        health = (await http.get(gateway.url + "/health")).json()
    samples = _samples(text)
    assert samples[("kvgate_worker_requests_total", (("worker", "w0"),))] == 2
    assert samples[("kvgate_worker_requests_total", (("worker", "w1"),))] == 2
    assert samples[("kvgate_requests_total", (("endpoint", "chat"), ("status", "200")))] == 4
    assert samples[("kvgate_time_to_first_token_seconds_count", (("endpoint", "chat"),))] == 4
    assert samples[("kvgate_worker_in_flight", (("worker", "w0"),))] == 0
    assert health == {"status": "ok", "workers": 2, "healthy": 2}


async def test_own_time_is_measured_per_phase(gateway, openai_client):
    client = openai_client(gateway)
    for _ in range(3):
        stream = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=4, stream=True
        )
        assert [c async for c in stream]
    await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
    async with httpx.AsyncClient() as http:
        samples = _samples((await http.get(gateway.url + "/metrics")).text)

    def own(phase: str, part: str) -> float:
        return samples[(f"kvgate_gateway_own_seconds_{part}", (("phase", phase),))]

    assert own("to_worker", "count") == 4  # every request
    assert own("to_client", "count") == 3  # streams only
    ttft_s = samples[("kvgate_time_to_first_token_seconds_sum", (("endpoint", "chat"),))]
    # The gateway's own share is small next to the time to the first token.
    assert 0 < own("to_worker", "sum") < ttft_s
    assert 0 < own("to_client", "sum") < ttft_s
