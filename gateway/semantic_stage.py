"""The semantic cache in the request path: look up after parse + auth, answer hits, store misses.

Rules:
- Built only when `semantic_cache.enabled`; a disabled cache costs nothing per request.
- A hit is answered here (JSON, or an SSE replay of several chunks and `[DONE]`) with
  `x-kvgate-cache`/`x-kvgate-similarity` headers and zero completion tokens; no worker is called.
- A miss/bypass goes to the relay with a `ReplyTap`: it adds the headers and, only when the
  result may be stored, keeps the reply bytes (bounded) and inserts the reply after the relay
  finished, as a background task, so the relay is never delayed. Failed, truncated
  (`finish_reason != "stop"`) or over-long replies are never stored.
- A verify (a hit in a `verify: true` category) goes to the relay as a miss does, its body
  carrying the cached answer as `prediction` (gateway/verified_hit.py); its tap also counts the
  prediction tokens the worker's reply kept and dropped, after the relay finished.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator, Mapping

import msgspec
import orjson
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from config.protocol import (
    HEADER_CATEGORY,
    AnswerOptions,
    ChatCompletionRequest,
    CompletionRequest,
    StreamOptions,
)
from gateway.semantic import CachedReply, CacheQuery, CacheResult, SemanticCache, cache_headers
from gateway.semantic.replay import Kind, response_body, sse_chunks
from gateway.verified_hit import PredictionTally

log = logging.getLogger(__name__)

MAX_KEPT_REPLY_BYTES = 1_048_576  # a longer reply is relayed but not stored
# Requests the cache cannot answer: token-id prompts (it compares text), n > 1 (it stores one
# choice) and requests that ask for more than a plain text answer (`AnswerOptions`).
# They are relayed with `x-kvgate-cache: bypass` and never stored.
_UNCACHEABLE = CacheResult("bypass", "none", reason="uncacheable_request")


def _plain_answer(body: bytes) -> bool:
    try:
        return msgspec.json.decode(body, type=AnswerOptions).first_set() is None
    except msgspec.ValidationError:  # a shape we do not know: not ours to answer
        return False


def chat_query(body: bytes, tenant: str, headers: Mapping[str, str]) -> CacheQuery | None:
    """None when the request cannot be answered from the cache (n > 1, not a plain answer)."""
    req = msgspec.json.decode(body, type=ChatCompletionRequest)  # already validated by parse
    if (req.n is not None and req.n > 1) or not _plain_answer(body):
        return None
    msgs = req.messages
    last = max((i for i, m in enumerate(msgs) if m.role == "user"), default=len(msgs) - 1)
    system = "\n".join(m.text() for m in msgs[:last] if m.role in ("system", "developer"))
    earlier = tuple(
        (m.role, m.text()) for m in msgs[:last] if m.role not in ("system", "developer")
    )
    return CacheQuery(
        tenant=tenant,
        model=req.model,
        text=msgs[last].text() if msgs else "",
        system_prompt=system,
        earlier_turns=earlier,
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        category_header=headers.get(HEADER_CATEGORY),
        cache_control=headers.get("Cache-Control"),
        max_tokens=req.requested_max_tokens(),
        stop=req.stop_list(),
    )


def completion_query(body: bytes, tenant: str, headers: Mapping[str, str]) -> CacheQuery | None:
    """None for a token-id prompt (not cacheable: the cache compares text), n > 1, or a
    request for more than a plain answer."""
    req = msgspec.json.decode(body, type=CompletionRequest)
    if (req.n is not None and req.n > 1) or not _plain_answer(body):
        return None
    prompt = req.prompt
    if isinstance(prompt, list):
        if not all(isinstance(p, str) for p in prompt) or len(prompt) != 1:
            return None
        prompt = prompt[0]
    return CacheQuery(
        tenant=tenant,
        model=req.model,
        text=str(prompt),
        endpoint="completions",
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        category_header=headers.get(HEADER_CATEGORY),
        cache_control=headers.get("Cache-Control"),
        max_tokens=req.requested_max_tokens(),
        stop=req.stop_list(),
    )


class _StreamOptionsOf(msgspec.Struct):
    stream_options: StreamOptions | None = None


def _wants_usage(body: bytes) -> bool:
    # Read with msgspec, as the parser read it: orjson refuses a number beyond a double
    # (`1e999`), which msgspec accepts in a field it skips, so a body the parser let through
    # failed here, after a streamed hit's 200 head had gone out.
    opts = msgspec.json.decode(body, type=_StreamOptionsOf).stream_options
    return opts is not None and opts.include_usage


class ReplyTap:
    """Handed to the relay with a miss/bypass: headers to add, and the reply to store."""

    def __init__(self, stage: SemanticStage, result: CacheResult, kind: Kind) -> None:
        self._stage = stage
        self.result = result
        self.kind = kind
        self.headers = cache_headers(result)
        self.keep = result.vector is not None  # storable: a miss or no-cache, not no-store
        self._parts: list[bytes] = []
        self._size = 0
        # A verify's reply reports how much of the prediction it kept (plain misses: None).
        self.tally = (
            PredictionTally(stage.cache.stats_by_category, result.category)
            if result.status == "verify"
            else None
        )

    def feed(self, chunk: bytes) -> None:
        """A streamed chunk as relayed (kept only, parsed at the end)."""
        if self.tally is not None:
            self.tally.feed(chunk)
        if not self.keep:
            return
        self._size += len(chunk)
        if self._size > MAX_KEPT_REPLY_BYTES:
            self.keep = False
            self._parts.clear()
        else:
            self._parts.append(chunk)

    def finish_stream(self) -> None:
        """The stream ended normally (the relay calls this only then)."""
        if self.tally is not None:
            self.tally.finish_stream()
        if self.keep:
            self._stage.store_later(self, b"".join(self._parts), streamed=True)

    def finish_whole(self, status: int, body: bytes) -> None:
        if self.tally is not None and status == 200:
            self.tally.finish_whole(body)
        if self.keep and status == 200 and len(body) <= MAX_KEPT_REPLY_BYTES:
            self._stage.store_later(self, body, streamed=False)


def _reply_from_json(body: bytes, kind: Kind) -> CachedReply | None:
    obj = orjson.loads(body)
    choice = obj["choices"][0]
    text = choice["message"]["content"] if kind == "chat" else choice["text"]
    usage = obj.get("usage") or {}
    return CachedReply(
        text=text or "",
        finish_reason=choice.get("finish_reason") or "",
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


def _reply_from_sse(data: bytes, kind: Kind) -> CachedReply | None:
    texts: list[str] = []
    finish = ""
    done = False
    reported = 0  # completion tokens from a usage chunk, when the client asked for one
    for event in data.split(b"\n\n"):
        event = event.strip()
        if not event.startswith(b"data:"):
            continue
        payload = event[5:].strip()
        if payload == b"[DONE]":
            done = True
            break  # what a worker sends after it the client never reads: not part of the answer
        obj = orjson.loads(payload)
        if "error" in obj:
            return None
        reported = int((obj.get("usage") or {}).get("completion_tokens") or reported)
        for choice in obj.get("choices") or ():
            piece = choice.get("delta", {}).get("content") if kind == "chat" else choice.get("text")
            if piece:
                texts.append(piece)
            finish = choice.get("finish_reason") or finish
    if not done:
        return None
    # Without usage, the content chunks count the tokens (one per chunk from OpenAI-style
    # servers and ours; a server that batches tokens per chunk is undercounted).
    tokens = reported or len(texts)
    return CachedReply(text="".join(texts), finish_reason=finish, completion_tokens=tokens)


class SemanticStage:
    def __init__(self, cache: SemanticCache) -> None:
        self.cache = cache
        self.parallel = cache.cfg.lookup == "parallel"  # see SemanticCacheConfig.lookup
        self._pending: set[asyncio.Task[bool]] = set()

    async def lookup(
        self, kind: Kind, body: bytes, tenant: str, headers: Mapping[str, str]
    ) -> CacheResult:
        query = (
            chat_query(body, tenant, headers)
            if kind == "chat"
            else completion_query(body, tenant, headers)
        )
        if query is None:
            return _UNCACHEABLE
        return await self.cache.lookup(query)

    def send_on(self, hit: CacheResult) -> CacheResult:
        """A hit the gateway sends to a worker after all (it cannot check that a worker would
        take the request): a bypass, and counted as one."""
        self.cache.stats_by_category.hit_sent_on(hit.category)
        return CacheResult("bypass", hit.category, reason="context_unchecked")

    def tap(self, result: CacheResult, kind: Kind) -> ReplyTap:
        return ReplyTap(self, result, kind)

    async def serve_hit(
        self,
        request: web.Request,
        result: CacheResult,
        kind: Kind,
        body: bytes,
        model: str,
        stream: bool,
        prompt_tokens: int,
    ) -> web.StreamResponse:
        assert result.reply is not None
        reply = result.reply
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        common = {
            "kind": kind,
            "request_id": f"{prefix}-cache-{uuid.uuid4().hex[:16]}",
            "created": int(time.time()),
            "model": model,
            "prompt_tokens": prompt_tokens,
        }
        headers = cache_headers(result)
        if not stream:
            payload = orjson.dumps(response_body(reply, **common))  # type: ignore[arg-type]
            return web.Response(body=payload, content_type="application/json", headers=headers)
        # Everything that reads the request is done before the 200 head goes out.
        chunks = sse_chunks(reply, include_usage=_wants_usage(body), **common)  # type: ignore[arg-type]
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"} | headers,
        )
        try:
            await response.prepare(request)
            for chunk in chunks:
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:  # the client left (or half-closed): a hang-up, not a 500
            log.debug("client of a cache hit replay went away")
        return response

    def store_later(self, tap: ReplyTap, data: bytes, *, streamed: bool) -> None:
        task = asyncio.create_task(self._store(tap, data, streamed))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _store(self, tap: ReplyTap, data: bytes, streamed: bool) -> bool:
        try:
            reply = (
                _reply_from_sse(data, tap.kind) if streamed else _reply_from_json(data, tap.kind)
            )
            if reply is None:
                return False
            return await self.cache.insert(tap.result, reply)
        except Exception:  # a malformed reply is not stored; it must not break anything
            log.warning("semantic cache: reply not stored", exc_info=True)
            return False

    async def drain(self) -> None:
        """Wait for the inserts in flight (shutdown, tests)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


