"""Admin endpoints: semantic cache stats and clearing. Authenticated by `gateway.admin_keys`.

With no admin key configured the endpoints answer 404 (they do not exist on that gateway), so an
open gateway never exposes a way to wipe its cache; a missing or wrong key is a 401.
"""

from __future__ import annotations

import hmac

import orjson
from aiohttp import web

from gateway import keys
from gateway.errors import ApiError


def _check_admin(request: web.Request) -> None:
    admin_keys = request.app[keys.CONFIG].admin_keys
    if not admin_keys:
        raise ApiError(404, "no admin endpoints on this gateway", code="not_found")
    scheme, _, key = (request.headers.get("Authorization") or "").partition(" ")
    key = key.strip()
    ok = scheme.lower() == "bearer" and any(hmac.compare_digest(key, k) for k in admin_keys)
    if not ok:
        raise ApiError(401, "missing or invalid admin key", code="invalid_api_key")


def _stage(request: web.Request):  # noqa: ANN202 - SemanticStage
    stage = request.app.get(keys.SEMANTIC)
    if stage is None:
        raise ApiError(404, "the semantic cache is disabled", code="cache_disabled")
    return stage


async def cache_stats(request: web.Request) -> web.Response:
    _check_admin(request)
    return web.json_response(
        _stage(request).cache.stats(), dumps=lambda o: orjson.dumps(o).decode()
    )


async def cache_clear(request: web.Request) -> web.Response:
    _check_admin(request)
    stage = _stage(request)
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"invalid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "body must be an object", code="invalid_request")
    tenant, category = body.get("tenant"), body.get("category")
    for name, value in (("tenant", tenant), ("category", category)):
        if value is not None and not isinstance(value, str):
            raise ApiError(400, f"`{name}` must be a string", param=name, code="invalid_value")
    if tenant is None and category is None:
        raise ApiError(400, "give `tenant`, `category` or both", code="missing_selector")
    removed = await stage.cache.clear(tenant=tenant, category=category)
    return web.json_response({"removed": removed, "tenant": tenant, "category": category})
