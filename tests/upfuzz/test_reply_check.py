"""The relay's checks of a worker's reply, as tables: `check_whole` (a 200 body), `error_reply`
(any other status) and `ends_with_done` (the tail of a stream)."""

from __future__ import annotations

from collections import deque

import orjson
import pytest

from gateway.relay import ends_with_done
from gateway.reply_check import ReplyBroken, check_whole, error_reply

CHAT_OK = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}
COMPLETION_OK = {"choices": [{"index": 0, "text": "hi", "finish_reason": "length"}]}


@pytest.mark.parametrize(
    "body",
    [
        CHAT_OK,
        COMPLETION_OK,
        {"choices": [{"message": {"content": None, "tool_calls": [{"id": "t"}]}}]},
        CHAT_OK | {"usage": {"prompt_tokens": 3, "completion_tokens": 2**63 - 1}},
        CHAT_OK | {"usage": None, "system_fingerprint": "x", "extra": [1, 2]},
        {"choices": [{"message": {"content": "a"}}, {"message": {"content": "b"}}]},
    ],
)
def test_completions_pass(body: object) -> None:
    check_whole(orjson.dumps(body))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"<html>",
        b'{"choices": [',
        b"[]",
        b'"choices"',
        b'{"id": "x"}',
        b'{"choices": []}',
        b'{"choices": {}}',
        b'{"choices": [7]}',
        b'{"choices": [{}]}',
        b'{"choices": [{"message": "hi"}]}',
        b'{"choices": [{"message": {"content": 5}}]}',
        b'{"choices": [{"text": ["a"]}]}',
        b'{"choices": [{"text": "a"}], "usage": {"completion_tokens": -1}}',
        b'{"choices": [{"text": "a"}], "usage": {"completion_tokens": 1e308}}',
        b'{"choices": [{"text": "a"}], "usage": {"completion_tokens": 18446744073709551616}}',
        b'{"choices": [{"text": "a"}], "usage": "lots"}',
    ],
)
def test_anything_else_is_broken(raw: bytes) -> None:
    with pytest.raises(ReplyBroken, match="not a completion"):
        check_whole(raw)


OPENAI_ERROR = b'{"error": {"message": "too long", "type": "invalid_request_error", "code": 7}}'


@pytest.mark.parametrize(
    ("status", "body", "expected_status", "message_has"),
    [
        (400, OPENAI_ERROR, 400, "too long"),
        (404, OPENAI_ERROR, 404, "too long"),
        (429, OPENAI_ERROR, 429, "too long"),
        (503, OPENAI_ERROR, 503, "too long"),
        (504, OPENAI_ERROR, 504, "too long"),
        (500, OPENAI_ERROR, 502, "answered 500: too long"),
        (501, OPENAI_ERROR, 502, "answered 501"),
        (302, OPENAI_ERROR, 502, "answered 302"),
        (500, b"<h1>oops</h1>", 502, "answered 500 without"),
        (404, b"Not Found", 502, "answered 404 without"),
        (503, b"busy", 503, "answered 503 without"),
        (429, b"", 429, "answered 429 without"),
        (204, b"", 502, "answered 204 without"),
        (400, b'{"error": "just a string"}', 502, "answered 400 without"),
    ],
)
def test_errors_leave_in_openai_shape(
    status: int, body: bytes, expected_status: int, message_has: str
) -> None:
    out_status, out_body = error_reply(status, body)
    assert out_status == expected_status
    error = orjson.loads(out_body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert message_has in error["message"]
    if body == OPENAI_ERROR and 400 <= status < 500:
        assert error["code"] == "7" and error["type"] == "invalid_request_error"


DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("chunks", "done"),
    [
        ([b"data: {}\n\n", DONE], True),
        ([b"data: {}\n\n" + DONE], True),
        ([b"data: {}\r\n\r\ndata: [DONE]\r\n\r\n"], True),
        ([b"data:[DONE]\n\n"], True),
        ([bytes([b]) for b in b"data: {}\n\n" + DONE], True),  # one byte at a time
        ([b"data: {}\n\n"], False),
        ([DONE, b"data: {}\n\n"], False),  # events after it: the stream did not end there
        ([b"data: [DONE]x\n\n"], False),
        ([b"event: done\n\n"], False),
        ([b""], False),
    ],
)
def test_ends_with_done(chunks: list[bytes], done: bool) -> None:
    assert ends_with_done(deque(chunks, maxlen=32)) is done
