"""Contrast checks: cheap signs that two similar prompts ask different questions.

The guard's older vetoes (a changed number, "A to B" / "B to A" with the same words around the
connector, negation and antonyms in near-duplicate edits only) let through, on unseen prompts,
the same kinds of sibling said with other words. Each check looks at one general kind, over the
tokens `PromptTerms.tokens` holds (lower case, apostrophes dropped, numerals read as digits,
punctuation and symbols as tokens), and answers True for "another question", whatever the edit
shape (a near-duplicate or a broad rewrite):

- `operator`: the arithmetic operators differ ("3x + 7" / "3x - 7", "plus" / "minus").
  `operator_class` (session 6, operators.py): each side names an operator the other does not,
  or one stands where the other has another, over the whole closed class (arithmetic,
  comparison, logical / bitwise, shift, assignment, shell): "==" / "===", "12 & 10" / "12 ^
  10", ">" / ">>", "1/2 × 1/3" / "1/2 divided by 1/3".
- `negated_word`: one side negates a word that the other side, negating nothing, says plainly
  ("a file that does *not exist*" / "test whether a file exists").
- `direction`: two things in opposite order around a direction word ("dict into JSON" / "JSON
  string to dict"), up to three topic words apart, matching "dict" / "dictionary", "km" /
  "kilometers"; "how many X in Y" reads as a conversion of Y into X. `direction_signs`
  (session 6): the same, with arrows and comparison signs as direction words too ("Boston →
  Tokyo", "a > b"; "←" and "<" the other way).
- `time_frame`: now / tomorrow / yesterday on both sides, differently.
- `sort_order`: both sides sort, one in descending order, the other not.
- `reversing_prefix`: a word against itself behind "anti-", "un-", "non-", "dis-", "de-", ...
- `antonym`: a word of the guard's antonym list against its opposite, irregular forms read as
  their word ("won" / "lost"); `antonym_added`: one side names both words of a pair, the other
  only one ("horizontally" / "horizontally and vertically").

The word lists are closed classes of English (operators, negators, prepositions, deictic time
words, order words, negating prefixes, irregular forms of the existing antonym list), not words
picked from an evaluation set. Pure string work, microseconds per pair. Every check is symmetric
in its two arguments. Callers keep one rule: a check only ever vetoes (True = miss), so adding
one can only turn hits into misses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from policies.semantic.edit_shape import stem
from policies.semantic.operators import arithmetic_changed, operator_changed
from policies.semantic.pair_features import _ANTONYMS, _STOPWORDS
from policies.semantic.role_checks import grouping, logic_changed, number_roles, swapped_words
from policies.semantic.scale_checks import letter_swapped, opposite_pole

Tokens = Sequence[str]

# Words that carry no topic: the guard's stopwords (question words, prepositions, politeness)
# and a few auxiliaries; skipped when looking for the word a negation or a number is about.
_FILLER = _STOPWORDS | frozenset("have has had vs versus".split())
# Negators that flip what is asked. Not "cant" / "cannot": inability states the asker's
# problem ("I can't sleep"), whose answer is the positive ("how to fall asleep").
_NEGATORS = frozenset(
    "not no never without dont doesnt isnt arent wasnt werent wont didnt shouldnt havent "
    "hasnt nor nothing none except excluding".split()
)

# ---- negated word --------------------------------------------------------------------------

# A negation governs the next topic word at most this many tokens on ("does not really exist").
_NEGATION_REACH = 4


def _stem(word: str) -> str:
    # The guard's stemmer keeping four letters ("strings" -> "string", but "string" stays),
    # then a final "e" off, so that both forms of a word meet: it takes "es" off "primes" and
    # "states" ("prim", "stat"), where "prime" and "state" keep theirs.
    stemmed = stem(word, keep=4)
    return stemmed[:-1] if len(stemmed) > 4 and stemmed.endswith("e") else stemmed


def _topic(token: str) -> bool:
    return token.isalpha() and len(token) > 1 and token not in _FILLER and token not in _NEGATORS


def negated_words(tokens: Tokens) -> tuple[frozenset[str], frozenset[str]]:
    """(stems of the words under a negation, stems of the other topic words); "X-free" and
    "X free" negate X ("egg-free", "gluten free"; not the verb, "free up port 8080")."""
    negated: set[str] = set()
    plain: set[str] = set()
    pending = 0
    for k, token in enumerate(tokens):
        if token in _NEGATORS:
            pending = _NEGATION_REACH
            continue
        if token == "free" and k > 0 and tokens[k + 1 : k + 2] != ("up",):  # not "free up"
            word = tokens[k - 2] if tokens[k - 1] == "-" and k > 1 else tokens[k - 1]
            if _topic(word):
                plain.discard(_stem(word))
                negated.add(_stem(word))
                continue
        if _topic(token):
            (negated if pending else plain).add(_stem(token))
            pending = 0
        elif pending:
            pending -= 1
    return frozenset(negated), frozenset(plain)


def negated_word_asserted(a: Tokens, b: Tokens) -> bool:
    """One side negates a word that the other side, which negates nothing, says plainly
    ("a file does not exist" / "test whether a file exists"). When both sides negate
    something, negations moved around in a rewrite ("module not found" / "No module named").
    """
    neg_a, plain_a = negated_words(a)
    neg_b, plain_b = negated_words(b)
    if neg_a and not neg_b:
        return bool(neg_a & (plain_b - plain_a))
    if neg_b and not neg_a:
        return bool(neg_b & (plain_a - plain_b))
    return False


# ---- direction -----------------------------------------------------------------------------

# Prepositions that put a source before a target ("X to Y", "X into Y", "X as Y"): the
# existing veto's connectors without the ones that order nothing in a broad rewrite ("in",
# "for", "by", "per", "over": "sort dicts by key", "weather in Chicago").
_DIRECTION_WORDS = frozenset("to into as than vs versus".split())
# Arrows and comparison signs point the same way ("Boston → Tokyo", "Boston -> Tokyo", "a > b");
# "<" and "←" the other way, like "from" (session 6). "->" arrives as "-", ">".
_FORWARD_SIGNS = frozenset("→ ⇒ >".split())
_BACKWARD_SIGNS = frozenset("← ⇐ <".split())
# Two topic words at most this many topic words apart form a directed pair.
_DIRECTION_REACH = 3
# A word this long or longer matches a longer word it begins ("dict" / "dictionary").
_PREFIX_MIN = 3
# Two words that begin with this many letters in common are one word spelt two ways
# ("kilometres" / "kilometers").
_SHARED_MIN = 6


def _after(tokens: Tokens, start: int, reach: int = 3) -> str:
    """Stem of the first topic word in tokens[start : start + reach], or ""."""
    return next((_stem(w) for w in tokens[start : start + reach] if _topic(w)), "")


def _directed(tokens: Tokens, signs: bool = False) -> set[tuple[str, str]]:
    """(source, target) pairs: "X to Y", "X into Y", "X as Y", "Y from X", "5 X in Y" (a
    conversion of X), and "how many Y ... in X" (a conversion of X into Y)."""
    forward = _DIRECTION_WORDS | _FORWARD_SIGNS if signs else _DIRECTION_WORDS
    topic = [(k, _stem(w)) for k, w in enumerate(tokens) if _topic(w)]
    pairs: set[tuple[str, str]] = set()
    for x, (k1, w1) in enumerate(topic):
        counted = k1 > 0 and tokens[k1 - 1][:1].isdigit()
        for k2, w2 in topic[x + 1 : x + 1 + _DIRECTION_REACH]:
            between = tokens[k1 + 1 : k2]
            if w1 == w2:
                continue
            if any(t in forward for t in between):
                pairs.add((w1, w2))
            elif "from" in between or (signs and any(t in _BACKWARD_SIGNS for t in between)):
                pairs.add((w2, w1))
            elif counted and "in" in between:
                pairs.add((w1, w2))
    for k in range(len(tokens) - 1):
        if (tokens[k], tokens[k + 1]) == ("how", "many") and "in" in tokens[k + 2 :]:
            unit = _after(tokens, k + 2)
            source = _after(tokens, tokens.index("in", k + 2) + 1, 4)
            if unit and source and unit != source:
                pairs.add((source, unit))
    return pairs


def _abbreviates(short: str, long: str) -> bool:
    """ "km" / "kilometer", "str" / "string", "js" / "javascript": a short word whose letters
    appear in order in the long word, beginning with its first letter."""
    if not 2 <= len(short) <= 4 or len(long) <= len(short) or short[0] != long[0]:
        return False
    rest = iter(long[1:])
    return all(ch in rest for ch in short[1:])


def _same(x: str, y: str) -> bool:
    """One word, spelt out, abbreviated or spelt another way."""
    if x == y:
        return True
    short, long = sorted((x, y), key=len)
    if len(short) >= _PREFIX_MIN and long.startswith(short):
        return True
    shared = len(os.path.commonprefix([short, long]))
    return shared >= _SHARED_MIN or _abbreviates(short, long)


def direction_reversed(a: Tokens, b: Tokens, signs: bool = False) -> bool:
    """A pair (x, y) directed one way in `a` appears reversed in `b` and never in `a`'s order.
    Words are matched exactly (stems), or by prefix when the pair's two words do not match
    each other ("String" / "str" are then two words, matched exactly)."""
    in_a, in_b = _directed(a, signs), _directed(b, signs)
    for x, y in in_a:
        fuzzy = not _same(x, y)

        def match(p: str, q: str, fuzzy: bool = fuzzy) -> bool:
            return p == q or (fuzzy and _same(p, q))

        if any(match(x, v) and match(y, u) for u, v in in_b) and not any(
            match(x, u) and match(y, v) for u, v in in_b
        ):
            return True
    return False


# ---- time frame ----------------------------------------------------------------------------

_TIME_FRAMES = {
    "now": "present",
    "currently": "present",
    "current": "present",
    "presently": "present",
    "today": "present",
    "tonight": "present",
    "tomorrow": "tomorrow",
    "yesterday": "yesterday",
}


def time_frame_changed(a: Tokens, b: Tokens) -> bool:
    x = {_TIME_FRAMES[t] for t in a if t in _TIME_FRAMES}
    y = {_TIME_FRAMES[t] for t in b if t in _TIME_FRAMES}
    return bool(x and y) and not (x & y)


# ---- sort order ----------------------------------------------------------------------------

_SORT_WORDS = frozenset("sort sorts sorted sorting order ordered ordering".split())
_DESCENDING = frozenset("descending decreasing desc reverse reversed".split())
_ASCENDING = frozenset("ascending increasing asc".split())
_HIGH = frozenset("highest largest biggest greatest most newest latest high".split())
_LOW = frozenset("lowest smallest least oldest earliest low".split())


def sort_order(tokens: Tokens) -> str:
    """ "desc", "asc" or "" (no sort named) for a prompt that sorts; ascending is every sort
    function's default, so a sort without an order reads "asc"."""
    if not _SORT_WORDS & set(tokens):
        return ""
    for k, token in enumerate(tokens):
        if token in _DESCENDING:
            return "desc"
        if token in _ASCENDING:
            return "asc"
        nxt = tokens[k + 1 : k + 3]
        if token in _HIGH and ("first" in nxt or ("to" in nxt and _LOW & set(tokens[k : k + 4]))):
            return "desc"
        if token in _LOW and ("first" in nxt or ("to" in nxt and _HIGH & set(tokens[k : k + 4]))):
            return "asc"
    return "asc"


