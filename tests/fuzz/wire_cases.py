"""Cases about the HTTP layer rather than the JSON body: headers (ours, Content-Type, auth,
Cache-Control, long ones), framing (a lying Content-Length, chunked bodies, bytes that are not
UTF-8 in headers), routes and methods, and the gateway's admin endpoints."""

from __future__ import annotations

from collections.abc import Iterator

from .http_cases import (
    BODY_STATUSES,
    CHAT,
    COMPLETIONS,
    DEADLINE_STATUSES,
    Case,
    Target,
    chat_body,
    dumps,
)

JSON = ("Content-Type", "application/json")
# aiohttp's HTTP parser refuses what it cannot frame with a plain-text 400 (or closes) before
# any handler runs; those cases may not get OpenAI's shape (gateway/server.py says why).
FRAMING_STATUSES = frozenset({400, 413, 431, 0})
NO_REPLY = 0  # the server closed the connection without a reply (status 0 in an outcome)

ODD_INTS = ("", " ", "-1", "abc", "1e3", "1.5", "0x10", " 3", "99999999999999999999999", "9" * 5000)


def header_cases(t: Target) -> Iterator[Case]:
    good = dumps(chat_body(t.model))
    ours: dict[str, tuple[str, ...]] = {
        "x-kvgate-category": ("", " ", "code", "CODE", " Chat ", "nope", "code,chat", "c" * 9000),
        "x-kvgate-turn": (*ODD_INTS, "0", "3"),
        "x-kvgate-conversation": (*ODD_INTS, "0", "-99", str(2**70)),
        "x-kvgate-cache-salt": ("", "salt", "s" * 20_000, "a b\tc"),
        "Cache-Control": (
            "no-cache",
            "no-store",
            "NO-STORE",
            "no-cache, no-store",
            "max-age=abc",
            "",
            ",,,",
            'no-cache="x"',
            "x" * 20_000,
        ),
    }
    completion = dumps({"model": t.model, "prompt": "hi", "max_tokens": 2})
    for name, values in ours.items():
        for value in values:
            for path, body in ((CHAT, good), (COMPLETIONS, completion)):
                label = f"{name}: {value[:30]!r}"
                if value != value.strip():  # h11 will not send these: on a socket
                    raw = raw_post(t, path, body, [(name.encode(), value.encode())])
                    yield Case(label, path, body, raw=raw)
                else:
                    yield Case(label, path, body, headers=(JSON, (name, value)))
    for value in (
        "0",
        "-1",
        "nan",
        "inf",
        "-inf",
        "1e400",
        "0.0001",
        "1",
        "abc",
        "",
        "1e3",
        "86400001",
        "86400000",
        "100000",
        "9" * 400,
    ):
        yield Case(
            f"deadline {value[:20]!r}",
            CHAT,
            good,
            headers=(JSON, ("x-kvgate-deadline-ms", value)),
            allowed=DEADLINE_STATUSES,
        )
    content_types = (
        "",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
        "multipart/form-data; boundary=x",
        "???",
    )
    for value in content_types:
        headers = (("Content-Type", value),) if value else ()
        yield Case(f"Content-Type {value!r}", CHAT, good, headers=headers)
    for value in ("gzip", "br", "deflate", "identity", "zz-unknown", "gzip, gzip"):
        yield Case(
            f"Content-Encoding {value}", CHAT, good, headers=(JSON, ("Content-Encoding", value))
        )
    yield Case("long header 30k", CHAT, good, headers=(JSON, ("X-Long", "v" * 30_000)))
    many = tuple((f"X-H{i}", "v") for i in range(300))
    yield Case(
        "300 headers", CHAT, good, headers=(JSON, *many), allowed=FRAMING_STATUSES, json_error=False
    )
    yield Case(
        "header over 32 KiB",
        CHAT,
        good,
        headers=(JSON, ("X-Long", "v" * 40_000)),
        allowed=FRAMING_STATUSES,
        json_error=False,
    )
    auth_statuses = BODY_STATUSES | {401}
    keyed = t.auth is not None
    for value in ("", "Bearer", "Basic abc", "Bearer wrong", "Bearer " + "k" * 30_000):
        yield Case(
            f"Authorization {value[:20]!r}",
            CHAT,
            good,
            headers=(JSON, ("Authorization", value)),
            auth=False,
            allowed=auth_statuses if keyed else BODY_STATUSES,
        )
    raw = raw_post(t, CHAT, good, [(b"Authorization", b"Bearer ")], auth=False)
    yield Case(
        "Authorization 'Bearer '",
        CHAT,
        good,
        raw=raw,
        allowed=auth_statuses if keyed else BODY_STATUSES,
    )
    yield Case("no Authorization", CHAT, good, auth=False, allowed=auth_statuses)
    if keyed:
        assert t.auth is not None
        key = t.auth.partition(" ")[2]
        for value in (f"bearer {key}", f"BEARER   {key}  ", f"Bearer\t{key}"):
            raw = raw_post(t, CHAT, good, [(b"Authorization", value.encode())], auth=False)
            yield Case(f"Authorization {value[:12]!r}…", CHAT, good, raw=raw, allowed=auth_statuses)


