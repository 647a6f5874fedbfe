"""Send a case to a real server and judge the reply against the rule of issue #2: an allowed
status, OpenAI's error shape on every refusal, a well-formed success, and a reply in bounded
time."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass

import httpx

from .http_cases import Case, Target

REPLY_BOUND_S = 15.0  # far above any honest reply here; a case that takes longer hangs
ERROR_KEYS = {"message", "type", "param", "code"}


@dataclass
class Outcome:
    status: int  # 0 = the connection closed without a reply
    content_type: str
    body: bytes
    elapsed_s: float
    failure: str = ""  # the client's own failure (timeout, reset), if any
    cache: str = ""  # the gateway's `x-kvgate-cache` header: hit, miss, bypass ("" = none)


async def send(http: httpx.AsyncClient, url: str, case: Case, target: Target) -> Outcome:
    started = time.monotonic()
    try:
        async with asyncio.timeout(REPLY_BOUND_S):
            if case.raw is not None:
                out = await _send_raw(url, case)
            else:
                out = await _send_http(http, url, case, target)
    except TimeoutError:
        out = Outcome(0, "", b"", 0.0, failure=f"no reply within {REPLY_BOUND_S} s")
    except httpx.HTTPError as exc:
        out = Outcome(0, "", b"", 0.0, failure=f"{type(exc).__name__}: {exc}")
    out.elapsed_s = time.monotonic() - started
    return out


async def _send_http(http: httpx.AsyncClient, url: str, case: Case, target: Target) -> Outcome:
    headers = list(case.headers)
    if case.auth and target.auth is not None:
        headers.append(("Authorization", target.auth))
    response = await http.request(case.method, url + case.path, content=case.body, headers=headers)
    content_type = response.headers.get("Content-Type", "")
    cache = response.headers.get("x-kvgate-cache", "")
    return Outcome(response.status_code, content_type, response.content, 0.0, cache=cache)


async def _send_raw(url: str, case: Case) -> Outcome:
    assert case.raw is not None
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(case.raw)
        await writer.drain()
        if "half_close" in case.tags:
            writer.write_eof()
        return await _read_response(reader)
    finally:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> Outcome:
    """The first response on the connection (Content-Length, chunked, or up to EOF)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return Outcome(0, "", b"", 0.0)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {
        k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
    }
    if "content-length" in fields:
        body = await reader.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readline()).strip() or b"0", 16):
            body += await reader.readexactly(size)
            await reader.readline()
    else:
        body = await reader.read()
    cache = fields.get("x-kvgate-cache", "")
    return Outcome(status, fields.get("content-type", ""), body, 0.0, cache=cache)


def judge(case: Case, out: Outcome) -> str | None:
    """What is wrong with `out` as the reply to `case`; None when it keeps the rule."""
    if out.failure:
        return out.failure
    if out.status not in case.allowed:
        return f"status {out.status} not in {sorted(case.allowed)}: {out.body[:300]!r}"
    if out.status >= 400 and case.json_error:
        return _error_shape(out)
    if out.status == 200 and case.method != "HEAD":
        return _success_shape(out)
    return None


def _error_shape(out: Outcome) -> str | None:
    try:
        error = json.loads(out.body)["error"]
    except (ValueError, KeyError, TypeError):
        return f"status {out.status} without OpenAI's error JSON: {out.body[:300]!r}"
    if not isinstance(error, dict) or not ERROR_KEYS <= set(error):
        return f"error without {sorted(ERROR_KEYS)}: {out.body[:300]!r}"
    if not isinstance(error["message"], str) or not error["message"].strip():
        return f"error with an empty message: {out.body[:300]!r}"
    return None


_DATA = re.compile(rb"^data: ?(.*)$", re.MULTILINE)


def _success_shape(out: Outcome) -> str | None:
    if out.content_type.startswith("text/event-stream"):
        events = _DATA.findall(out.body)
        if not events or events[-1].strip() != b"[DONE]":
            return f"stream does not end with [DONE]: {out.body[-300:]!r}"
        for event in events[:-1]:
            chunk = json.loads(event)
            if "error" in chunk:
                return f"stream ended in an error event: {event[:300]!r}"
        return None
    if out.content_type.startswith("application/json"):
        try:
            json.loads(out.body)
        except ValueError:
            return f"200 whose body is not JSON: {out.body[:300]!r}"
    return None


def count_5xx(metrics_text: str) -> dict[str, float]:
    """`kvgate_requests_total` by 5xx status, from a gateway's /metrics."""
    counts: dict[str, float] = {}
    for match in re.finditer(
        r'^kvgate_requests_total\{[^}]*status="(5\d\d)"[^}]*\} (\S+)$', metrics_text, re.MULTILINE
    ):
        counts[match.group(1)] = counts.get(match.group(1), 0.0) + float(match.group(2))
    return counts