def sort_order_changed(a: Tokens, b: Tokens) -> bool:
    x, y = sort_order(a), sort_order(b)
    return bool(x and y) and x != y


# ---- reversing prefix ----------------------------------------------------------------------

# English prefixes that negate or reverse a word ("derivative" / "antiderivative", "sorted" /
# "unsorted", "compress" / "decompress"). Typo folding would read such a pair as a misspelling,
# and the two words embed close.
_REVERSING_PREFIXES = ("anti", "counter", "contra", "non", "un", "dis", "de")
_BASE_MIN = 4


def reversing_prefix(a: Tokens, b: Tokens) -> bool:
    """A word of one side is a word of the other side behind a reversing prefix."""
    only_a = {w for w in set(a) - set(b) if w.isalpha()}
    only_b = {w for w in set(b) - set(a) if w.isalpha()}
    for x in only_a:
        for y in only_b:
            short, long = sorted((x, y), key=len)
            if len(short) >= _BASE_MIN and long[: len(long) - len(short)] in _REVERSING_PREFIXES:
                if long.endswith(short):
                    return True
    return False


# ---- antonyms ------------------------------------------------------------------------------

# Forms of the words in the guard's antonym list (pair_features._ANTONYM_PAIRS) that `stem`
# does not bring back to the listed word: irregular verbs and agent nouns ("won", "loser") and
# -ed forms of verbs ending in "e" ("closed"). English morphology, so that "won" / "lost" reads
# as the listed "win" / "lose".
_IRREGULAR = {
    "won": "win",
    "winner": "win",
    "winners": "win",
    "lost": "lose",
    "loser": "lose",
    "losers": "lose",
    "sold": "sell",
    "bought": "buy",
    "began": "begin",
    "begun": "begin",
    "kept": "keep",
    "sent": "send",
    "received": "receive",
    "closed": "close",
    "opened": "open",
    "wrote": "write",
    "written": "write",
}


