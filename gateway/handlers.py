"""HTTP handlers: parse → auth → route → relay → record, each step its own object.

Handlers reach the app's objects through the typed keys in `gateway.keys`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import cast

import msgspec
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from config.hint_headers import header_int
from config.protocol import (
    HEADER_CACHE_SALT,
    HEADER_CATEGORY,
    HEADER_CONVERSATION,
    HEADER_DEADLINE_MS,
    HEADER_TURN,
    UNREADABLE_BODY,
)
from gateway import keys
from gateway.errors import ApiError
from gateway.hit_context import may_serve_hit
from gateway.parse import RouteInfo, parse_chat, parse_completion, unknown_model
from gateway.relay import UpstreamCall
from gateway.semantic.replay import Kind
from gateway.verified_hit import predicted_body
from policies.semantic.categorizer import named_category

Parser = Callable[[bytes, str], RouteInfo]
# The parser's hints for the worker (config.protocol's x-kvgate-* headers) join these.
_JSON = {"Content-Type": "application/json"}
# Hints a client may give the worker itself; a client's turn/conversation win over the parser's.
_CLIENT_HINTS = (
    HEADER_CATEGORY,
    HEADER_CACHE_SALT,
    HEADER_DEADLINE_MS,
    HEADER_TURN,
    HEADER_CONVERSATION,
)


def _upstream_headers(request: web.Request, hints: dict[str, str]) -> dict[str, str]:
    given = {name: v for name in _CLIENT_HINTS if (v := request.headers.get(name))}
    if HEADER_CATEGORY in given:  # checked by `_check_category`: pass on its one spelling
        category = named_category(given.pop(HEADER_CATEGORY))
        if category:
            given[HEADER_CATEGORY] = category
    if not hints and not given:
        return _JSON
    return _JSON | hints | given


async def _read_body(request: web.Request, max_bytes: int, timeout_s: float) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, f"request body over {max_bytes} bytes", code="request_too_large")
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()  # aiohttp enforces client_max_size on chunked bodies
    except TimeoutError as exc:  # the rest may never come: end it and close after the reply
        request.content.feed_eof()
        message = f"the request body did not arrive within {timeout_s:g} s"
        raise ApiError(408, message, code="body_timeout", close=True) from exc
    # Cut short, not in its declared Content-Encoding, or its chunked framing broken (aiohttp's
    # pure-Python parser raises the framing error itself rather than a RequestPayloadError).
    except (RequestPayloadError, HttpProcessingError) as exc:
        # The rest of the body is not ours to read: end it here (so aiohttp does not try to
        # drain it after the reply) and close the connection after the reply.
        request.content.feed_eof()
        raise ApiError(400, UNREADABLE_BODY, code="unreadable_body", close=True) from exc


def _deadline_s(request: web.Request, arrival_s: float, max_ms: float) -> float | None:
    """When the first token is due (`x-kvgate-deadline-ms` after arrival), None without one."""
    given = request.headers.get(HEADER_DEADLINE_MS)
    if given is None:
        return None
    try:
        ms = float(given)
    except ValueError:
        ms = -1.0
    if not 0.0 < ms <= max_ms:  # also refuses nan and inf
        raise ApiError(
            400,
            f"{HEADER_DEADLINE_MS} must be a number of milliseconds in (0, {max_ms:g}], "
            f"not {given[:40]!r}",
            param=HEADER_DEADLINE_MS,
            code="invalid_deadline",
        )
    return arrival_s + ms / 1000.0


def _check_category(named: str | None, categories: Mapping[str, object]) -> None:
    """A `x-kvgate-category` header must name one of the configured categories, whether the
    semantic cache is on or not: anything else is a client's mistake, said at once, and never
    becomes a category of its own (in the cache's stats and metric labels, or in a worker's
    eviction classes, which take the hint too)."""
    name = named_category(named)
    if name is None or name in categories:
        return
    shown = named if len(named) <= 64 else named[:64] + "…"
    raise ApiError(
        400,
        f"{HEADER_CATEGORY} {shown!r} is not a category of this gateway; "
        f"use one of: {', '.join(sorted(categories))}",
        param=HEADER_CATEGORY,
        code="invalid_category",
    )


async def _proxy(
    request: web.Request, endpoint: str, path: str, parse: Parser
) -> web.StreamResponse:
    arrival_s = time.monotonic()
    app = request.app
    cfg = app[keys.CONFIG]
    tenant = app[keys.AUTH].tenant(request.headers.get("Authorization"))
    deadline_s = _deadline_s(request, arrival_s, cfg.dispatch.max_deadline_ms)
    _check_category(request.headers.get(HEADER_CATEGORY), cfg.semantic_cache.categories)
    # The client's own turn / conversation hints go to the worker, which refuses malformed ones:
    # refused here too, so a cache hit does not take what a miss would refuse.
    header_int(request.headers, HEADER_TURN, minimum=0)
    header_int(request.headers, HEADER_CONVERSATION)
    body = await _read_body(request, cfg.max_body_bytes, cfg.body_read_timeout_s)
    info = parse(body, tenant)
    if not app[keys.FLEET].serves(info.model):
        raise unknown_model(info.model)
    call = UpstreamCall(
        endpoint=endpoint,
        path=path,
        body=body,
        headers=_upstream_headers(request, info.hints),
        model=info.model,
        stream=info.stream,
        view=info.view,
        arrival_s=arrival_s,
        deadline_s=deadline_s,
    )
    relay = app[keys.RELAY]
    stage = app.get(keys.SEMANTIC)
    if stage is None:
        return await relay.forward(request, call)
    # After parse + auth: a bad or unauthenticated request never looks up. In parallel mode the
    # worker already has the request while the cache looks; nothing reaches the client until
    # the lookup has decided between the cache's reply and the worker's.
    kind = cast(Kind, "chat" if endpoint == "chat" else "completion")
    opening = asyncio.ensure_future(relay.open(call)) if stage.parallel else None
    try:
        with relay.cutter.guard():
            result = await stage.lookup(kind, body, tenant, request.headers)
    except BaseException:
        if opening is not None:
            relay.abandon(opening)
        raise
    if result.status == "hit":
        started = time.perf_counter()
        try:
            with relay.cutter.guard():
                serve, exact_tokens = await _hit_fits(app, call, info, kind)
        except BaseException:
            if opening is not None:
                relay.abandon(opening)
            raise
        if serve:
            if opening is not None:
                relay.abandon(opening)
            response = await stage.serve_hit(
                request,
                result,
                kind,
                body,
                info.model,
                info.stream,
                exact_tokens or info.view.num_prompt_tokens,
            )
            elapsed_s = time.perf_counter() - started
            app[keys.METRICS].observe(endpoint, response.status, elapsed_s, elapsed_s)
            return response
        # The gateway cannot tell whether a worker would take it: a worker answers instead.
        result = stage.send_on(result)
    elif result.status == "verify":
        assert result.reply is not None
        if opening is not None:  # sent without the prediction: it goes again, with it
            relay.abandon(opening)
            opening = None
        call = msgspec.structs.replace(call, body=predicted_body(body, kind, result.reply.text))
    call = msgspec.structs.replace(call, observer=stage.tap(result, kind))
    return await relay.forward(request, call, opening)


async def _hit_fits(
    app: web.Application, call: UpstreamCall, info: RouteInfo, kind: Kind
) -> tuple[bool, int | None]:
    """Whether a cache hit may be answered, and the prompt's exact length in the workers' tokens
    (None when the gateway lacks their tokenizer: the usage then takes the parser's guess, ~4
    characters a token). Raises the workers' 400 `context_length_exceeded` when every worker of
    the model would refuse the request (gateway/hit_context.py). The workers: the healthy ones,
    or, with none healthy (the cache still answers), every one that serves the model."""
    fleet, cache = app[keys.FLEET], app[keys.FLEET_CACHE]
    workers = fleet.candidates(info.model) or [w for w in fleet.workers if info.model in w.models]
    exact_tokens = await cache.prompt_tokens(call, workers)
    param = "messages" if kind == "chat" else "prompt"
    limits = cache.context_limits(workers)
    max_tokens = info.view.max_tokens or None
    return may_serve_hit(limits, exact_tokens, max_tokens, param=param), exact_tokens


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _proxy(request, "chat", "/v1/chat/completions", parse_chat)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _proxy(request, "completions", "/v1/completions", parse_completion)


def _model_card(model: str) -> dict[str, object]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "kvgate"}


async def models(request: web.Request) -> web.Response:
    app = request.app
    app[keys.AUTH].tenant(request.headers.get("Authorization"))
    data = [_model_card(m) for m in app[keys.FLEET].models()]
    return web.Response(
        body=orjson.dumps({"object": "list", "data": data}), content_type="application/json"
    )


async def model(request: web.Request) -> web.Response:
    """`GET /v1/models/{model}` (the SDK's `models.retrieve`): one served model, else 404."""
    app = request.app
    app[keys.AUTH].tenant(request.headers.get("Authorization"))
    name = request.match_info["model"]
    if name not in app[keys.FLEET].models():
        raise unknown_model(name)
    return web.Response(body=orjson.dumps(_model_card(name)), content_type="application/json")


async def health(request: web.Request) -> web.Response:
    workers = request.app[keys.FLEET].workers
    healthy = sum(1 for w in workers if w.healthy)
    body = {"status": "ok" if healthy else "degraded", "workers": len(workers), "healthy": healthy}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    m = request.app[keys.METRICS]
    return web.Response(body=m.render(), headers={"Content-Type": m.content_type})
