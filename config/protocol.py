"""The wire contract of kvgate: OpenAI request/response structs (worker `/stats` and KV events:
config/worker_wire.py).

Shared by the worker's server and the gateway, so both sides read and write exactly these shapes.
Request structs ignore unknown fields on purpose (real OpenAI clients send many, mostly at their
no-op values); only the config structs in config/ forbid them. The fields that would change the
answer and that our workers do not honour (`AnswerOptions`: `tools`, `logprobs`,
`presence_penalty`, …) are refused when set (`check_answer_options`). Stream chunks
leave out what is UNSET (`usage`, delta parts) as OpenAI does. Requests re-encode without
their unset fields (`omit_defaults`), so a gateway that forwards a decoded request sends no
`null`s.

Type checks happen at decode (`decode_request`); value rules (max_tokens >= 1, n == 1, …) are
checked by `validate_*` so every rejection carries the OpenAI error shape and the offending param.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

# Gateway → worker hints (all optional). The deadline is *relative* (ms from the moment the
# worker reads the request), so it survives clock differences between machines.
T = TypeVar("T")

HEADER_CATEGORY = "x-kvgate-category"
HEADER_TURN = "x-kvgate-turn"
HEADER_CONVERSATION = "x-kvgate-conversation"
HEADER_CACHE_SALT = "x-kvgate-cache-salt"
HEADER_DEADLINE_MS = "x-kvgate-deadline-ms"
# The longest header line either server reads (aiohttp's default is 8 KiB; single sign-on bearer
# tokens and cookies from a proxy in front can be longer). One figure for both sides: a worker
# must read every hint header the gateway accepted and passes on, or it answers aiohttp's
# plain-text 400, which the gateway would relay as it is.
MAX_HEADER_BYTES = 32_768


# ---------------------------------------------------------------- requests


class StreamOptions(msgspec.Struct, kw_only=True, omit_defaults=True):
    include_usage: bool = False


class ContentPart(msgspec.Struct, kw_only=True):
    """One part of a multi-part message content; only text parts are served."""

    type: str = "text"
    text: str = ""


class ChatMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text (text parts joined); non-text parts are rejected by validation."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class Prediction(msgspec.Struct, kw_only=True, omit_defaults=True):
    """OpenAI's Predicted Outputs: text the answer is expected to repeat, mostly as it is (a
    file being edited, an earlier answer). A hint, never an instruction: the answer is what
    the model would write without it; a kvgate worker checks the prediction's tokens in one
    forward pass and keeps the leading ones the model would have produced itself."""

    type: str = "content"
    content: str | list[ContentPart] = ""

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class _SamplingFields(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # extension (vLLM has it too); 0 or -1 = off
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    user: str | None = None
    prediction: Prediction | None = None

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        if isinstance(self.stop, str):
            return (self.stop,) if self.stop else ()
        return tuple(s for s in self.stop if s)

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class AnswerOptions(msgspec.Struct):
    """Request fields (OpenAI's and common extensions) that ask for more than a plain text
    answer, or for a differently sampled one: tool calls, a response format, log probabilities,
    echo / suffix / best_of, logit bias, repetition penalties. Our workers honour none of them
    and refuse a request that sets one to other than its no-op value (400), rather than
    silently answering something else; the gateway's semantic cache never answers such a
    request (another tool list or JSON schema wants another answer) and relays it.
    """

    tools: list[object] | None = None
    functions: list[object] | None = None
    tool_choice: object = None
    response_format: dict[str, object] | None = None
    logprobs: bool | int | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, object] | None = None
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None

    def first_set(self) -> str | None:
        """The first field set to other than its no-op value, None when there is none."""
        no_op = {
            "tools": not self.tools,
            "functions": not self.functions,
            "tool_choice": self.tool_choice in (None, "none", "auto") or not self.tools,
            "response_format": self.response_format is None
            or self.response_format.get("type") == "text",
            "logprobs": not self.logprobs,
            "top_logprobs": not self.top_logprobs,
            "logit_bias": not self.logit_bias,
            "echo": not self.echo,
            "suffix": not self.suffix,
            "best_of": self.best_of is None or self.best_of <= 1,
            "presence_penalty": not self.presence_penalty,
            "frequency_penalty": not self.frequency_penalty,
            "repetition_penalty": self.repetition_penalty in (None, 1.0),
        }
        return next((name for name, ok in no_op.items() if not ok), None)


class ChatCompletionRequest(_SamplingFields, kw_only=True):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None  # newer name of max_tokens; wins when both are set

    def requested_max_tokens(self) -> int | None:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens


class CompletionRequest(_SamplingFields, kw_only=True):
    # Text, token ids, or a one-element list of text (what some clients send). A mixed or longer
    # list is rejected by `validate_completion`.
    prompt: str | list[int | str]

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


# ---------------------------------------------------------------- responses


class PromptTokensDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int = 0


class CompletionTokensDetails(msgspec.Struct, kw_only=True):
    """Predicted Outputs' accounting, as OpenAI reports it: prediction tokens the answer kept
    (`accepted`) and those it did not (`rejected`); the answer's tokens are `completion_tokens`."""

    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


class Usage(msgspec.Struct, kw_only=True, omit_defaults=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    # Always set by kvgate workers; `None` only from upstreams that send null.
    prompt_tokens_details: PromptTokensDetails | None = msgspec.field(
        default_factory=PromptTokensDetails
    )
    # Set only when the request carried a `prediction`.
    completion_tokens_details: CompletionTokensDetails | None = None


def make_usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens),
    )


