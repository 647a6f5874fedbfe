"""Reading the gateway → worker hint headers (`config.protocol.HEADER_*`) that carry integers.

Shared by the gateway (which checks a client's own hints before its cache may answer) and the
worker (which reads them), so a malformed hint is refused alike by both.
"""

from __future__ import annotations

from collections.abc import Mapping

from config.protocol import RequestError


def header_int(
    headers: Mapping[str, str],
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    """An integer hint header (`HEADER_TURN`, …): None when absent or empty, else its value;
    `RequestError(400, code="invalid_header")` naming the header when it is not an integer in
    range. The gateway checks the client's hints with it, the worker reads them with it, so a
    hint is refused alike whether a worker or the gateway's cache answers."""
    raw = headers.get(name)
    if raw is None or raw == "":
        return None
    try:
        value: int | None = int(raw)
    except ValueError:
        value = None
    if (
        value is None
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        least = "" if minimum is None else f" >= {minimum}"
        most = "" if maximum is None else f" <= {maximum}"
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        raise RequestError(
            400,
            f"header {name} must be an integer{least}{most}, got {shown!r}",
            param=name,
            code="invalid_header",
        )
    return value
