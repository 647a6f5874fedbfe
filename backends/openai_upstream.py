"""The one pooled HTTP client for OpenAI-compatible workers (ours, vLLM, anything alike).

One `UpstreamClient` per gateway, shared by every request: connections are kept alive and reused,
which is most of what keeps the gateway's added latency small. Callers own the responses `open`
returns and must `aclose()` them (that also tells the worker the client went away).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from config.gateway import UpstreamConfig


class UpstreamClient:
    def __init__(self, cfg: UpstreamConfig) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=cfg.connect_timeout_s,
                read=cfg.read_timeout_s,
                write=cfg.read_timeout_s,
                pool=cfg.connect_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=cfg.max_connections,
                max_keepalive_connections=cfg.max_keepalive_connections,
            ),
            # Workers are local or on a private network; never pick up proxy settings from env.
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def open(
        self, base_url: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> httpx.Response:
        """POST `body` as is and return once the reply's headers are in (body not read yet)."""
        request = self._client.build_request("POST", base_url + path, content=body, headers=headers)
        return await self._client.send(request, stream=True)

    async def check(self, base_url: str, path: str, timeout_s: float) -> None:
        """GET `path` and raise unless it answers 2xx (a health probe; the body is ignored)."""
        response = await self._client.get(base_url + path, timeout=timeout_s)
        response.raise_for_status()

    async def get_json(self, base_url: str, path: str, timeout_s: float) -> Any:
        """GET a small JSON document; raises httpx errors, or HTTPStatusError on a non-2xx."""
        response = await self._client.get(base_url + path, timeout=timeout_s)
        response.raise_for_status()
        return orjson.loads(response.content)
