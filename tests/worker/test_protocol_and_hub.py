"""Wire structs (lenient requests, OpenAI error body) and the KV event hub's bounded fan-out."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from config.protocol import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    CompletionRequest,
    RequestError,
    decode_request,
    error_body,
    validate_completion,
)
from config.worker_wire import KvEventBatch
from gpu_worker.engine_api import RequestMeta, RequestOutput
from gpu_worker.kv_events import KvEventHub
from gpu_worker.openai_handlers import _coalesce, request_meta


def test_requests_ignore_unknown_fields_and_accept_both_max_token_names() -> None:
    body = b"""{"model": "m", "messages": [{"role": "user", "content": "x", "extra": 1}],
        "max_tokens": 5, "max_completion_tokens": 7, "frequency_penalty": 0.1,
        "stream_options": {"include_usage": true, "other": 2}, "stop": "END"}"""
    req = decode_request(body, ChatCompletionRequest)
    assert req.requested_max_tokens() == 7
    assert req.include_usage() and req.stop_list() == ("END",)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("text", "text"), ([5, 6], [5, 6]), (["only"], "only")],
)
def test_completion_prompt_forms(prompt: object, expected: object) -> None:
    req = decode_request(msgspec.json.encode({"model": "m", "prompt": prompt}), CompletionRequest)
    assert validate_completion(req) == expected


def test_type_errors_name_the_field() -> None:
    with pytest.raises(RequestError) as err:
        decode_request(b'{"model": "m", "prompt": "x", "temperature": "hot"}', CompletionRequest)
    assert err.value.status == 400 and err.value.param == "temperature"


def test_error_body_has_the_openai_shape() -> None:
    body = msgspec.json.decode(error_body(429, "slow down", code="rate_limited"))
    assert body == {
        "error": {
            "message": "slow down",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limited",
        }
    }


def test_stream_chunk_leaves_out_unset_fields() -> None:
    chunk = ChatCompletionChunk(
        id="c", created=1, model="m", choices=[ChatChunkChoice(delta=ChatDelta(content="x"))]
    )
    data = msgspec.json.decode(msgspec.json.encode(chunk))
    assert "usage" not in data and data["object"] == "chat.completion.chunk"
    assert data["choices"][0]["delta"] == {"content": "x"}


def test_hub_snapshot_and_sequence() -> None:
    hub = KvEventHub([1, 2], max_backlog=4)
    hub.publish([3], [1])
    sub, snap = hub.subscribe()
    first = msgspec.json.decode(snap, type=KvEventBatch)
    assert first.snapshot and first.seq == 1 and sorted(first.stored) == [2, 3]
    hub.publish([4], [])
    batch = msgspec.json.decode(sub.backlog.popleft(), type=KvEventBatch)
    assert (batch.seq, batch.stored, batch.removed, batch.snapshot) == (2, [4], [], False)


def test_hub_cuts_off_a_subscriber_that_falls_behind() -> None:
    hub = KvEventHub([], max_backlog=3)
    slow, _ = hub.subscribe()
    fast, _ = hub.subscribe()
    for i in range(5):
        hub.publish([i], [])
        fast.backlog.clear()  # the fast one keeps up
    assert slow.overflowed and not fast.overflowed
    assert hub.num_subscribers == 1
    assert len(slow.backlog) == 3  # bounded: nothing was queued after the cut


def test_hint_headers_become_request_meta() -> None:
    headers = {
        "x-kvgate-category": "code",
        "x-kvgate-turn": "3",
        "x-kvgate-conversation": "77",
        "x-kvgate-cache-salt": "tenant-1",
        "x-kvgate-deadline-ms": "1500",
    }
    meta = request_meta(headers, now_s=100.0)
    assert meta == RequestMeta(
        category="code", turn=3, conversation=77, cache_salt="tenant-1", deadline_s=101.5
    )
    assert request_meta({}, now_s=5.0) == RequestMeta()
    for bad in ({"x-kvgate-deadline-ms": "soon"}, {"x-kvgate-turn": "-1"}):
        with pytest.raises(RequestError) as err:
            request_meta(bad, now_s=0.0)
        assert err.value.status == 400
        assert err.value.param == next(iter(bad)), err.value.param


async def test_stream_coalesces_outputs_already_queued() -> None:
    queue: asyncio.Queue = asyncio.Queue()
    outs = [
        RequestOutput(request_id="r", new_token_ids=[i], text_delta=t, num_output_tokens=i + 1)
        for i, t in enumerate(["a", "b", "c"])
    ]
    outs[-1].finished, outs[-1].finish_reason = True, "length"
    for out in outs[1:]:
        queue.put_nowait(out)
    merged = _coalesce(outs[0], queue)
    assert (merged.text_delta, merged.new_token_ids) == ("abc", [0, 1, 2])
    assert merged.finished and merged.finish_reason == "length" and merged.num_output_tokens == 3
    assert queue.empty()
    assert _coalesce(outs[0], queue) is outs[0]  # nothing queued: passed through


def test_decoded_request_re_encodes_without_nulls() -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true}'
    again = msgspec.json.decode(msgspec.json.encode(decode_request(body, ChatCompletionRequest)))
    assert again == {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
