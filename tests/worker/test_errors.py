"""Every rejection is an OpenAI error body with the right status; none is a 500 or a hang."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from gpu_worker.server import WorkerHandle

from .conftest import MODEL, make_engine, start

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": MODEL, "prompt": "hi"}


def _with(base: dict, **fields: object) -> dict:
    return {**base, **fields}


BAD_REQUESTS = [
    ("/v1/chat/completions", b"{not json", "", 400),
    ("/v1/chat/completions", b"", "", 400),
    ("/v1/chat/completions", b"[1, 2]", "", 400),
    ("/v1/chat/completions", b'{"model": "' + b"\xff\xfe" + b'"}', "", 400),  # not UTF-8
    ("/v1/chat/completions", b'{"a": ' * 3000 + b"1" + b"}" * 3000, "", 400),  # nested deep
    ("/v1/chat/completions", _with(CHAT, messages="hi"), "messages", 400),
    ("/v1/chat/completions", _with(CHAT, messages=[]), "messages", 400),
    ("/v1/chat/completions", _with(CHAT, messages=[{"role": "wizard", "content": "x"}]), "", 400),
    ("/v1/chat/completions", {"messages": CHAT["messages"]}, "", 400),
    ("/v1/chat/completions", _with(CHAT, max_tokens=0), "max_tokens", 400),
    ("/v1/chat/completions", _with(CHAT, max_completion_tokens=-3), "max_tokens", 400),
    ("/v1/chat/completions", _with(CHAT, max_tokens="ten"), "max_tokens", 400),
    ("/v1/chat/completions", _with(CHAT, temperature=-0.1), "temperature", 400),
    ("/v1/chat/completions", _with(CHAT, top_p=0), "top_p", 400),
    ("/v1/chat/completions", _with(CHAT, top_p=1.5), "top_p", 400),
    ("/v1/chat/completions", _with(CHAT, n=2), "n", 400),
    ("/v1/chat/completions", _with(CHAT, stop=5), "stop", 400),
    ("/v1/chat/completions", _with(CHAT, model="gpt-9"), "model", 404),
    ("/v1/completions", _with(COMPLETION, prompt=""), "prompt", 400),
    ("/v1/completions", _with(COMPLETION, prompt=[]), "prompt", 400),
    ("/v1/completions", _with(COMPLETION, prompt=["a", "b"]), "prompt", 400),
    ("/v1/completions", _with(COMPLETION, prompt=[1, "a"]), "prompt", 400),
    ("/v1/completions", _with(COMPLETION, prompt=[-1]), "prompt", 400),
    ("/v1/completions", _with(COMPLETION, prompt=[100000]), "prompt", 400),
    ("/v1/completions", _with(COMPLETION, prompt="x" * 5000), "prompt", 400),  # > whole cache
    ("/v1/completions", _with(COMPLETION, prompt="x" * 100, max_tokens=8100), "max_tokens", 400),
    ("/v1/completions", _with(COMPLETION, n=3), "n", 400),
    ("/v1/chat/completions", _with(CHAT, prediction="hi"), "prediction", 400),
    ("/v1/chat/completions", _with(CHAT, prediction={"type": "x"}), "prediction.type", 400),
    ("/v1/chat/completions", _with(CHAT, prediction={"content": 5}), "prediction.content", 400),
    (
        "/v1/chat/completions",
        _with(CHAT, prediction={"content": [{"type": "image_url", "text": ""}]}),
        "prediction.content",
        400,
    ),
    ("/v1/completions", _with(COMPLETION, prediction={"type": "json"}), "prediction.type", 400),
    ("/v1/completions", _with(COMPLETION, model="nope"), "model", 404),
]


@pytest.mark.parametrize(("path", "body", "param", "status"), BAD_REQUESTS)
async def test_bad_request_gets_openai_error(
    worker: WorkerHandle, path: str, body: bytes | dict, param: str, status: int
) -> None:
    async with httpx.AsyncClient() as http:
        if isinstance(body, bytes):
            resp = await http.post(worker.url + path, content=body)
        else:
            resp = await http.post(worker.url + path, json=body)
        stats = (await http.get(worker.url + "/stats")).json()
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param:
        assert error["param"] == param
    # The worker is unharmed and holds nothing for the rejected request.
    assert stats["pending_requests"] == 0


async def test_body_not_in_its_content_encoding_is_400(worker: WorkerHandle) -> None:
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with httpx.AsyncClient() as http:
        resp = await http.post(worker.url + "/v1/chat/completions", content=b"{}", headers=headers)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["code"] == "unreadable_body"
        assert (await http.get(worker.url + "/health")).status_code == 200


async def test_openai_client_raises_typed_errors(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], n=2
        )
    assert bad.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError) as missing:
        await client.completions.create(model="other", prompt="x")
    assert missing.value.body["code"] == "model_not_found"


async def test_unknown_route_and_method_use_the_error_shape(worker: WorkerHandle) -> None:
    async with httpx.AsyncClient() as http:
        missing = await http.get(worker.url + "/v2/nothing")
        wrong = await http.get(worker.url + "/v1/completions")
        bad_header = await http.post(
            worker.url + "/v1/completions",
            json=COMPLETION,
            headers={"x-kvgate-turn": "second"},
        )
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert wrong.status_code == 405 and "error" in wrong.json()
    assert (
        bad_header.status_code == 400 and "x-kvgate-turn" in bad_header.json()["error"]["message"]
    )


async def test_body_over_the_limit_is_413() -> None:
    handle = await start(make_engine(), max_body_bytes=1024)
    try:
        async with httpx.AsyncClient() as http:
            resp = await http.post(
                handle.url + "/v1/completions", json=_with(COMPLETION, prompt="y" * 4096)
            )
        assert resp.status_code == 413
        assert resp.json()["error"]["type"] == "invalid_request_error"
    finally:
        await handle.close()


async def test_full_worker_answers_503_at_once() -> None:
    # A slow engine (real-time cost model) and room for only two pending requests.
    handle = await start(make_engine(time_scale=1.0), max_pending_requests=2)
    body = _with(COMPLETION, max_tokens=2000, stream=True)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            url = handle.url + "/v1/completions"
            async with (
                http.stream("POST", url, json=body) as one,
                http.stream("POST", url, json=body) as two,
            ):
                assert one.status_code == two.status_code == 200
                third = await http.post(url, json=_with(COMPLETION, max_tokens=1))
                assert third.status_code == 503
                assert third.json()["error"]["code"] == "worker_overloaded"
                assert third.headers["Retry-After"] == "1"
    finally:
        await handle.close()


async def test_a_body_that_stops_coming_is_408_and_closes(stalled_upload) -> None:
    handle = await start(make_engine(), body_read_timeout_s=0.3)
    try:
        status, error, after = await stalled_upload(handle.url, "/v1/completions")
        assert status == 408 and error["code"] == "body_timeout"
        assert after == b""  # closed: the rest of that body is never read
        async with httpx.AsyncClient(timeout=10) as http:  # and the worker serves on
            ok = await http.post(handle.url + "/v1/completions", json=COMPLETION)
        assert ok.status_code == 200
    finally:
        await handle.close()
