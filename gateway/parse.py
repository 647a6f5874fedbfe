"""Read a request body into `config.protocol`'s wire structs, validate it, size it for routing.

The gateway validates exactly as the worker does (the same structs and rules), so a bad request
is refused here with a 400 before any worker sees it; the body itself is forwarded unchanged.
"""

from __future__ import annotations

import hashlib

import msgspec

from config.protocol import (
    HEADER_CONVERSATION,
    HEADER_TURN,
    ChatCompletionRequest,
    CompletionRequest,
    decode_request,
    validate_chat,
    validate_completion,
)
from gateway.errors import ApiError
from policies.routing import RequestView

# Routing needs a size, not an exact count: ~4 characters per token for English text.
CHARS_PER_TOKEN = 4
BLOCK_SIZE = 16


class RouteInfo(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    stream: bool
    view: RequestView
    # Hints for the worker's KV cache (config.protocol's x-kvgate-* headers), sent upstream.
    hints: dict[str, str] = msgspec.field(default_factory=dict)


def conversation_hints(req: ChatCompletionRequest) -> dict[str, str]:
    """Turn and conversation of a chat request, for the worker's eviction policy.

    turn = the user messages before the last one (0 for a first question); conversation = a
    63-bit hash of the system messages and the first user message, which every later turn of
    the same conversation repeats verbatim (clients resend the whole history)."""
    users = [m for m in req.messages if m.role == "user"]
    if not users:
        return {}
    head = [m.text() for m in req.messages if m.role in ("system", "developer")]
    digest = hashlib.blake2b("\x00".join([*head, users[0].text()]).encode(), digest_size=8)
    conversation = int.from_bytes(digest.digest(), "big") >> 1
    return {HEADER_TURN: str(len(users) - 1), HEADER_CONVERSATION: str(conversation)}


def _view(num_prompt_tokens: int, max_tokens: int | None, tenant: str) -> RequestView:
    tokens = max(1, num_prompt_tokens)
    return RequestView(
        num_prompt_tokens=tokens,
        block_size=BLOCK_SIZE,
        num_blocks=tokens // BLOCK_SIZE,
        tenant=tenant,
        max_tokens=max_tokens or 0,
    )


def parse_chat(body: bytes, tenant: str) -> RouteInfo:
    """Raises `config.protocol.RequestError` (400) for a body a worker would refuse."""
    req = decode_request(body, ChatCompletionRequest)
    validate_chat(req)
    chars = sum(len(m.text()) for m in req.messages)
    view = _view(chars // CHARS_PER_TOKEN, req.requested_max_tokens(), tenant)
    return RouteInfo(model=req.model, stream=req.stream, view=view, hints=conversation_hints(req))


def parse_completion(body: bytes, tenant: str) -> RouteInfo:
    req = decode_request(body, CompletionRequest)
    prompt = validate_completion(req)
    tokens = len(prompt) if isinstance(prompt, list) else len(prompt) // CHARS_PER_TOKEN
    view = _view(tokens, req.requested_max_tokens(), tenant)
    return RouteInfo(model=req.model, stream=req.stream, view=view)


def unknown_model(model: str) -> ApiError:
    return ApiError(
        404, f"the model `{model}` does not exist", param="model", code="model_not_found"
    )
