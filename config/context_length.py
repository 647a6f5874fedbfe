"""A worker's context-length rule, in one place for the worker and the gateway.

The worker enforces it on every request (gpu_worker/openai_handlers.py). The gateway applies the
same rule, with the limits the workers report in `/stats`, before it answers a request from its
semantic cache (gateway/hit_context.py): a cache hit must not answer with a 200 what a worker
would refuse with a 400, so both refusals are this one function's.
"""

from __future__ import annotations

import msgspec

from config.protocol import RequestError

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


class ContextLimit(msgspec.Struct, frozen=True, kw_only=True):
    """One worker's limits: a sequence (prompt + output) holds at most `max_model_len` tokens,
    and a prompt at most `max_prompt_tokens` (the context, or the whole KV cache, less one token
    to generate)."""

    max_model_len: int
    max_prompt_tokens: int

    def check(self, num_prompt_tokens: int, max_tokens: int | None, *, param: str) -> None:
        """`RequestError(400, code="context_length_exceeded")` when a request with this prompt
        length and `max_tokens` (None: not given, the worker fills in what room is left) does
        not fit; `param` names the prompt's field (`messages` or `prompt`)."""
        if num_prompt_tokens > self.max_prompt_tokens:
            raise RequestError(
                400,
                f"the prompt has {num_prompt_tokens} tokens; this worker takes at most"
                f" {self.max_prompt_tokens} (context {self.max_model_len})",
                param=param,
                code=CONTEXT_LENGTH_EXCEEDED,
            )
        if max_tokens is not None and max_tokens > self.max_model_len - num_prompt_tokens:
            raise RequestError(
                400,
                f"max_tokens {max_tokens} + the prompt's {num_prompt_tokens} tokens exceed the"
                f" context of {self.max_model_len} tokens",
                param="max_tokens",
                code=CONTEXT_LENGTH_EXCEEDED,
            )
