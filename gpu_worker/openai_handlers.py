"""`POST /v1/chat/completions` and `POST /v1/completions`: parse and validate (→ OpenAI errors),
tokenize with the engine's tokenizer, hand the request to the engine thread, and answer with one
JSON body or an SSE stream. A handler that ends before its request finished (client gone, error)
aborts the request in the engine, so its blocks are freed at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Literal

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from config import protocol as p
from config.context_length import ContextLimit
from config.hint_headers import header_int
from config.protocol import RequestError
from gpu_worker.engine_api import EngineRequest, RequestMeta, RequestOutput, SamplingParams
from gpu_worker.worker_state import STATE_KEY, Item, WorkerState
from policies.semantic.categorizer import named_category

log = logging.getLogger(__name__)

Kind = Literal["chat", "completion"]
# A deadline hint further out than this (ms, ~285,000 years) is a client's mistake: it no longer
# adds to a float clock (and 10**400 does not convert to one at all).
MAX_DEADLINE_MS = 2**53
MAX_CHARS_PER_TOKEN = 16  # generous: text tokens average ~4 characters


async def handle_chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    body = await _read_body(request)
    req = p.decode_request(body, p.ChatCompletionRequest)
    p.check_answer_options(body)
    p.validate_chat(req)
    check_model(state, req.model)
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    prompt_ids = state.engine.tokenizer.apply_chat_template(messages)
    return await _serve(request, state, "chat", req, prompt_ids)


async def handle_completion(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    body = await _read_body(request)
    req = p.decode_request(body, p.CompletionRequest)
    p.check_answer_options(body)
    prompt = p.validate_completion(req)
    check_model(state, req.model)
    if isinstance(prompt, str):
        prompt_ids = state.engine.tokenizer.encode(prompt)
    else:
        vocab = getattr(state.engine.tokenizer, "vocab_size", None)
        if vocab is not None and max(prompt) >= vocab:
            raise RequestError(
                400, f"token ids must be below the vocab size {vocab}", param="prompt"
            )
        prompt_ids = prompt
    return await _serve(request, state, "completion", req, prompt_ids)


async def _read_body(request: web.Request) -> bytes:
    timeout_s = request.app[STATE_KEY].cfg.body_read_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError as exc:  # as the gateway does: end the body, close after the reply
        request.content.feed_eof()
        message = f"the request body did not arrive within {timeout_s:g} s"
        raise RequestError(408, message, code="body_timeout", close=True) from exc
    except web.HTTPRequestEntityTooLarge as exc:
        limit = request.app[STATE_KEY].cfg.max_body_bytes
        raise RequestError(413, f"the request body is larger than {limit} bytes") from exc
    # Cut short, not in its declared Content-Encoding, or its chunked framing broken (aiohttp's
    # pure-Python parser raises the framing error itself rather than a RequestPayloadError).
    except (RequestPayloadError, HttpProcessingError) as exc:
        # As the gateway does: the rest of the body is not ours to read, so it ends here (else
        # aiohttp drains it after the reply, fails again and logs a traceback at ERROR), and the
        # connection closes after the reply.
        request.content.feed_eof()
        raise RequestError(400, p.UNREADABLE_BODY, code="unreadable_body", close=True) from exc


def check_model(state: WorkerState, model: str) -> None:
    if model != state.engine.model_id:
        raise RequestError(
            404,
            f"the model `{model}` does not exist on this worker (it serves"
            f" `{state.engine.model_id}`)",
            param="model",
            code="model_not_found",
        )


def request_meta(headers: Mapping[str, str], now_s: float) -> RequestMeta:
    """The gateway's hints (config/protocol.py HEADER_*); a malformed one is a 400."""

    deadline_ms = header_int(headers, p.HEADER_DEADLINE_MS, maximum=MAX_DEADLINE_MS)
    return RequestMeta(
        category=named_category(headers.get(p.HEADER_CATEGORY)) or "",
        turn=header_int(headers, p.HEADER_TURN, minimum=0) or 0,
        conversation=header_int(headers, p.HEADER_CONVERSATION),
        cache_salt=headers.get(p.HEADER_CACHE_SALT) or None,
        deadline_s=None if deadline_ms is None else now_s + deadline_ms / 1000.0,
    )


