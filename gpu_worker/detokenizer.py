"""Incremental detokenization with stop strings, for any engine.

Two rules for what a stream emits:
- only whole UTF-8 characters: a token that ends inside a multi-byte character is held back until
  the character completes (the tokenizer's decode shows an incomplete tail as U+FFFD);
- never a stop string, nor text that could still become one: a tail that is a prefix of some stop
  string is held back until the next token decides it (stop strings may span tokens).

Use: one `IncrementalDetokenizer` per sequence, `add()` the new token ids of each step (eos
excluded), emit what it returns; once `stopped` is set the sequence must finish with reason
"stop". On any other finish, emit `flush()` (the held-back text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

REPLACEMENT = "\ufffd"


class _Decoder(Protocol):
    def decode(self, token_ids: list[int]) -> str: ...


class StopMatcher:
    """Finds the earliest stop string in a text stream fed piece by piece."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._hold_max = max((len(s) for s in self._stops), default=1) - 1
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Text safe to emit now; sets `stopped` (and returns the text before it) on a match."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            self.stopped = True
            return buf[:cut]
        hold = 0
        for k in range(min(len(buf), self._hold_max), 0, -1):
            tail = buf[-k:]
            if any(s.startswith(tail) for s in self._stops):
                hold = k
                break
        self._held = buf[len(buf) - hold :]
        return buf[: len(buf) - hold]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held


class IncrementalDetokenizer:
    """Token ids in, emit-safe text out (see the module rules)."""

    def __init__(self, tokenizer: _Decoder, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        # Text of ids[_prefix:_read] was emitted already; decoding from _prefix (not _read) keeps
        # tokenizers whose pieces depend on their left neighbour (leading spaces) right.
        self._prefix = 0
        self._read = 0
        self._stop = StopMatcher(stop)

    @property
    def stopped(self) -> bool:
        return self._stop.stopped

    def add(self, token_ids: Sequence[int]) -> str:
        if self.stopped or not token_ids:
            return ""
        self._ids.extend(token_ids)
        emitted = self._tokenizer.decode(self._ids[self._prefix : self._read])
        full = self._tokenizer.decode(self._ids[self._prefix :])
        if len(full) <= len(emitted) or full.endswith(REPLACEMENT):
            return ""  # an incomplete character: wait for its remaining bytes
        self._prefix, self._read = self._read, len(self._ids)
        return self._stop.feed(full[len(emitted) :])

    def flush(self) -> str:
        """Everything held back (an incomplete character comes out as U+FFFD)."""
        if self.stopped:
            return ""
        emitted = self._tokenizer.decode(self._ids[self._prefix : self._read])
        full = self._tokenizer.decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        tail = self._stop.feed(full[len(emitted) :]) if len(full) > len(emitted) else ""
        return tail + self._stop.flush()