# We send "stop" or "length"; `str` so the gateway also decodes other upstreams' reasons.
FinishReason = str


class AssistantMessage(msgspec.Struct, kw_only=True):
    role: str = "assistant"
    content: str | None = ""


class ChatChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason | None
    logprobs: None = None


class ChatCompletionResponse(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    text: str
    finish_reason: FinishReason | None
    logprobs: None = None


class CompletionResponse(msgspec.Struct, kw_only=True):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ChatDelta(msgspec.Struct, kw_only=True):
    # UNSET fields are left out of the JSON (a delta names only what it carries).
    role: str | None | msgspec.UnsetType = msgspec.UNSET
    content: str | None | msgspec.UnsetType = msgspec.UNSET


class ChatChunkChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    """One SSE event of a streamed chat completion. With `include_usage`, the last chunk before
    `[DONE]` has `choices == []` and `usage` set; the others omit `usage`."""

    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None | msgspec.UnsetType = msgspec.UNSET


class CompletionChunk(msgspec.Struct, kw_only=True):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None | msgspec.UnsetType = msgspec.UNSET


class ModelCard(msgspec.Struct, kw_only=True):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "kvgate"
    max_model_len: int | None = None


class ModelList(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[ModelCard]


# ---------------------------------------------------------------- errors


class ErrorDetail(msgspec.Struct, kw_only=True):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    error: ErrorDetail


# OpenAI's `type` per HTTP status; a caller may pass another.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_body(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    type: str | None = None,  # noqa: A002 - the OpenAI field's name
) -> bytes:
    """The JSON bytes of an OpenAI error body for `status`."""
    detail = ErrorDetail(
        message=message,
        type=type or ERROR_TYPES.get(status, "invalid_request_error"),
        param=param,
        code=code,
    )
    return msgspec.json.encode(ErrorBody(error=detail))


class RequestError(Exception):
    """A request the server answers with an OpenAI error (never a 500)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.close = close  # `Connection: close`: the connection's byte stream is not usable

    def body(self) -> bytes:
        return error_body(self.status, self.message, param=self.param, code=self.code)


UNREADABLE_BODY = "the request body could not be read: cut short, or not in its Content-Encoding"


def decode_request(body: bytes, cls: type[T]) -> T:
    """Decode a request body; bad JSON or types raise `RequestError(400)` naming the field."""
    if not body:
        raise RequestError(400, "the request body is empty; expected a JSON object")
    try:
        return msgspec.json.decode(body, type=cls)
    except msgspec.ValidationError as exc:
        text = str(exc)
        param = text.rsplit("at `$.", 1)[1].rstrip("`") if "at `$." in text else None
        raise RequestError(400, f"invalid request: {text}", param=param) from exc
    except msgspec.DecodeError as exc:
        raise RequestError(400, f"the request body is not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:  # msgspec checks UTF-8 in strings itself
        raise RequestError(400, "the request body is not valid UTF-8") from exc
    except RecursionError as exc:  # arrays or objects nested thousands deep
        raise RequestError(400, "the request body's JSON is nested too deeply") from exc


def check_answer_options(body: bytes) -> None:
    """A worker's refusal (400) of a request that sets an `AnswerOptions` field."""
    field = decode_request(body, AnswerOptions).first_set()
    if field is not None:
        raise RequestError(400, f"`{field}` is not supported by this worker", param=field)


def validate_sampling(req: _SamplingFields) -> None:
    """Value rules shared by both endpoints (types are already checked by decoding)."""
    max_tokens = req.requested_max_tokens()  # type: ignore[attr-defined]
    if max_tokens is not None and max_tokens < 1:
        raise RequestError(400, "max_tokens must be at least 1", param="max_tokens")
    if req.temperature is not None and not 0.0 <= req.temperature <= 2.0:
        raise RequestError(400, "temperature must be in [0, 2]", param="temperature")
    if req.top_p is not None and not 0.0 < req.top_p <= 1.0:
        raise RequestError(400, "top_p must be in (0, 1]", param="top_p")
    if req.top_k is not None and req.top_k < -1:
        raise RequestError(400, "top_k must be -1, 0 (off) or positive", param="top_k")
    # The samplers seed a 64-bit generator (torch takes [-2**63, 2**64)); a larger seed was an
    # engine refusal with a traceback in the worker's log.
    if req.seed is not None and not -(2**63) <= req.seed < 2**64:
        raise RequestError(400, "seed must fit in 64 bits", param="seed")
    if req.n is not None and req.n != 1:
        raise RequestError(400, "only n=1 is supported", param="n")
    if isinstance(req.stop, list) and len(req.stop) > 16:
        raise RequestError(400, "at most 16 stop strings are allowed", param="stop")
    if req.prediction is not None:
        if req.prediction.type != "content":
            raise RequestError(400, 'prediction.type must be "content"', param="prediction.type")
        parts = req.prediction.content
        if isinstance(parts, list) and any(p.type != "text" for p in parts):
            raise RequestError(
                400, "only text parts are supported in a prediction", param="prediction.content"
            )


def validate_chat(req: ChatCompletionRequest) -> None:
    validate_sampling(req)
    if not req.messages:
        raise RequestError(400, "messages must not be empty", param="messages")
    for i, msg in enumerate(req.messages):
        if msg.role not in ("system", "user", "assistant", "developer", "tool"):
            raise RequestError(400, f"unknown role {msg.role!r}", param=f"messages[{i}].role")
        if isinstance(msg.content, list) and any(p.type != "text" for p in msg.content):
            raise RequestError(
                400, "only text content parts are supported", param=f"messages[{i}].content"
            )


def validate_completion(req: CompletionRequest) -> str | list[int]:
    """Checks the request; returns the prompt as text or as token ids."""
    validate_sampling(req)
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        elif all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            ids = [int(t) for t in prompt]
            if not ids:
                raise RequestError(400, "prompt must not be empty", param="prompt")
            if min(ids) < 0 or max(ids) >= 2**31:
                raise RequestError(400, "token ids must be in [0, 2**31)", param="prompt")
            return ids
        else:
            raise RequestError(
                400,
                "prompt must be a string, a list of token ids, or a list of one string",
                param="prompt",
            )
    if not prompt:
        raise RequestError(400, "prompt must not be empty", param="prompt")
    return prompt