def _sampling(
    state: WorkerState, req: p.ChatCompletionRequest | p.CompletionRequest, num_prompt: int
) -> SamplingParams:
    engine = state.engine
    limit = ContextLimit(
        max_model_len=engine.max_model_len, max_prompt_tokens=engine.max_prompt_tokens
    )
    max_tokens = req.requested_max_tokens()
    param = "messages" if isinstance(req, p.ChatCompletionRequest) else "prompt"
    limit.check(num_prompt, max_tokens, param=param)
    if max_tokens is None:
        max_tokens = min(state.cfg.default_max_tokens, engine.max_model_len - num_prompt)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=max(0, req.top_k or 0),
        seed=req.seed,
        stop=req.stop_list(),
    )


async def _serve(
    request: web.Request,
    state: WorkerState,
    kind: Kind,
    req: p.ChatCompletionRequest | p.CompletionRequest,
    prompt_ids: list[int],
) -> web.StreamResponse:
    if not prompt_ids:
        raise RequestError(400, "the prompt is empty after tokenization", param="prompt")
    sampling = _sampling(state, req, len(prompt_ids))
    meta = request_meta(request.headers, time.monotonic())
    prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
    request_id = prefix + uuid.uuid4().hex
    predicted = _prediction_ids(state, req)
    engine_request = EngineRequest(
        request_id=request_id,
        prompt_token_ids=prompt_ids,
        sampling=sampling,
        meta=meta,
        prediction_token_ids=predicted or [],
    )
    outputs = state.submit(engine_request)
    reply = _Reply(kind, request_id, req.model, int(time.time()), predicted is not None)
    finished = False
    resp: web.StreamResponse | None = None
    try:
        if req.stream:
            resp = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            # The headers and the role chunk go out with the first output, not at once: a
            # client (and the gateway's TTFT metric and deadline estimate) reads the first chunk
            # as the first token, as with other OpenAI-compatible servers; the reader (the
            # gateway, on its way to the client) wakes once for both, not twice; and a request
            # the engine refuses before its first token gets an error status, not a 200.
            role = kind == "chat"
            while not finished:
                item = _coalesce(await outputs.get(), outputs)
                if isinstance(item, RequestError):
                    finished = True
                    if not resp.prepared:
                        raise item
                    await resp.write(b"data: " + item.body() + b"\n\n")  # say so in the stream
                    return resp
                finished = item.finished
                if item.text_delta or item.finished:
                    chunk = reply.sse(reply.delta_chunk(item))
                    if role:
                        chunk = reply.sse(reply.role_chunk()) + chunk
                        role = False
                    if not resp.prepared:
                        await resp.prepare(request)
                    await resp.write(chunk)
            if req.include_usage():
                await resp.write(reply.sse(reply.usage_chunk()))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        parts: list[str] = []
        while not finished:
            item = await outputs.get()
            if isinstance(item, RequestError):
                finished = True
                raise item
            finished = item.finished
            parts.append(item.text_delta)
            reply.track(item)
        return web.Response(
            body=msgspec.json.encode(reply.full("".join(parts))), content_type="application/json"
        )
    except ConnectionResetError:
        if resp is None:
            raise
        # The client left mid-stream (often the gateway, dropping a request its cache answered
        # in parallel) before its handler was cancelled: no one is left to answer, the request
        # is aborted below. Raised on, aiohttp logged a traceback at ERROR for each one.
        log.debug("client of %s went away mid-stream", request_id)
        return resp
    finally:
        if not finished:
            state.abort(request_id)


def _prediction_ids(
    state: WorkerState, req: p.ChatCompletionRequest | p.CompletionRequest
) -> list[int] | None:
    """The request's `prediction` as token ids; None when it has none. The answer's text is
    tokenized alone, as the model writes it after the prompt's generation header."""
    if req.prediction is None:
        return None
    # No answer outgrows the context, so neither does a useful prediction: a longer one is cut
    # (to a generous number of characters first, so a 16 MB one is not tokenized on the loop).
    limit = state.engine.max_model_len
    text = req.prediction.text()[: limit * MAX_CHARS_PER_TOKEN]
    return state.engine.tokenizer.encode(text)[:limit] if text else []


