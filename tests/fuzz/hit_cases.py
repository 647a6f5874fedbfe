"""Cases aimed at the semantic cache's hit path: repeats of a request the cache has stored, each
with one odd twist (stream options, unknown fields the validator skips, duplicated keys, request
headers). The plain repeat must be a hit (`x-kvgate-cache: hit`), or the cases test nothing."""

from __future__ import annotations

from collections.abc import Iterator

from .http_cases import CHAT, COMPLETIONS, DEADLINE_STATUSES, Case, Target, dumps

QUESTION = "How do I reverse a string in Python?"
# The sim worker emits words; stopping at the first space gives a complete ("stop") reply,
# which the cache stores (a reply cut by max_tokens is never stored).
STOP = [" "]


def stored_bodies(t: Target) -> dict[str, dict[str, object]]:
    """The requests whose replies the cache stores before the hit cases run."""
    common: dict[str, object] = {"model": t.model, "max_tokens": 16, "stop": STOP, "temperature": 0}
    return {
        CHAT: common | {"messages": [{"role": "user", "content": QUESTION}]},
        COMPLETIONS: common | {"prompt": QUESTION},
    }


def hit_cases(t: Target) -> Iterator[Case]:
    for path, stored in stored_bodies(t).items():
        name = "chat" if path == CHAT else "completion"

        def case(what: str, body: bytes, name: str = name, path: str = path, **kw: object) -> Case:
            return Case(f"hit {name}: {what}", path, body, tags=("hit",), **kw)  # type: ignore[arg-type]

        yield case("plain repeat", dumps(stored))
        yield case("streamed", dumps(stored | {"stream": True}))
        options: dict[str, object] = {
            "usage": {"include_usage": True},
            "no usage": {"include_usage": False},
            "null": None,
            "empty": {},
            "usage as string": {"include_usage": "yes"},
            "usage as number": {"include_usage": 1},
            "list": [],
            "unknown key": {"x": 1},
        }
        for what, value in options.items():
            body = dumps(stored | {"stream": True, "stream_options": value})
            yield case(f"stream_options {what}", body)
        # Fields the validator does not know are skipped (OpenAI clients send many); whatever
        # reads the body after it must accept every body it accepted.
        odd = (b"1e999999", b"-1e400", b"1" + b"0" * 40, b"[" * 500 + b"]" * 500, b'"\\u0000"')
        for value in odd:
            for stream in (b"true", b"false"):
                body = (
                    dumps(stored)[:-1] + b', "stream": ' + stream + b', "x_extra": ' + value + b"}"
                )
                yield case(f"unknown field {value[:12]!r} stream={stream.decode()}", body)
        yield case(
            "duplicated stream key",
            dumps(stored)[:-1] + b', "stream": false, "stream": true}',
        )
        yield case("n=2", dumps(stored | {"n": 2}))
        yield case("max_tokens 1", dumps(stored | {"max_tokens": 1, "stream": True}))
        yield case("logprobs", dumps(stored | {"logprobs": True}))
        for value in ("no-cache", "no-store", "no-cache, no-store", "junk", ""):
            yield case(
                f"Cache-Control {value!r}",
                dumps(stored | {"stream": True}),
                headers=(("Content-Type", "application/json"), ("Cache-Control", value)),
            )
        for header, value in (
            ("x-kvgate-category", "code"),
            ("x-kvgate-category", "time_sensitive"),
            ("x-kvgate-turn", "5"),
            ("x-kvgate-cache-salt", "other"),
        ):
            yield case(
                f"{header} {value}",
                dumps(stored | {"stream": True}),
                headers=(("Content-Type", "application/json"), (header, value)),
            )
        # A malformed hint is refused whether the cache answers or a worker would (it was a 400
        # from the worker on a miss and ignored on a hit).
        for header, value in (
            ("x-kvgate-turn", "abc"),
            ("x-kvgate-turn", "-1"),
            ("x-kvgate-conversation", "1.5"),
            ("x-kvgate-conversation", "x"),
        ):
            yield case(
                f"{header} {value!r}",
                dumps(stored),
                allowed=frozenset({400}),
                headers=(("Content-Type", "application/json"), (header, value)),
            )
        yield case(
            "deadline 1 ms",
            dumps(stored),
            allowed=DEADLINE_STATUSES,
            headers=(("Content-Type", "application/json"), ("x-kvgate-deadline-ms", "1")),
        )
