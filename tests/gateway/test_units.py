"""The small parts alone: auth, request parsing, the fleet view's health bookkeeping."""

import pytest

from config.protocol import RequestError
from gateway.auth import Authenticator
from gateway.errors import ApiError
from gateway.fleet import FleetView
from gateway.metrics import GatewayMetrics
from gateway.parse import parse_chat, parse_completion


def test_open_gateway_is_anonymous():
    assert Authenticator({}).tenant(None) == ""


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_api_key"),
        ("Bearer nope", "invalid_api_key"),
        ("Basic sk-a", "invalid_api_key"),
    ],
)
def test_keys_refuse_with_401(header, code):
    with pytest.raises(ApiError) as info:
        Authenticator({"sk-a": "team-a"}).tenant(header)
    assert (info.value.status, info.value.code) == (401, code)


def test_key_maps_to_tenant():
    assert Authenticator({"sk-a": "team-a", "sk-b": "team-b"}).tenant("Bearer sk-b") == "team-b"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"", None),
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', None),
        (b'{"model": 5, "messages": []}', "model"),
        (b'{"model": "m", "messages": [{"content": "x"}]}', "messages[0]"),
        (b'{"model": "m", "messages": [{"role": "user", "content": 7}]}', "messages[0].content"),
        (b'{"model": "m", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
        (b'{"model": "m", "messages": []}', "messages"),
    ],
)
def test_bad_chat_bodies_are_400(body, param):
    with pytest.raises(RequestError) as info:
        parse_chat(body, "")
    assert info.value.status == 400
    assert info.value.param == param


def test_chat_fields_for_routing():
    info = parse_chat(
        b'{"model": "m", "stream": true, "max_tokens": 9, "temperature": 0.5,'
        b' "messages": [{"role": "user", "content": "' + b"x" * 400 + b'"}]}',
        "team-a",
    )
    assert (info.model, info.stream) == ("m", True)
    assert (info.view.num_prompt_tokens, info.view.max_tokens, info.view.tenant) == (
        100,
        9,
        "team-a",
    )


@pytest.mark.parametrize(
    ("prompt", "tokens"),
    [(b'"' + b"y" * 80 + b'"', 20), (b"[1, 2, 3]", 3), (b'["abcdefgh"]', 2)],
)
def test_completion_prompt_shapes(prompt, tokens):
    info = parse_completion(b'{"model": "m", "prompt": ' + prompt + b"}", "")
    assert info.view.num_prompt_tokens == tokens and not info.stream


def test_completion_prompt_of_mixed_list_is_400():
    with pytest.raises(RequestError) as info:
        parse_completion(b'{"model": "m", "prompt": [1, "a"]}', "")
    assert (info.value.status, info.value.param) == (400, "prompt")


def test_fleet_takes_failed_worker_out_and_puts_it_back():
    fleet = FleetView(["http://a", "http://b/"], GatewayMetrics(), unhealthy_after_failures=2)
    a, b = fleet.workers
    assert b.url == "http://b" and fleet.candidates("m") == []  # unknown until probed
    fleet.probe_ok(a, ["m"])
    fleet.probe_ok(b, ["m", "n"])
    assert fleet.models() == ["m", "n"]
    fleet.mark_failed(a, "refused")
    assert fleet.candidates("m") == [b]
    assert fleet.serves("m")  # still known: a 503, not a 404, while nobody serves it
    fleet.probe_failed(b, "timeout")
    assert fleet.candidates("m") == [b]  # one failure of two allowed
    fleet.probe_failed(b, "timeout")
    assert fleet.candidates("m") == []
    fleet.probe_ok(a, None)  # back, with the models it had
    assert fleet.candidates("m") == [a] and fleet.models() == ["m"]
