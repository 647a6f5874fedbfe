"""Read just enough of a request body to validate and route it (msgspec, one pass, no copies).

The gateway forwards the client's bytes unchanged; the worker validates the fields the gateway
does not look at (and answers in the same OpenAI error shape, which is relayed as is).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from gateway.errors import ApiError, bad_request
from policies.routing import RequestView

# Routing needs a size, not an exact count: ~4 characters per token for English text.
CHARS_PER_TOKEN = 4
_PATH = re.compile(r" - at `\$\.?(.*)`$")


class RouteInfo(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    stream: bool
    view: RequestView


class _Message(msgspec.Struct, kw_only=True):
    role: str
    content: str | list[Any] | None = None


class _ChatFields(msgspec.Struct, kw_only=True):
    model: str
    messages: list[_Message]
    stream: bool | None = False
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


class _CompletionFields(msgspec.Struct, kw_only=True):
    model: str
    prompt: str | list[Any]
    stream: bool | None = False
    max_tokens: int | None = None


_chat_decoder = msgspec.json.Decoder(_ChatFields)
_completion_decoder = msgspec.json.Decoder(_CompletionFields)


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    if not body:
        raise bad_request("the request body is empty; send a JSON object")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH.search(text)
        param = match.group(1) if match and match.group(1) else None
        raise bad_request(text, param) from exc
    except msgspec.DecodeError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from exc


def _content_chars(content: str | list[Any] | None) -> int:
    if isinstance(content, str):
        return len(content)
    if content is None:
        return 0
    # Content parts: [{"type": "text", "text": ...}, ...]
    return sum(len(p.get("text") or "") for p in content if isinstance(p, dict))


def _view(num_prompt_tokens: int, max_tokens: int | None, tenant: str) -> RequestView:
    return RequestView(
        num_prompt_tokens=num_prompt_tokens,
        num_blocks=num_prompt_tokens // 16,
        tenant=tenant,
        max_tokens=max_tokens or 0,
    )


def parse_chat(body: bytes, tenant: str) -> RouteInfo:
    req: _ChatFields = _decode(_chat_decoder, body)
    if not req.messages:
        raise bad_request("`messages` must hold at least one message", "messages")
    chars = sum(_content_chars(m.content) for m in req.messages)
    max_tokens = req.max_completion_tokens or req.max_tokens
    view = _view(max(1, chars // CHARS_PER_TOKEN), max_tokens, tenant)
    return RouteInfo(model=req.model, stream=bool(req.stream), view=view)


def parse_completion(body: bytes, tenant: str) -> RouteInfo:
    req: _CompletionFields = _decode(_completion_decoder, body)
    prompt = req.prompt
    if isinstance(prompt, str):
        tokens = len(prompt) // CHARS_PER_TOKEN
    elif prompt and all(isinstance(t, int) for t in prompt):
        tokens = len(prompt)  # token ids
    elif prompt and all(isinstance(t, str) for t in prompt):
        tokens = sum(len(t) for t in prompt) // CHARS_PER_TOKEN
    else:
        raise bad_request("`prompt` must be a string, a list of strings or of token ids", "prompt")
    return RouteInfo(
        model=req.model, stream=bool(req.stream), view=_view(max(1, tokens), req.max_tokens, tenant)
    )


def unknown_model(model: str) -> ApiError:
    return ApiError(
        404, f"the model `{model}` does not exist", param="model", code="model_not_found"
    )