class CacheCollector(Collector):
    """Per-category cache counters and gauges on /metrics, read from `stats()` at scrape time."""

    COUNTERS = (
        "lookups",
        "hits",
        "misses",
        "bypasses",
        "verifies",
        "accepted_prediction_tokens",
        "rejected_prediction_tokens",
        "evictions",
        "expirations",
    )

    def __init__(self, cache: SemanticCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        cats = self._cache.stats_by_category.snapshot()
        for name in self.COUNTERS:
            fam = CounterMetricFamily(
                f"kvgate_semantic_cache_{name}", f"Semantic cache {name}", labels=["category"]
            )
            for cat, s in cats.items():
                fam.add_metric([cat], s[name])
            yield fam
        entries = GaugeMetricFamily(
            "kvgate_semantic_cache_entries", "Entries stored", labels=["category"]
        )
        latency = CounterMetricFamily(
            "kvgate_semantic_cache_lookup_seconds", "Total lookup time", labels=["category"]
        )
        p99 = GaugeMetricFamily(
            "kvgate_semantic_cache_lookup_p99_seconds",
            "p99 lookup latency over recent lookups",
            labels=["category"],
        )
        for cat, s in cats.items():
            entries.add_metric([cat], s["entries"])
            latency.add_metric([cat], s["lookup_latency_s_sum"])
            p99.add_metric([cat], s["lookup_p99_ms"] / 1000)
        yield entries
        yield latency
        yield p99
