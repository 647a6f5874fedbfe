"""Polarity features: does one side of a broad rewrite negate or reverse what the other asks?

Most false hits left on unseen prompts are broad rewrites that turn the question around in
other words ("no-oven dinner ideas" / "a dinner I can make in the oven", "universal donor" /
"universal recipient"). The cheap features count a negation only through the guard's short
negation list, and the contrast checks veto only exact shapes. These three features give the
broad-rewrite model whole-prompt signs instead, to weigh against the cosine (an experiment,
session 6: `benchmarks/semantic_pooled.py` candidate `+polarity`; used only when the weights
name them):

- `privative_one_side`: exactly one side has a word of a closed class of negators and
  privatives (not, no, never, without, none, except, missing, lacking, free as in
  "sugar-free", unable, ...);
- `negated_asserted`: a topic word under a negation on one side is said plainly on the other
  (the `negated_word` check's reading, here also when both sides negate something);
- `reversal_one_side`: exactly one side has a reversing word (reverse, opposite, inverse,
  back, undo, ...).

The word classes are closed classes of English, not words taken from an evaluation set.
Symmetric in the two prompts; pure string work.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.semantic.contrast_checks import negated_words

POLARITY_FEATURE_NAMES: tuple[str, ...] = (
    "privative_one_side",
    "negated_asserted",
    "reversal_one_side",
)

_PRIVATIVES = frozenset(
    "not no never without dont doesnt isnt arent wasnt werent wont didnt shouldnt havent "
    "hasnt nor none neither nothing nobody nowhere non except excluding exclude missing "
    "lacking lack lacks absent unable cannot cant fail fails failed".split()
)
_REVERSING = frozenset(
    "reverse reversed reversing opposite inverse inverted backward backwards back undo revert "
    "vice".split()
)


def _privative(tokens: Sequence[str]) -> bool:
    # "sugar-free", "no-oven": a hyphenated "free" is a privative; a plain "free" is a price.
    if any(t in _PRIVATIVES for t in tokens):
        return True
    return any(t == "free" and k > 0 and tokens[k - 1] == "-" for k, t in enumerate(tokens))


def polarity_features(a: Sequence[str], b: Sequence[str]) -> list[float]:
    """Features in POLARITY_FEATURE_NAMES order over two prompts' tokens."""
    neg_a, plain_a = negated_words(a)
    neg_b, plain_b = negated_words(b)
    asserted = bool(neg_a & (plain_b - plain_a)) or bool(neg_b & (plain_a - plain_b))
    reversal_a = any(t in _REVERSING for t in a)
    reversal_b = any(t in _REVERSING for t in b)
    return [
        float(_privative(a) != _privative(b)),
        float(asserted),
        float(reversal_a != reversal_b),
    ]
