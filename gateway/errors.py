"""OpenAI-shaped errors: `ApiError` carries one, `error_middleware` turns anything into one.

Rule for handlers: raise `ApiError` for every refusal a client can cause; never let a client's
input reach the 500 branch (that branch exists for our own bugs, and logs them).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from config.protocol import ERROR_TYPES, RequestError, error_body

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Told (path, status, code) of every error reply (metrics).
ErrorHook = Callable[[str, int, str], None]


class ApiError(Exception):
    """An error reply; `type` defaults to OpenAI's for the status (`config.protocol`)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str | None = None,
        retry_after_s: int | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code or ERROR_TYPES.get(status, "error")
        self.type = type_
        self.retry_after_s = retry_after_s  # sent as `Retry-After` when set
        self.close = close  # `Connection: close`: the connection's byte stream is not usable

    def response(self) -> web.Response:
        body = error_body(
            self.status, self.message, param=self.param, code=self.code, type=self.type
        )
        headers = None if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}
        response = web.Response(
            status=self.status, body=body, content_type="application/json", headers=headers
        )
        if self.close:
            response.force_close()
        return response


def no_healthy_worker(model: str, detail: str = "") -> ApiError:
    message = f"no healthy worker serves model {model!r}" + (f" ({detail})" if detail else "")
    return ApiError(503, message, code="no_healthy_worker")


def gateway_busy(detail: str) -> ApiError:
    message = f"the gateway is at its connection limit: {detail}"
    return ApiError(503, message, code="gateway_busy", retry_after_s=1)


def gateway_shutting_down() -> ApiError:
    message = "the gateway is shutting down; retry (another gateway, or this one restarted)"
    return ApiError(503, message, code="gateway_shutting_down", retry_after_s=1)


def upstream_timeout(seconds: float) -> ApiError:
    return ApiError(504, f"the worker sent nothing for {seconds:g} s", code="upstream_timeout")


def upstream_failed(detail: str) -> ApiError:
    return ApiError(
        502, f"the worker failed: {detail}", type_="server_error", code="upstream_error"
    )


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
            on_error(request.path, exc.status, exc.code)
            return exc.response()
        except RequestError as exc:  # the wire structs' own refusals (bad JSON, bad field)
            on_error(request.path, exc.status, exc.code or "invalid_request")
            return web.Response(status=exc.status, body=exc.body(), content_type="application/json")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            err = from_http_exception(exc)
            on_error(request.path, err.status, err.code)
            return err.response()
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            on_error(request.path, 500, "internal_error")
            return ApiError(500, "internal error", code="internal_error").response()

    return middleware
