"""OpenAI-shaped errors: `ApiError` carries one, `error_middleware` turns anything into one.

Rule for handlers: raise `ApiError` for every refusal a client can cause; never let a client's
input reach the 500 branch (that branch exists for our own bugs, and logs them).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorHook = Callable[[str], None]  # told the `code` of every error reply (metrics)


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code or type_

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            body=error_body(self.message, self.type, self.param, self.code),
            content_type="application/json",
        )


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_request")


def no_healthy_worker(model: str, detail: str = "") -> ApiError:
    message = f"no healthy worker serves model {model!r}" + (f" ({detail})" if detail else "")
    return ApiError(503, message, "server_error", code="no_healthy_worker")


def upstream_timeout(seconds: float) -> ApiError:
    return ApiError(
        504, f"the worker sent nothing for {seconds:g} s", "timeout", code="upstream_timeout"
    )


def upstream_failed(detail: str) -> ApiError:
    return ApiError(502, f"the worker failed: {detail}", "server_error", code="upstream_error")


# aiohttp's own refusals (unknown route, wrong method, body too large) in OpenAI's shape.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def from_http_exception(exc: web.HTTPException) -> ApiError:
    if exc.status == 413:
        return ApiError(413, "request body too large", code="request_too_large")
    code = _HTTP_CODES.get(exc.status, "http_error")
    return ApiError(exc.status, exc.reason or code, code=code)


def error_middleware(
    on_error: ErrorHook,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            on_error(exc.code or exc.type)
            return exc.response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            err = from_http_exception(exc)
            on_error(err.code or err.type)
            return err.response()
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            on_error("internal_error")
            return ApiError(500, "internal error", "server_error", code="internal_error").response()

    return middleware
