"""A byte-level tokenizer with ChatML specials: the tokenizer of the tiny test model and of the
simulated worker. Every byte b is token 3 + b, so any text round-trips exactly; vocab = 259.
"""

from __future__ import annotations

from collections.abc import Sequence

END_OF_TEXT = 0
IM_START = 1
IM_END = 2
BYTE_OFFSET = 3
VOCAB_SIZE = BYTE_OFFSET + 256
SPECIALS: dict[int, str] = {
    END_OF_TEXT: "<|endoftext|>",
    IM_START: "<|im_start|>",
    IM_END: "<|im_end|>",
}


class ByteTokenizer:
    """Implements `gpu_worker.engine_api.Tokenizer`.

    `encode` never produces special ids (the text "<|im_end|>" is encoded as bytes), so a user
    cannot inject a turn boundary; only `apply_chat_template` places specials.
    """

    name = "byte"
    vocab_size = VOCAB_SIZE

    def __init__(self, default_system_prompt: str = "You are a helpful assistant.") -> None:
        self.default_system_prompt = default_system_prompt

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset((IM_END, END_OF_TEXT))

    def encode(self, text: str) -> list[int]:
        return [BYTE_OFFSET + b for b in text.encode("utf-8")]

    def decode_bytes(self, token_ids: Sequence[int]) -> bytes:
        """Raw bytes of the ids; specials render as their names, out-of-vocab ids are dropped."""
        out = bytearray()
        for t in token_ids:
            if BYTE_OFFSET <= t < VOCAB_SIZE:
                out.append(t - BYTE_OFFSET)
            elif t in SPECIALS:
                out += SPECIALS[t].encode()
        return bytes(out)

    def decode(self, token_ids: list[int]) -> str:
        # Incomplete UTF-8 shows as U+FFFD; the incremental detokenizer holds such tails back.
        return self.decode_bytes(token_ids).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        ids: list[int] = []
        if self.default_system_prompt and not any(m.get("role") == "system" for m in messages):
            ids += self._turn("system", self.default_system_prompt)
        for message in messages:
            ids += self._turn(message.get("role", "user"), message.get("content", ""))
        ids.append(IM_START)
        ids += self.encode("assistant\n")
        return ids

    def _turn(self, role: str, content: str) -> list[int]:
        return [IM_START, *self.encode(f"{role}\n{content}"), IM_END, *self.encode("\n")]
