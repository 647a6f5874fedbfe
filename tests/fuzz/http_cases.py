"""A seeded generator of bad and odd HTTP requests for the OpenAI endpoints (and the admin ones).

Every case is plain data: the bytes to send and the statuses that are right for it, so a failing
case prints as something a reader can paste into curl (or a socket) to reproduce. The same seed
gives the same cases in the same order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"

# What a client can cause with a bad body: a refusal, or (for input that is in fact valid) 200.
BODY_STATUSES = frozenset({200, 400, 404, 413, 422})
# A deadline header may also make the gateway refuse at once (504) or find no slot in time (503).
DEADLINE_STATUSES = BODY_STATUSES | {503, 504}

# Values of every JSON type, and numbers out of range: NaN / Infinity are sent as the bare
# literals Python's json module writes (not valid JSON, a common client bug).
ODD_VALUES: tuple[object, ...] = (
    None,
    True,
    False,
    "",
    "x",
    "\x00",
    0,
    -1,
    1,
    2.5,
    -0.5,
    10**30,
    -(10**30),
    2**63,
    2**64,
    10**400,
    1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    [],
    ["x"],
    [1, "a"],
    [[1]],
    {},
    {"a": 1},
)

SAMPLING_FIELDS = (
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "user",
    "tools",
    "tool_choice",
    "response_format",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
)
CHAT_FIELDS = (*SAMPLING_FIELDS, "messages", "max_completion_tokens")
COMPLETION_FIELDS = (*SAMPLING_FIELDS, "prompt", "echo", "suffix", "best_of")
MESSAGE_FIELDS = ("role", "content", "name")


@dataclass(frozen=True)
class Target:
    """What the generator needs to know of the server under test."""

    model: str
    auth: str | None = None  # a valid `Authorization` value; None = the server is open
    admin_key: str | None = None  # the gateway's admin key; None = no admin cases
    vocab_size: int | None = None  # token ids at or above it are out of the vocabulary


@dataclass(frozen=True)
class Case:
    """One request. `raw` (the whole request as bytes, sent on a socket as it is) is for what a
    normal client cannot send: a lying Content-Length, bytes that are not UTF-8 in a header."""

    name: str
    path: str = CHAT
    body: bytes | None = None
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    raw: bytes | None = None
    allowed: frozenset[int] = BODY_STATUSES
    # A non-2xx reply must be OpenAI's error JSON. False only where aiohttp's own HTTP parser
    # answers before any handler runs (a request it cannot frame); see `framing_cases`.
    json_error: bool = True
    auth: bool = True  # send the target's valid Authorization header (when it has one)
    tags: tuple[str, ...] = field(default=())

    def show(self) -> str:
        shown = (self.raw if self.raw is not None else self.body) or b""
        text = repr(shown[:300]) + ("…" if len(shown) > 300 else "")
        return f"[{self.name}] {self.method} {self.path} headers={list(self.headers)} body={text}"


def dumps(obj: object) -> bytes:
    # allow_nan writes NaN / Infinity literals; ints of any size are written in full.
    return json.dumps(obj, allow_nan=True).encode()


def chat_body(model: str, **fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": "say hi"}],
        "max_tokens": 3,
    }
    return body | fields


def completion_body(model: str, **fields: object) -> dict[str, object]:
    return {"model": model, "prompt": "say hi", "max_tokens": 3} | fields


def field_cases(rng: random.Random, t: Target, per_endpoint: int) -> Iterator[Case]:
    """Each field of both bodies (and of a chat message) set to an odd value, sampled."""
    combos: list[tuple[str, str, object]] = []
    combos += [(CHAT, f, v) for f in CHAT_FIELDS for v in ODD_VALUES]
    combos += [(CHAT, "messages[0]." + f, v) for f in MESSAGE_FIELDS for v in ODD_VALUES]
    combos += [(COMPLETIONS, f, v) for f in COMPLETION_FIELDS for v in ODD_VALUES]
    chat = [c for c in combos if c[0] == CHAT]
    completion = [c for c in combos if c[0] == COMPLETIONS]
    picked = rng.sample(chat, per_endpoint) + rng.sample(completion, per_endpoint)
    for path, name, value in picked:
        body = chat_body(t.model) if path == CHAT else completion_body(t.model)
        if rng.random() < 0.4:  # the streamed path refuses (or serves) alike
            body["stream"] = True
        if name.startswith("messages[0]."):
            body["messages"] = [{"role": "user", "content": "hi", name.split(".")[1]: value}]
        else:
            body[name] = value
        yield Case(f"field {name}={value!r:.40}", path, dumps(body))


def value_cases(t: Target) -> Iterator[Case]:
    """Values of the right type that are out of range or odd, one rule each."""
    m = t.model
    huge = 10**30
    for name in ("max_tokens", "max_completion_tokens"):
        for v in (0, -1, -(2**63), 1, huge, 10**400, 2**31, 10**6):
            yield Case(f"chat {name}={v}", CHAT, dumps(chat_body(m, **{name: v})))
            body = chat_body(m, stream=True, **{name: v})
            yield Case(f"chat {name}={v} (stream)", CHAT, dumps(body))
    for v in (0, -5, huge, 10**6):
        yield Case(
            f"completion max_tokens={v}", COMPLETIONS, dumps(completion_body(m, max_tokens=v))
        )
    yield Case("both max names", CHAT, dumps(chat_body(m, max_tokens=-1, max_completion_tokens=2)))
    for n in (0, 2, 5, -1, huge):
        yield Case(f"n={n}", CHAT, dumps(chat_body(m, n=n)))
        yield Case(f"completion n={n}", COMPLETIONS, dumps(completion_body(m, n=n)))
    for seed in (-1, 0, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, huge, -huge):
        for temp in (0.0, 0.7):
            yield Case(
                f"seed={seed} t={temp}", CHAT, dumps(chat_body(m, seed=seed, temperature=temp))
            )
    for k in (-2, -1, 0, 1, 10**9, huge, 10**400):
        yield Case(f"top_k={k}", CHAT, dumps(chat_body(m, top_k=k, temperature=0.5)))
    for v in (-0.1, 0.0, 2.0, 2.01, 1e-300, 5e-324):
        yield Case(f"temperature={v}", CHAT, dumps(chat_body(m, temperature=v)))
    for v in (0.0, 1e-9, 1.0, 1.5, -1.0):
        yield Case(f"top_p={v}", CHAT, dumps(chat_body(m, top_p=v, temperature=1.0)))
    stops: dict[str, object] = {
        "empty string": "",
        "empty list": [],
        "list of empties": ["", "", ""],
        "16 stops": [f"s{i}" for i in range(16)],
        "17 stops": [f"s{i}" for i in range(17)],
        "200 stops": ["z"] * 200,
        "long stop": "y" * 20_000,
        "16 long stops": ["w" * 10_000 + str(i) for i in range(16)],
        "stop NUL": "\x00",
        "stop newline": "\n",
        "stop non-ascii": "é😀",
    }
    for what, stop in stops.items():
        yield Case(f"stop {what}", CHAT, dumps(chat_body(m, stop=stop)))
        yield Case(f"completion stop {what}", COMPLETIONS, dumps(completion_body(m, stop=stop)))
    yield Case(
        "stream_options without stream",
        CHAT,
        dumps(chat_body(m, stream_options={"include_usage": True})),
    )
    yield Case(
        "stream with usage",
        CHAT,
        dumps(chat_body(m, stream=True, stream_options={"include_usage": True})),
    )
    yield Case(
        "stream_options unknown key",
        CHAT,
        dumps(chat_body(m, stream=True, stream_options={"x": 1})),
    )
    yield Case(
        "stream_options null",
        COMPLETIONS,
        dumps(completion_body(m, stream=True, stream_options=None)),
    )


def message_cases(t: Target) -> Iterator[Case]:
    m = t.model
    msgs: dict[str, object] = {
        "empty messages": [],
        "messages null": None,
        "message not an object": ["hi"],
        "message missing role": [{"content": "hi"}],
        "unknown role": [{"role": "wizard", "content": "hi"}],
        "role empty": [{"role": "", "content": "hi"}],
        "role USER": [{"role": "USER", "content": "hi"}],
        "only system": [{"role": "system", "content": "be brief"}],
        "only assistant": [{"role": "assistant", "content": "hello"}],
        "tool role": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}],
        "content null": [{"role": "user", "content": None}],
        "content empty": [{"role": "user", "content": ""}],
        "content number": [{"role": "user", "content": 5}],
        "parts empty list": [{"role": "user", "content": []}],
        "part unknown type": [{"role": "user", "content": [{"type": "video", "text": "x"}]}],
        "part image": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
        ],
        "part missing text": [{"role": "user", "content": [{"type": "text"}]}],
        "part missing type": [{"role": "user", "content": [{"text": "hi"}]}],
        "part text null": [{"role": "user", "content": [{"type": "text", "text": None}]}],
        "part not an object": [{"role": "user", "content": ["hi"]}],
        "parts nested": [{"role": "user", "content": [[{"type": "text", "text": "x"}]]}],
        "NUL in text": [{"role": "user", "content": "a\x00b\x00"}],
        "only NULs": [{"role": "user", "content": "\x00" * 64}],
        "non-BMP text": [{"role": "user", "content": "😀" * 50}],
        "RTL and combining": [{"role": "user", "content": "\u202eabc\u0301\u200d"}],
        "name odd": [{"role": "user", "content": "hi", "name": "\x00" * 3}],
        "many messages": [{"role": "user", "content": "m"}] * 2000,
        "long text": [{"role": "user", "content": "long " * 20_000}],
        "developer role": [{"role": "developer", "content": "d"}, {"role": "user", "content": "u"}],
        "long turns": [
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " * 900}
            for i in range(7)
        ],
        "system then user turns": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
    }
    for what, messages in msgs.items():
        yield Case(what, CHAT, dumps(chat_body(m, messages=messages)))
        yield Case(what + " (stream)", CHAT, dumps(chat_body(m, messages=messages, stream=True)))


def prompt_cases(t: Target) -> Iterator[Case]:
    vocab = t.vocab_size or 50_000
    prompts: dict[str, object] = {
        "nested lists": [[1, 2], [3]],
        "list of two strings": ["a", "b"],
        "one string in a list": ["hi"],
        "empty list": [],
        "empty string": "",
        "list with empty string": [""],
        "mixed str and int": [1, "a"],
        "mixed int and str": ["a", 1],
        "bools": [True, False],
        "floats": [1.0, 2.0],
        "negative id": [1, -1],
        "id at vocab": [1, vocab],
        "id huge": [1, 2**40],
        "id 2**31": [2**31],
        "id 10**30": [10**30],
        "id 10**400": [10**400],
        "ids ok": [1, 2, 3, 4],
        "many ids": [1] * 50_000,
        "null in list": [1, None],
        "object": {"text": "hi"},
        "NUL text": "\x00\x00",
        "long text": "p" * 200_000,
    }
    for what, prompt in prompts.items():
        body = completion_body(t.model, prompt=prompt)
        yield Case(f"prompt {what}", COMPLETIONS, dumps(body))


def byte_cases(t: Target) -> Iterator[Case]:
    """Bodies that are not JSON, not one JSON object, or not UTF-8."""
    good = dumps(chat_body(t.model))
    msg = b'{"role": "user", "content": "%s"}'
    bodies: dict[str, bytes] = {
        "empty body": b"",
        "whitespace": b"  \n ",
        "json null": b"null",
        "json list": b"[]",
        "json string": b'"hi"',
        "json number": b"1",
        "trailing garbage": good + b"garbage",
        "trailing second object": good + good,
        "trailing NUL": good + b"\x00",
        "leading BOM": b"\xef\xbb\xbf" + good,
        "truncated": good[:-5],
        "not UTF-8 in a string": good.replace(b"say hi", b"say \xff\xfe"),
        "not UTF-8 outside strings": b"\xff" + good,
        "overlong UTF-8": good.replace(b"say hi", b"\xc0\xaf"),
        "encoded surrogate": good.replace(b"say hi", b"\xed\xa0\x80"),
        "escaped lone high surrogate": good.replace(b"say hi", b"a\\ud800b"),
        "escaped lone low surrogate": good.replace(b"say hi", b"\\udc00"),
        "escaped pair": good.replace(b"say hi", b"\\ud83d\\ude00"),
        "escaped NUL": good.replace(b"say hi", b"\\u0000"),
        "bad escape": good.replace(b"say hi", b"\\x41"),
        "duplicated model key": b'{"model": "nope", "model": "%s", "messages": [%s]}'
        % (t.model.encode(), msg % b"hi"),
        "duplicated messages key": b'{"model": "%s", "messages": [], "messages": [%s]}'
        % (t.model.encode(), msg % b"hi"),
        "single quotes": good.replace(b'"', b"'"),
        "comments": b"/* c */" + good,
        "deep nesting": b"[" * 5000 + b"]" * 5000,
        "deep nesting in a field": good[:-1] + b', "user": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        "NaN literal": good[:-1] + b', "temperature": NaN}',
        "Infinity literal": good[:-1] + b', "top_p": Infinity}',
        "huge exponent": good[:-1] + b', "temperature": 1e999999}',
        "leading zeros": good[:-1] + b', "seed": 0001}',
        "plus sign": good[:-1] + b', "seed": +1}',
    }
    for what, body in bodies.items():
        yield Case(what, CHAT, body)
    yield Case("completion empty body", COMPLETIONS, b"")
    yield Case("completion trailing garbage", COMPLETIONS, dumps(completion_body(t.model)) + b"}")
