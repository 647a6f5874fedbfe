"""The one check the relay makes of a worker's whole (non-streamed) reply before passing it on.

The relay forwards a worker's bytes unchanged (gateway/relay.py); this check makes sure that a
client never gets a 200 it cannot parse as a completion, nor an error outside OpenAI's shape:

- 200: a JSON object with a non-empty `choices` list, each choice with a `message` (whose
  `content` is a string or null) or a `text` string; `usage`, when present, holds whole,
  non-negative token counts that fit in 64 bits. Anything else is the worker's failure:
  `check_whole` raises `ReplyBroken` and the relay answers 502.
- any other status: `error_reply` passes an OpenAI error (`{"error": {"message": ...}}`) on in
  the full shape, and makes one for any other body. A worker's 4xx in OpenAI's shape keeps its
  status (the worker's judgement of the request); 429, 503 and 504 keep theirs (busy or slow: the
  client may retry); every other status, and a 4xx whose body is not an OpenAI error (something
  that does not speak the API answered), becomes 502, the codebase's status for an upstream that
  failed (gateway/errors.py `upstream_failed`), so the gateway itself never answers 500.

Costs one msgspec decode of the reply per non-streamed request; streamed replies are not checked
here (their events go through byte for byte).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from config.protocol import error_body

TokenCount = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_KEPT_ERROR_STATUSES = frozenset((429, 503, 504))


class ReplyBroken(Exception):
    """A 200 reply that is not a completion (the message says where it is wrong)."""


class _Usage(msgspec.Struct):
    prompt_tokens: TokenCount = 0
    completion_tokens: TokenCount = 0
    total_tokens: TokenCount = 0


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    text: str | None = None


class _Completion(msgspec.Struct):
    choices: Annotated[list[_Choice], msgspec.Meta(min_length=1)]
    usage: _Usage | None = None


class _ErrorDetail(msgspec.Struct):
    message: str
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class _ErrorReply(msgspec.Struct):
    error: _ErrorDetail


_completion = msgspec.json.Decoder(_Completion)
_error = msgspec.json.Decoder(_ErrorReply)


def check_whole(body: bytes) -> None:
    """Raise `ReplyBroken` unless `body` (of a 200 reply) is a completion as the module says."""
    try:
        reply = _completion.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise ReplyBroken(f"its reply is not a completion ({exc})") from None
    for i, choice in enumerate(reply.choices):
        if choice.message is None and choice.text is None:
            raise ReplyBroken(f"its reply is not a completion (no message or text in choice {i})")


def error_reply(status: int, body: bytes) -> tuple[int, bytes]:
    """The status and OpenAI-shaped body to answer for a worker's non-200 reply."""
    try:
        detail: _ErrorDetail | None = _error.decode(body).error
    except msgspec.DecodeError:
        detail = None
    if detail is None:
        out = status if status in _KEPT_ERROR_STATUSES else 502
        message = f"the worker answered {status} without an OpenAI error body"
        return out, error_body(out, message, code="upstream_error", type="server_error")
    if status in _KEPT_ERROR_STATUSES or 400 <= status < 500:
        code = None if detail.code is None else str(detail.code)
        return status, error_body(
            status, detail.message, param=detail.param, code=code, type=detail.type
        )
    message = f"the worker failed: it answered {status}: {detail.message}"
    return 502, error_body(502, message, code="upstream_error", type="server_error")
