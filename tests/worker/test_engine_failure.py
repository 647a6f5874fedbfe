"""An engine that raises mid-run: requests get 503 in the error shape, /health turns 503."""

from __future__ import annotations

import httpx

from gpu_worker.engine_api import RequestOutput
from gpu_worker.sim_engine import SimEngine

from .conftest import MODEL, make_engine, start


class _BreaksAfter(SimEngine):
    """The real sim engine with a fault injected after a number of steps."""

    def __init__(self, steps: int) -> None:
        base = make_engine(time_scale=0.01)
        super().__init__(base.cfg, model_id=MODEL)
        self._steps_left = steps

    def step(self) -> list[RequestOutput]:
        self._steps_left -= 1
        if self._steps_left < 0:
            raise RuntimeError("injected engine fault")
        return super().step()


async def test_engine_failure_fails_requests_and_health() -> None:
    handle = await start(_BreaksAfter(steps=3))
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(handle.url + "/health")).status_code == 200
            url = handle.url + "/v1/completions"
            body = {"model": MODEL, "prompt": "x", "max_tokens": 50}
            async with http.stream("POST", url, json={**body, "stream": True}) as stream:
                lines = [line async for line in stream.aiter_lines() if line.startswith("data: ")]
            assert '"error"' in lines[-1] and "engine_unavailable" in lines[-1]
            after = await http.post(url, json=body)
            assert after.status_code == 503 and after.json()["error"]["type"] == "overloaded_error"
            health = await http.get(handle.url + "/health")
            assert health.status_code == 503
    finally:
        await handle.close()


class _RefusesLongPrompts(SimEngine):
    def __init__(self) -> None:
        super().__init__(make_engine(time_scale=0.01).cfg, model_id=MODEL)

    def add_request(self, request) -> None:  # type: ignore[no-untyped-def]
        if len(request.prompt_token_ids) > 10:
            raise ValueError("too long for this engine")
        super().add_request(request)


async def test_engine_refusing_one_request_fails_only_that_one() -> None:
    handle = await start(_RefusesLongPrompts())
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            url = handle.url + "/v1/completions"
            refused = await http.post(url, json={"model": MODEL, "prompt": "x" * 20})
            assert refused.status_code == 400
            assert refused.json()["error"]["code"] == "engine_refused"
            # Streamed: nothing was sent before the refusal, so it is an error reply too, not a
            # 200 whose stream carries the error.
            body = {"model": MODEL, "prompt": "x" * 20, "stream": True}
            refused = await http.post(url, json=body)
            assert refused.status_code == 400
            assert refused.json()["error"]["code"] == "engine_refused"
            fine = await http.post(url, json={"model": MODEL, "prompt": "x", "max_tokens": 2})
            assert fine.status_code == 200
            assert (await http.get(handle.url + "/stats")).json()["pending_requests"] == 0
    finally:
        await handle.close()
