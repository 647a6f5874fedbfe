"""A request's prompt as the worker will see it: token ids, then chained block hashes.

The gateway routes on the same hashes the worker publishes in its KV events, so it must tokenize
exactly as the worker does: the same tokenizer, the same chat template (with the same default
system prompt) and `policies/block_hash.py` with the worker's block size and model id. The worker
names its tokenizer and system prompt in `/stats`; `load_tokenizer` is the ONE place the gateway
turns that name into a tokenizer, importing only torch-free tokenizer modules of gpu_worker.

Cost rules: hashes are computed only when the routing policy reads `matched_blocks`, and once per
request and profile (workers of one model share one). Measured cost on a 2k-token chat prompt is
in docs/routing.md ("Fleet view"); it is small enough to stay on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from config.protocol import ChatCompletionRequest, CompletionRequest
from gpu_worker.byte_tokenizer import ByteTokenizer
from policies.block_hash import block_hashes, extra_key


class ChatTokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]: ...


class Profile(msgspec.Struct, frozen=True):
    """How one worker turns a request into block hashes (equal profiles hash alike)."""

    tokenizer: str  # the worker's `/stats.tokenizer`
    system_prompt: str | None  # its default system prompt; None = the tokenizer's own default
    block_size: int
    model: str


def load_tokenizer(kind: str, system_prompt: str | None) -> ChatTokenizer | None:
    """The tokenizer a worker reports as `kind`; None when the gateway has none like it."""
    if kind == "byte":
        if system_prompt is None:
            return ByteTokenizer()
        return ByteTokenizer(system_prompt)
    return None


class RequestTokens:
    """Turns request bodies into token ids and block hashes for one `Profile`."""

    def __init__(self, profile: Profile, tokenizer: ChatTokenizer) -> None:
        self.profile = profile
        self._tokenizer = tokenizer
        self._extra: dict[str | None, bytes] = {}

    def token_ids(self, endpoint: str, body: bytes) -> list[int]:
        """The prompt's ids as the worker builds them (the body was validated by the parser)."""
        if endpoint == "chat":
            chat = msgspec.json.decode(body, type=ChatCompletionRequest)
            return self._tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.text()} for m in chat.messages]
            )
        prompt = msgspec.json.decode(body, type=CompletionRequest).prompt
        if isinstance(prompt, list):
            if len(prompt) == 1 and isinstance(prompt[0], str):
                return self._tokenizer.encode(prompt[0])
            return [int(t) for t in prompt]
        return self._tokenizer.encode(prompt)

    def hashes(self, token_ids: Sequence[int], cache_salt: str | None) -> list[int]:
        extra = self._extra.get(cache_salt)
        if extra is None:
            extra = extra_key(self.profile.model, cache_salt)
            if len(self._extra) < 1024:  # bounded: one entry per tenant salt seen
                self._extra[cache_salt] = extra
        return block_hashes(token_ids, self.profile.block_size, extra)
