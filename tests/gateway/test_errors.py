"""Every refusal a client can cause gets OpenAI's error JSON and the right status; never a 500."""

import time

import httpx
import openai
import pytest

from gateway.keys import METRICS

MODEL = "sim-llama"
CHAT = "/v1/chat/completions"


def _assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"]
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{", None),
        (b"not json at all", None),
        (b'{"model": "' + b"\xff\xfe" + b'"}', None),  # not UTF-8
        (b'{"a": ' * 3000 + b"1" + b"}" * 3000, None),  # nested too deeply for the decoder
        (b'{"model": "sim-llama", "messages": "hi"}', "messages"),
        (b'{"model": 1, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (
            b'{"model": "sim-llama", "messages": [{"role": "user", "content": "x"}], '
            b'"max_tokens": 0}',
            "max_tokens",
        ),
        (
            b'{"model": "sim-llama", "messages": [{"role": "user", "content": "x"}], '
            b'"temperature": "hot"}',
            "temperature",
        ),
    ],
)
async def test_bad_body_is_400(gateway, body, param):
    async with httpx.AsyncClient() as http:
        response = await http.post(gateway.url + CHAT, content=body)
    assert _assert_error(response, 400)["param"] == param


async def test_body_not_in_its_content_encoding_is_400_and_closes(gateway):
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with httpx.AsyncClient() as http:
        response = await http.post(gateway.url + CHAT, content=b"{}", headers=headers)
        assert _assert_error(response, 400, "unreadable_body")
        # The rest of that connection's bytes are not a request: it is closed, the next request
        # (on a new connection) is served.
        assert response.headers["Connection"] == "close"
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
        assert (await http.post(gateway.url + CHAT, json=chat)).status_code == 200


async def test_bad_completion_prompt_is_400(gateway):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            gateway.url + "/v1/completions", json={"model": MODEL, "prompt": [1, "a"]}
        )
    assert _assert_error(response, 400)["param"] == "prompt"


async def test_api_keys_map_to_tenants_and_refuse_others(two_workers, make_gateway, openai_client):
    gw = await make_gateway([w.url for w in two_workers], api_keys={"sk-good": "team-a"})
    ok = await openai_client(gw, "sk-good").chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert ok.choices[0].message.content
    with pytest.raises(openai.AuthenticationError) as info:
        await openai_client(gw, "sk-bad").models.list()
    assert info.value.status_code == 401
    async with httpx.AsyncClient() as http:
        _assert_error(await http.post(gw.url + CHAT, json={}), 401, "missing_api_key")
        _assert_error(await http.get(gw.url + "/v1/models"), 401, "missing_api_key")
        # Health and metrics stay open for probes and scrapers.
        assert (await http.get(gw.url + "/health")).status_code == 200


async def test_long_authorization_header_is_an_api_error(two_workers, make_gateway):
    gw = await make_gateway([w.url for w in two_workers], api_keys={"sk-a": "team-a"})
    token = "Bearer " + "x" * 20_000  # a long single-sign-on token, not one of our keys
    async with httpx.AsyncClient() as http:
        response = await http.get(gw.url + "/v1/models", headers={"Authorization": token})
    _assert_error(response, 401)


async def test_unknown_model_is_404(gateway, openai_client):
    with pytest.raises(openai.NotFoundError) as info:
        await openai_client(gateway).chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 404
    assert info.value.body["param"] == "model"
    metrics = gateway.app[METRICS]
    assert metrics.requests.labels("chat", "404")._value.get() == 1
    assert metrics.errors.labels("model_not_found")._value.get() == 1


async def test_body_over_the_limit_is_413(two_workers, make_gateway):
    gw = await make_gateway([w.url for w in two_workers], max_body_bytes=2048)
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 4096}]}
    async with httpx.AsyncClient() as http:
        _assert_error(await http.post(gw.url + CHAT, json=big), 413, "request_too_large")

        async def chunked():  # no Content-Length: the limit holds while reading
            for _ in range(8):
                yield b"x" * 1024

        _assert_error(await http.post(gw.url + CHAT, content=chunked()), 413, "request_too_large")


async def test_unknown_route_and_wrong_method_are_json(gateway):
    async with httpx.AsyncClient() as http:
        _assert_error(await http.get(gateway.url + "/v1/nothing"), 404)
        _assert_error(await http.get(gateway.url + CHAT), 405)


async def test_no_healthy_worker_is_503(make_worker, make_gateway, openai_client):
    worker = make_worker()
    gw = await make_gateway([worker.url])
    worker.kill()
    with pytest.raises(openai.InternalServerError) as info:
        await openai_client(gw).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert info.value.status_code == 503
    assert info.value.body["code"] == "no_healthy_worker"


async def test_upstream_timeout_is_504(make_worker, make_gateway):
    slow = make_worker(time_scale=2.0)  # 64 tokens take > 1 s; the gateway waits 0.3 s
    gw = await make_gateway([slow.url], upstream={"read_timeout_s": 0.3})
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
    async with httpx.AsyncClient(timeout=10) as http:
        _assert_error(await http.post(gw.url + CHAT, json=body), 504, "upstream_timeout")


async def test_unknown_category_header_is_400_with_the_cache_off(gateway):
    """The category is also a hint to the workers' eviction: an unknown one is refused even
    when no semantic cache runs (this gateway's is off)."""
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    async with httpx.AsyncClient() as http:
        bad = await http.post(gateway.url + CHAT, json=chat, headers={"x-kvgate-category": "cod"})
        error = _assert_error(bad, 400, "invalid_category")
        assert error["param"] == "x-kvgate-category" and "code" in error["message"]
        good = await http.post(gateway.url + CHAT, json=chat, headers={"x-kvgate-category": "Code"})
        assert good.status_code == 200, good.text


async def test_a_body_that_stops_coming_is_408_and_closes(
    two_workers, make_gateway, stalled_upload
):
    gw = await make_gateway([w.url for w in two_workers], body_read_timeout_s=0.3)
    started = time.monotonic()
    status, error, after = await stalled_upload(gw.url, CHAT)
    assert status == 408 and error["code"] == "body_timeout" and error["type"] == "timeout_error"
    assert after == b""  # the connection is closed: the rest of that body is never read
    assert time.monotonic() - started < 5
    async with httpx.AsyncClient() as http:  # and the gateway serves on
        ok = await http.post(
            gw.url + CHAT,
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        )
    assert ok.status_code == 200