def _raw(head: str, body: bytes = b"", auth: str | None = None, close: bool = True) -> bytes:
    lines = head.rstrip("\r\n").split("\n")
    if auth is not None:
        lines.insert(1, f"Authorization: {auth}")
    lines.append("Host: 127.0.0.1")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def raw_post(
    t: Target, path: str, body: bytes, extra: list[tuple[bytes, bytes]], auth: bool = True
) -> bytes:
    """A POST of `body` with `extra` header lines written as given (any bytes)."""
    head = _raw(
        f"POST {path} HTTP/1.1\nContent-Type: application/json\nContent-Length: {len(body)}",
        b"",
        t.auth if auth else None,
    )
    return head[:-2] + b"".join(k + b": " + v + b"\r\n" for k, v in extra) + b"\r\n" + body


def framing_cases(t: Target) -> Iterator[Case]:
    good = dumps(chat_body(t.model))
    n = len(good)

    def raw(
        name: str,
        head: str,
        body: bytes,
        allowed: frozenset[int],
        json_error: bool = True,
        tags: tuple[str, ...] = (),
        close: bool = True,
    ) -> Case:
        return Case(
            name,
            CHAT,
            body,
            raw=_raw(head, body, t.auth, close),
            allowed=allowed,
            json_error=json_error,
            tags=tags,
        )

    post = f"POST {CHAT} HTTP/1.1\nContent-Type: application/json"
    yield raw("valid raw", f"{post}\nContent-Length: {n}", good, frozenset({200}))
    # Longer than the body, then the client half-closes: the body can never be complete.
    yield raw(
        "Content-Length too long + EOF",
        f"{post}\nContent-Length: {n + 50}",
        good,
        frozenset({400, NO_REPLY}),
        tags=("half_close",),
    )
    # Shorter: the JSON is cut; the rest of the bytes are the next (garbage) request.
    # Shorter: the JSON is cut and the rest of the bytes are the next request. aiohttp's parser
    # reads both at once and refuses the garbage (plain text) before the first is handled.
    yield raw(
        "Content-Length too short",
        f"{post}\nContent-Length: {n - 7}",
        good,
        FRAMING_STATUSES,
        False,
        close=False,
    )
    yield raw(
        "Content-Length 0", f"{post}\nContent-Length: 0", good, FRAMING_STATUSES, False, close=False
    )
    yield raw(
        "Content-Length negative", f"{post}\nContent-Length: -1", good, FRAMING_STATUSES, False
    )
    yield raw(
        "Content-Length not a number", f"{post}\nContent-Length: ab", good, FRAMING_STATUSES, False
    )
    yield raw(
        "two Content-Lengths",
        f"{post}\nContent-Length: {n}\nContent-Length: {n + 1}",
        good,
        FRAMING_STATUSES,
        False,
    )
    chunked = b"%x\r\n%b\r\n0\r\n\r\n" % (n, good)
    yield raw("chunked", f"{post}\nTransfer-Encoding: chunked", chunked, frozenset({200}))
    yield raw(
        "chunked bad size",
        f"{post}\nTransfer-Encoding: chunked",
        b"zz\r\n" + good,
        FRAMING_STATUSES,
        False,
    )
    yield raw(
        "chunked cut + EOF",
        f"{post}\nTransfer-Encoding: chunked",
        chunked[:-12],
        frozenset({400, NO_REPLY}),
        tags=("half_close",),
    )
    yield raw(
        "chunked and Content-Length",
        f"{post}\nContent-Length: {n}\nTransfer-Encoding: chunked",
        chunked,
        FRAMING_STATUSES | {200},
        False,
    )
    http10 = f"POST {CHAT} HTTP/1.0\nContent-Type: application/json"
    yield raw("HTTP/1.0 with length", f"{http10}\nContent-Length: {n}", good, frozenset({200}))
    # Its body ends at EOF; aiohttp takes a half-closed connection for a client that is gone.
    yield raw(
        "HTTP/1.0 without length",
        http10,
        good,
        frozenset({200, 400, NO_REPLY}),
        tags=("half_close",),
    )
    # Header values that are not ASCII: UTF-8, and bytes that are not UTF-8 at all.
    for name in (
        "x-kvgate-category",
        "x-kvgate-cache-salt",
        "x-kvgate-turn",
        "Cache-Control",
        "x-kvgate-deadline-ms",
        "x-kvgate-conversation",
    ):
        for value in (b"\xc3\xa9t\xc3\xa9", b"\xff\xfe", b"\x80abc"):
            request = raw_post(t, CHAT, good, [(name.encode(), value)])
            allowed = DEADLINE_STATUSES if "deadline" in name else BODY_STATUSES
            yield Case(f"{name}: raw {value!r}", CHAT, good, raw=request, allowed=allowed)
    if t.auth is not None:
        raw_auth = raw_post(t, CHAT, good, [(b"Authorization", b"Bearer \xff\xfe")], auth=False)
        yield Case("Authorization not UTF-8", CHAT, good, raw=raw_auth, allowed=frozenset({401}))