def _lemmas(tokens: Tokens) -> set[str]:
    """Words as the antonym list names them; words under a negation ("not vertically") are
    left out: the negation check owns them."""
    out = set()
    pending = 0
    for t in tokens:
        if t in _NEGATORS:
            pending = _NEGATION_REACH
            continue
        if pending:
            pending = 0 if _topic(t) else pending - 1
            continue
        if t in _IRREGULAR:
            out.add(_IRREGULAR[t])
        elif t in _ANTONYMS:
            out.add(t)
        elif t.endswith("ly") and t[:-2] in _ANTONYMS:
            out.add(t[:-2])  # "horizontally" -> "horizontal"
        elif _topic(t):
            out.add(_stem(t))
    return out


def antonym_swapped(a: Tokens, b: Tokens) -> bool:
    """One side says a word of the antonym list, the other its opposite, and neither says
    both ("who won" / "who lost"); in any edit shape, irregular forms read as their word."""
    x, y = _lemmas(a), _lemmas(b)
    return any(_ANTONYMS.get(w, set()) & (y - x) for w in x - y)


def antonym_added(a: Tokens, b: Tokens) -> bool:
    """One side names both words of an antonym pair, the other only one of them
    ("center horizontally" / "horizontally and vertically")."""
    x, y = _lemmas(a), _lemmas(b)
    for one, both in ((x, y), (y, x)):
        for w in one:
            opposite = _ANTONYMS.get(w, set())
            if opposite & both and not opposite & one and w in both:
                return True
    return False


def direction_signs_reversed(a: Tokens, b: Tokens) -> bool:
    """`direction_reversed` with arrows and comparison signs read as direction words."""
    return direction_reversed(a, b, signs=True)


Check = Callable[[Tokens, Tokens], bool]
# The first eight are on by default (config.semantic.GuardConfig); the session-6 checks are
# options: `operator_class` widens `operator`, `direction_signs` widens `direction`.
CHECKS: dict[str, Check] = {
    "operator": arithmetic_changed,
    "negated_word": negated_word_asserted,
    "direction": direction_reversed,
    "time_frame": time_frame_changed,
    "sort_order": sort_order_changed,
    "reversing_prefix": reversing_prefix,
    "antonym": antonym_swapped,
    "antonym_added": antonym_added,
    "operator_class": operator_changed,
    "direction_signs": direction_signs_reversed,
    "swapped_words": swapped_words,
    "number_roles": number_roles,
    "grouping": grouping,
    "opposite_pole": opposite_pole,
    "letter_swapped": letter_swapped,
    "logic_changed": logic_changed,
}
