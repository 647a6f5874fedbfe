"""Verified hits: a cache hit in a `verify: true` category goes to a worker with the cached answer
as its Predicted Outputs `prediction`, and the worker's own answer is relayed.

Rules:
- `predicted_body` is the only change made to the client's body, and only on a verify outcome:
  a request that carries its own `prediction` keeps it (and its body) unchanged.
- `PredictionTally` reads the worker's `usage.completion_tokens_details` (accepted / rejected
  prediction tokens) from a relayed reply; a reply without it (an upstream that ignores
  `prediction`, a stream without a usage chunk) counts nothing. It keeps at most
  `TAIL_BYTES` of a stream, and parses only after the relay has finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec
import orjson

from config.protocol import ChatCompletionRequest, CompletionRequest, Prediction
from gateway.semantic.replay import Kind
from gateway.semantic.stats import CacheStats

log = logging.getLogger(__name__)

TAIL_BYTES = 16_384  # a stream's usage chunk is its last event but one (before `[DONE]`)
_DETAILS = b'"completion_tokens_details"'


def predicted_body(body: bytes, kind: Kind, text: str) -> bytes:
    """`body` (a request the parser validated) with `prediction` set to `text`.

    The body is re-encoded from its decoded JSON so fields the gateway does not know reach the
    upstream as the client sent them; a body whose JSON holds a number no Python value can hold
    (an unknown field's `1e999`, which the parser skipped) is re-encoded from the request struct,
    without its unknown fields."""
    try:
        obj = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        obj = None
    if isinstance(obj, dict):
        if obj.get("prediction") is not None:
            return body
        obj["prediction"] = {"type": "content", "content": text}
        return msgspec.json.encode(obj)
    req = msgspec.json.decode(
        body, type=ChatCompletionRequest if kind == "chat" else CompletionRequest
    )
    if req.prediction is not None:
        return body
    return msgspec.json.encode(msgspec.structs.replace(req, prediction=Prediction(content=text)))


def _counts(obj: object) -> tuple[int, int] | None:
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    details = usage.get("completion_tokens_details") if isinstance(usage, dict) else None
    if not isinstance(details, dict):
        return None
    accepted = details.get("accepted_prediction_tokens")
    rejected = details.get("rejected_prediction_tokens")
    if not isinstance(accepted, int) or not isinstance(rejected, int):
        return None
    return max(0, accepted), max(0, rejected)


def counts_in_json(body: bytes) -> tuple[int, int] | None:
    """(accepted, rejected) prediction tokens of a whole reply, None when it reports none."""
    if _DETAILS not in body:
        return None
    try:
        return _counts(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


def counts_in_sse(tail: bytes) -> tuple[int, int] | None:
    """The same from the last bytes of a stream: the last event that reports them."""
    for event in reversed(tail.split(b"\n\n")):
        event = event.strip()
        if not event.startswith(b"data:") or _DETAILS not in event:
            continue
        try:  # the tail may begin inside an event: that one does not parse, and is skipped
            found = _counts(orjson.loads(event[5:]))
        except orjson.JSONDecodeError:
            continue
        if found is not None:
            return found
    return None


class PredictionTally:
    """Counts one verify reply's prediction tokens into `stats` under `category`: keeps the last
    `TAIL_BYTES` of a relayed stream, and parses (a stream's tail, or a whole reply) in a later
    loop turn than the relay's, so the relay never waits for it."""

    __slots__ = ("_category", "_stats", "_tail")

    def __init__(self, stats: CacheStats, category: str) -> None:
        self._stats = stats
        self._category = category
        self._tail = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._tail += chunk
        if len(self._tail) > 2 * TAIL_BYTES:  # trimmed now and then, not on every chunk
            del self._tail[:-TAIL_BYTES]

    def counts(self) -> tuple[int, int] | None:
        return counts_in_sse(bytes(self._tail[-TAIL_BYTES:]))

    def finish_stream(self) -> None:
        """The stream ended normally."""
        asyncio.get_running_loop().call_soon(self._add, self.counts)

    def finish_whole(self, body: bytes) -> None:
        """A whole 200 reply."""
        asyncio.get_running_loop().call_soon(self._add, lambda: counts_in_json(body))

    def _add(self, counts: Callable[[], tuple[int, int] | None]) -> None:
        try:
            found = counts()
        except Exception:  # an odd reply counts nothing; it must not break anything
            log.warning("semantic cache: prediction counts not read", exc_info=True)
            return
        if found is not None:
            self._stats.add_prediction(self._category, *found)