def route_cases(t: Target) -> Iterator[Case]:
    good = dumps(chat_body(t.model))
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        yield Case(f"{method} chat", CHAT, good, method=method, allowed=frozenset({404, 405}))
    for path in (
        "/v1/models",
        f"/v1/models/{t.model}",
        "/v1/models/nope",
        "/v1/models/a/b/c",
        "/v1/models/%00",
        "/v1/models/" + "m" * 5000,
        "/v1/models/..%2F..%2Fetc",
        "/nothing",
        "/v1",
        "/v2/chat/completions",
        "//v1/models",
        "/health",
        "/v1/chat/completions/x",
    ):
        yield Case(f"GET {path[:40]}", path, None, method="GET", allowed=frozenset({200, 404, 405}))
    for path in (
        "/stats",
        "/metrics",
        "/v1/chat%2Fcompletions",
        "/v1/models/%C3%A9",
        "/v1/chat/completions?stream=true&x=%00",
        "/" + "p" * 9000,
    ):
        yield Case(
            f"GET {path[:40]}",
            path,
            None,
            method="GET",
            allowed=FRAMING_STATUSES | {200, 404, 405, 414},
            json_error=len(path) < 8000,
        )
    yield Case("POST stats", "/stats", b"{}", allowed=frozenset({404, 405}))
    yield Case("POST kv_events", "/kv_events", b"{}", allowed=frozenset({404, 405}))
    yield Case("OPTIONS chat", CHAT, None, method="OPTIONS", allowed=frozenset({200, 404, 405}))
    yield Case("POST models", "/v1/models", good, allowed=frozenset({404, 405}))
    yield Case(
        "HEAD models",
        "/v1/models",
        None,
        method="HEAD",
        allowed=frozenset({200, 404, 405}),
        json_error=False,
    )


def admin_cases(t: Target) -> Iterator[Case]:
    if t.admin_key is None:
        return
    stats, clear = "/admin/semantic-cache", "/admin/semantic-cache/clear"
    admin = ("Authorization", f"Bearer {t.admin_key}")
    denied = frozenset({401})
    yield Case("admin stats, no key", stats, None, method="GET", auth=False, allowed=denied)
    yield Case("admin stats, api key", stats, None, method="GET", allowed=denied)
    yield Case(
        "admin stats, wrong key",
        stats,
        None,
        method="GET",
        auth=False,
        headers=(("Authorization", "Bearer nope"),),
        allowed=denied,
    )
    yield Case(
        "admin stats, key without scheme",
        stats,
        None,
        method="GET",
        auth=False,
        headers=(("Authorization", t.admin_key),),
        allowed=denied,
    )
    yield Case(
        "admin stats",
        stats,
        None,
        method="GET",
        auth=False,
        headers=(admin,),
        allowed=frozenset({200}),
    )
    yield Case("admin clear, no key", clear, b'{"tenant": "x"}', auth=False, allowed=denied)
    bodies: dict[str, bytes] = {
        "no body": b"",
        "null": b"null",
        "list": b"[]",
        "string": b'"x"',
        "tenant number": b'{"tenant": 1}',
        "category list": b'{"category": ["a"]}',
        "both null": b'{"tenant": null, "category": null}',
        "tenant": b'{"tenant": "nobody"}',
        "category unknown": b'{"category": "nope"}',
        "category empty": b'{"category": ""}',
        "bad JSON": b"{",
        "not UTF-8": b'{"tenant": "\xff"}',
        "lone surrogate": b'{"tenant": "\\ud800"}',
        "deep": b"[" * 3000 + b"]" * 3000,
        "NaN": b'{"tenant": NaN}',
        "trailing": b'{"tenant": "x"} x',
    }
    ok = frozenset({200, 400})
    for what, body in bodies.items():
        yield Case(
            f"admin clear {what}", clear, body, auth=False, headers=(JSON, admin), allowed=ok
        )
    yield Case(
        "admin clear GET",
        clear,
        None,
        method="GET",
        auth=False,
        headers=(admin,),
        allowed=frozenset({405}),
    )
    yield Case(
        "admin stats POST", stats, b"{}", auth=False, headers=(admin,), allowed=frozenset({405})
    )
    yield Case(
        "admin clear too large",
        clear,
        b'{"tenant": "' + b"t" * 2_000_000 + b'"}',
        auth=False,
        headers=(JSON, admin),
        allowed=frozenset({413}),
    )
