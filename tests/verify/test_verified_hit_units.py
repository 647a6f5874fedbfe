"""The verify path's two pure pieces: the body sent upstream, and the counts read back."""

from __future__ import annotations

import msgspec
import orjson
import pytest

from config.protocol import ChatCompletionRequest, CompletionRequest, decode_request
from gateway.semantic.stats import CacheStats
from gateway.verified_hit import (
    TAIL_BYTES,
    PredictionTally,
    counts_in_json,
    counts_in_sse,
    predicted_body,
)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


@pytest.mark.parametrize(
    ("kind", "body", "cls"),
    [
        ("chat", CHAT, ChatCompletionRequest),
        ("completion", {"model": "m", "prompt": "hi", "max_tokens": 3}, CompletionRequest),
    ],
)
def test_prediction_added_and_everything_else_kept(kind, body, cls):
    given = orjson.dumps(body | {"store": True, "metadata": {"k": "v"}})
    sent = predicted_body(given, kind, "an answer")
    obj = orjson.loads(sent)
    assert obj.pop("prediction") == {"type": "content", "content": "an answer"}
    assert obj == orjson.loads(given)  # unknown fields reach the upstream as sent
    assert decode_request(sent, cls).prediction.text() == "an answer"


def test_clients_own_prediction_and_body_are_kept():
    own = orjson.dumps(CHAT | {"prediction": {"type": "content", "content": [{"text": "x"}]}})
    assert predicted_body(own, "chat", "cached") is own
    # An explicit null is no prediction: the cached answer is set (and once, not twice).
    null = orjson.dumps(CHAT | {"prediction": None})
    sent = predicted_body(null, "chat", "cached")
    assert sent.count(b'"prediction"') == 1
    assert orjson.loads(sent)["prediction"]["content"] == "cached"


def test_a_number_python_cannot_hold_falls_back_to_the_request_struct():
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "x": 1e999}'
    decode_request(body, ChatCompletionRequest)  # the parser lets it through
    sent = predicted_body(body, "chat", "cached")
    req = msgspec.json.decode(sent, type=ChatCompletionRequest)
    assert req.prediction.text() == "cached" and req.messages[0].text() == "hi"
    assert b'"x"' not in sent


def _usage(accepted: int, rejected: int) -> dict[str, object]:
    details = {"accepted_prediction_tokens": accepted, "rejected_prediction_tokens": rejected}
    return {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8} | {
        "completion_tokens_details": details
    }


def test_counts_from_a_whole_reply():
    assert counts_in_json(orjson.dumps({"choices": [], "usage": _usage(4, 2)})) == (4, 2)
    assert counts_in_json(orjson.dumps({"choices": [], "usage": {"prompt_tokens": 1}})) is None
    bad = {"usage": {"completion_tokens_details": {"accepted_prediction_tokens": "4"}}}
    assert counts_in_json(orjson.dumps(bad)) is None
    assert counts_in_json(b'{"completion_tokens_details": ') is None  # not JSON: nothing


def _event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def test_counts_from_a_stream_tail_in_any_chunking():
    content = b"".join(_event({"choices": [{"delta": {"content": "w" * 50}}]}) for _ in range(600))
    stream = content + _event({"choices": [], "usage": _usage(7, 3)}) + b"data: [DONE]\n\n"
    assert len(stream) > 2 * TAIL_BYTES
    for size in (1, 7, 4096, len(stream)):
        tally = PredictionTally(CacheStats(), "code")
        for i in range(0, len(stream), size):
            tally.feed(stream[i : i + size])
        assert tally.counts() == (7, 3), size
    no_usage = PredictionTally(CacheStats(), "code")
    no_usage.feed(content + b"data: [DONE]\n\n")
    assert no_usage.counts() is None
    # A tail that begins inside the usage event has no counts to read, and says so.
    usage_event = _event({"choices": [], "usage": _usage(7, 3)})
    assert counts_in_sse(usage_event[10:] + b"data: [DONE]\n\n") is None