def _coalesce(first: Item, outputs: asyncio.Queue[Item]) -> Item:
    """`first` merged with every output already queued behind it: when the client or the loop
    lags the engine, one SSE event carries several tokens instead of one write per token."""
    if isinstance(first, RequestError) or first.finished or outputs.empty():
        return first
    merged = RequestOutput(
        request_id=first.request_id,
        new_token_ids=list(first.new_token_ids),
        text_delta=first.text_delta,
    )
    last: RequestOutput = first
    while not outputs.empty() and not last.finished:
        item = outputs.get_nowait()
        if isinstance(item, RequestError):
            return item
        merged.new_token_ids += item.new_token_ids
        merged.text_delta += item.text_delta
        last = item
    merged.finished = last.finished
    merged.finish_reason = last.finish_reason
    merged.num_prompt_tokens = last.num_prompt_tokens
    merged.num_cached_tokens = last.num_cached_tokens
    merged.num_output_tokens = last.num_output_tokens
    merged.num_accepted_prediction_tokens = last.num_accepted_prediction_tokens
    merged.num_rejected_prediction_tokens = last.num_rejected_prediction_tokens
    return merged


class _Reply:
    """Builds the response structs of one request (chat or completion)."""

    def __init__(
        self, kind: Kind, request_id: str, model: str, created: int, predicted: bool = False
    ) -> None:
        """`predicted`: the request carried a `prediction` (usage then reports its tokens)."""
        self.kind = kind
        self.predicted = predicted
        self.id = request_id
        self.model = model
        self.created = created
        self.usage = p.make_usage(0, 0, 0)
        self.finish_reason: p.FinishReason | None = None

    def track(self, out: RequestOutput) -> None:
        self.usage = p.make_usage(
            out.num_prompt_tokens, out.num_output_tokens, out.num_cached_tokens
        )
        if self.predicted:
            self.usage.completion_tokens_details = p.CompletionTokensDetails(
                accepted_prediction_tokens=out.num_accepted_prediction_tokens,
                rejected_prediction_tokens=out.num_rejected_prediction_tokens,
            )
        if out.finished:
            # "abort" never reaches a client (its handler is gone); anything else maps to OpenAI's.
            self.finish_reason = "length" if out.finish_reason == "length" else "stop"

    def full(self, text: str) -> p.ChatCompletionResponse | p.CompletionResponse:
        if self.kind == "chat":
            choice = p.ChatChoice(
                message=p.AssistantMessage(content=text), finish_reason=self.finish_reason
            )
            return p.ChatCompletionResponse(
                id=self.id,
                created=self.created,
                model=self.model,
                choices=[choice],
                usage=self.usage,
            )
        return p.CompletionResponse(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[p.CompletionChoice(text=text, finish_reason=self.finish_reason)],
            usage=self.usage,
        )

    def role_chunk(self) -> p.ChatCompletionChunk:
        delta = p.ChatDelta(role="assistant", content="")
        return self._chat_chunk([p.ChatChunkChoice(delta=delta)])

    def delta_chunk(self, out: RequestOutput) -> p.ChatCompletionChunk | p.CompletionChunk:
        self.track(out)
        reason = self.finish_reason if out.finished else None
        if self.kind == "chat":
            delta = p.ChatDelta(content=out.text_delta) if out.text_delta else p.ChatDelta()
            return self._chat_chunk([p.ChatChunkChoice(delta=delta, finish_reason=reason)])
        choice = p.CompletionChoice(text=out.text_delta, finish_reason=reason)
        return p.CompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=[choice]
        )

    def usage_chunk(self) -> p.ChatCompletionChunk | p.CompletionChunk:
        if self.kind == "chat":
            return self._chat_chunk([], usage=self.usage)
        return p.CompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=[], usage=self.usage
        )

    def _chat_chunk(
        self, choices: list[p.ChatChunkChoice], usage: p.Usage | msgspec.UnsetType = msgspec.UNSET
    ) -> p.ChatCompletionChunk:
        return p.ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )

    @staticmethod
    def sse(chunk: msgspec.Struct) -> bytes:
        return b"data: " + msgspec.json.encode(chunk) + b"\n\n"
