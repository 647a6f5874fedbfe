"""Drafts from a reference text: where a request's prediction says its answer will go next.

A prediction (OpenAI's Predicted Outputs, or a semantic-cache hit's cached answer sent as one) is
rarely the answer word for word: an edited file differs in a few places, an answer to a
paraphrase opens differently and then shares whole sentences. So the engine does not only check
the prediction once after the prompt; whenever the answer's last tokens occur in the reference,
the reference's next tokens are proposed as a draft and checked in the next step (prompt-lookup
style speculative decoding, with the prediction as the only source). A wrong draft costs its
tokens' compute in one step and changes nothing in the answer.

Rules: a match needs the answer's last two tokens at least (one common token says little about
what follows); the longest match wins, and among equally long ones the first at or after where
the previous draft ended, so a draft walks the reference forwards.
"""

from __future__ import annotations

MIN_MATCH_TOKENS = 2


class ReferenceDrafter:
    def __init__(self, reference: list[int]) -> None:
        self.reference = reference
        # Where each pair of consecutive tokens starts in the reference.
        self._pairs: dict[tuple[int, int], list[int]] = {}
        for i in range(len(reference) - 1):
            self._pairs.setdefault((reference[i], reference[i + 1]), []).append(i)
        self._cursor = 0  # where the last draft ended

    def propose(self, tokens: list[int], max_tokens: int) -> list[int]:
        """The reference's continuation after the longest tail of `tokens` it contains, at most
        `max_tokens` long; [] when there is none."""
        if len(tokens) < MIN_MATCH_TOKENS or max_tokens <= 0:
            return []
        starts = self._pairs.get((tokens[-2], tokens[-1]))
        if not starts:
            return []
        ref = self.reference
        best, best_len = -1, 0
        for i in starts:
            follow = i + MIN_MATCH_TOKENS
            if follow >= len(ref):
                continue  # the match ends the reference: nothing to propose
            n = MIN_MATCH_TOKENS
            while n < len(tokens) and i + MIN_MATCH_TOKENS - 1 - n >= 0:
                if ref[i + MIN_MATCH_TOKENS - 1 - n] != tokens[-1 - n]:
                    break
                n += 1
            # Equally long: move to the first one past the last draft's end.
            forward = follow >= self._cursor > best + MIN_MATCH_TOKENS
            if n > best_len or (n == best_len and forward):
                best, best_len = i, n
        if best < 0:
            return []
        follow = best + MIN_MATCH_TOKENS
        draft = ref[follow : follow + max_tokens]
        self._cursor = follow + len(draft)
        return draft
