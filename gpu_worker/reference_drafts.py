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

How long a draft is: a checked token that is not kept costs compute for nothing (on a CPU a
few percent of a decode step each; on a GPU at small batch, far less). A draft starts at
`FIRST_DRAFT_TOKENS`, doubles after a draft kept whole, and falls back after one that was not:
a right prediction of n tokens is checked in ~log2(n / 8) steps, and a wrong one wastes at most
8 tokens' compute a step (measured: checking each draft whole made answers to paraphrases 4-6 %
slower than no prediction; docs/benchmarks.md, "Session 10: Predicted Outputs and verified hits
on the torch engine").
"""

from __future__ import annotations

import bisect

MIN_MATCH_TOKENS = 2
FIRST_DRAFT_TOKENS = 8
# Bounds on the work of one match, which runs on the engine's thread after every token of a
# sequence with a prediction: a repetitive reference ("a a a …") has a pair at every position.
MAX_CANDIDATES = 64  # occurrences of the answer's last pair looked at, nearest the cursor
MAX_MATCH_TOKENS = 64  # a tail this long is as good as any longer one


class ReferenceDrafter:
    """Drafts for one sequence: `propose` the next draft, then report how it went (`checked`).
    The first draft is the reference's start (the prediction right after the prompt); after a
    draft kept whole whose next token (the model's own) is the reference's next one too, the
    next draft continues from there; otherwise it comes from matching the answer's tail."""

    def __init__(self, reference: list[int]) -> None:
        self.reference = reference
        # Where each pair of consecutive tokens starts in the reference.
        self._pairs: dict[tuple[int, int], list[int]] = {}
        for i in range(len(reference) - 1):
            self._pairs.setdefault((reference[i], reference[i + 1]), []).append(i)
        self._cursor = 0  # where the last draft ended
        self._following = True  # the answer follows the reference at the cursor
        self.limit = FIRST_DRAFT_TOKENS  # the next draft's length limit

    def propose(self, tokens: list[int], max_tokens: int) -> list[int]:
        """The next draft for an answer that is `tokens` so far, at most `max_tokens` (and the
        length limit) long; [] when the reference has nothing to offer."""
        n = min(max_tokens, self.limit)
        if n <= 0:
            return []
        ref = self.reference
        if self._following and not tokens:
            start: int | None = self._cursor  # the first draft: the prediction's start
        elif self._following and self._cursor < len(ref) and tokens[-1] == ref[self._cursor]:
            # The model's own token after a draft kept whole is the reference's next one.
            start = self._cursor + 1
        else:
            start = self._match(tokens)
        if start is None or start >= len(ref):
            return []
        draft = ref[start : start + n]
        self._cursor = start + len(draft)
        return draft

    def checked(self, num_drafted: int, num_kept: int) -> None:
        """The last draft kept its first `num_kept` of `num_drafted` tokens."""
        self._following = num_kept == num_drafted
        self.limit = self.limit * 2 if self._following else FIRST_DRAFT_TOKENS

    def _match(self, tokens: list[int]) -> int | None:
        """Where the reference continues the longest tail of `tokens` it contains (two tokens
        at least), preferring among equally long tails the first past the last draft's end."""
        if len(tokens) < MIN_MATCH_TOKENS:
            return None
        starts = self._pairs.get((tokens[-2], tokens[-1]))
        if not starts:
            return None
        ref = self.reference
        if len(starts) > MAX_CANDIDATES:  # a repetitive reference: those nearest the cursor
            at = bisect.bisect_left(starts, self._cursor - MIN_MATCH_TOKENS)
            lo = max(0, min(at - MAX_CANDIDATES // 2, len(starts) - MAX_CANDIDATES))
            starts = starts[lo : lo + MAX_CANDIDATES]
        longest = min(len(tokens), MAX_MATCH_TOKENS)
        best, best_len = None, 0
        for i in starts:
            follow = i + MIN_MATCH_TOKENS
            if follow >= len(ref):
                continue  # the match ends the reference: nothing to propose
            n = MIN_MATCH_TOKENS
            while n < longest and follow - 1 - n >= 0 and ref[follow - 1 - n] == tokens[-1 - n]:
                n += 1
            forward = best is not None and follow >= self._cursor > best
            if n > best_len or (n == best_len and forward):
                best, best_len = follow, n
        return best
