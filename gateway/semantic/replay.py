"""Serve a cached reply: an OpenAI response body, or an SSE stream of several chunks.

Independent of aiohttp: the gateway writes the bytes. Usage reports zero new tokens (nothing was
generated); the caller passes the request's prompt token count if it knows it.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from gateway.semantic.cache import CachedReply, CacheResult

Kind = Literal["chat", "completion"]
_PIECE = re.compile(r"\S+\s*|\s+")


def cache_headers(result: CacheResult) -> dict[str, str]:
    headers = {"x-kvgate-cache": result.status}
    if result.similarity is not None:
        headers["x-kvgate-similarity"] = f"{result.similarity:.4f}"
    return headers


def _usage(prompt_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 0,
        "total_tokens": prompt_tokens,
        "prompt_tokens_details": {"cached_tokens": prompt_tokens},
    }


def response_body(
    reply: CachedReply,
    *,
    kind: Kind,
    request_id: str,
    created: int,
    model: str,
    prompt_tokens: int = 0,
) -> dict[str, Any]:
    if kind == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": reply.text},
            "finish_reason": reply.finish_reason,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": reply.text, "finish_reason": reply.finish_reason}
        obj = "text_completion"
    return {
        "id": request_id,
        "object": obj,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": _usage(prompt_tokens),
    }


def split_text(text: str, pieces: int) -> list[str]:
    """Cut `text` into about `pieces` parts at word boundaries (at least one part)."""
    words = _PIECE.findall(text) or [text]
    per = max(1, -(-len(words) // max(1, pieces)))
    return ["".join(words[i : i + per]) for i in range(0, len(words), per)]


def sse_chunks(
    reply: CachedReply,
    *,
    kind: Kind,
    request_id: str,
    created: int,
    model: str,
    prompt_tokens: int = 0,
    pieces: int = 8,
    include_usage: bool = True,
) -> list[bytes]:
    """The full SSE byte sequence: a role chunk (chat), content chunks, a finish chunk,
    a usage chunk (when asked), then `data: [DONE]`."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    base = {"id": request_id, "object": obj, "created": created, "model": model}

    def event(choice: dict[str, Any] | None, usage: dict[str, Any] | None = None) -> bytes:
        body = dict(base, choices=[choice] if choice is not None else [])
        if usage is not None:
            body["usage"] = usage
        return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"

    def choice(text: str, finish: str | None, role: bool = False) -> dict[str, Any]:
        if kind == "chat":
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text or not role:
                delta["content"] = text
            return {"index": 0, "delta": delta, "finish_reason": finish}
        return {"index": 0, "text": text, "finish_reason": finish}

    out: list[bytes] = []
    if kind == "chat":
        out.append(event(choice("", None, role=True)))
    out.extend(event(choice(piece, None)) for piece in split_text(reply.text, pieces))
    out.append(event(choice("", reply.finish_reason)))
    if include_usage:
        out.append(event(None, _usage(prompt_tokens)))
    out.append(b"data: [DONE]\n\n")
    return out
