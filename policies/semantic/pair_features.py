"""Cheap lexical features of a (query, cached prompt) pair, for the false-hit guard.

Near-duplicates that need another answer differ in a few words: a number (15 % of 80 / of 90), a
negation (is NULL / is not NULL), a direction (encode / decode), an entity (Austria / Australia).
Embeddings of such pairs are nearly identical, so the guard looks at the words themselves:
which numbers, negations and content words one side has and the other lacks. Everything here is
pure string work (tens of microseconds a pair); no model, no I/O. The one model-based feature,
the similarity of replaced spans (see edit_shape), is computed by the caller and passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from policies.semantic.edit_shape import EditShape, edit_shape, stem
from policies.semantic.numerals import read_numerals

FEATURE_NAMES: tuple[str, ...] = (
    "cosine",
    "numbers_differ",
    "number_one_side",
    "negation_differs",
    "antonym_swap",
    "jaccard",
    "overlap",
    "substitution",
    "min_unique",
    "max_unique",
    "token_ratio",
    "edit_ops",
    "span_similarity",
    "narrow_dissimilar",
    "one_swap_dissimilar",
)

# Exponents read as "^n" ("2⁵" -> "2^5", "x¹⁰" -> "x^10"): every superscript digit, not
# only Latin-1's ¹²³, a run of them as one number.
_SUPERSCRIPT_DIGITS = str.maketrans({sup: str(n) for n, sup in enumerate("⁰¹²³⁴⁵⁶⁷⁸⁹")})
_SUPERSCRIPT_RUN = re.compile("[⁰¹²³⁴⁵⁶⁷⁸⁹]+")
_HALF = str.maketrans({"½": " 0.5 "})
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero _ two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70"})
_NUMBER_WORDS.update({"eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000"})
_NUMBER_WORDS.update({"squared": "^2", "cubed": "^3", "double": "2", "twice": "2"})
_ORDINALS = {"first": "1", "second": "2", "third": "3", "1st": "1", "2nd": "2", "3rd": "3"}
_NEGATIONS = frozenset(
    "not no never without none nor cannot cant dont doesnt isnt arent wont shouldnt neither "
    "non exclude excluding except".split()
)
# Generic pairs of words whose swap reverses what is asked. Kept to common English, not to the
# evaluation set: a swap of such a pair (one side has a, the other b) is a strong "other answer".
_ANTONYM_PAIRS = (
    "enable disable|add remove|increase decrease|encode decode|encrypt decrypt|upper lower|"
    "uppercase lowercase|min max|minimum maximum|largest smallest|biggest smallest|"
    "highest lowest|ascending descending|increasing decreasing|first last|before after|"
    "start end|begin end|open close|push pull|import export|upload download|input output|"
    "accept decline|accept reject|buy sell|win lose|true false|yes no|on off|show hide|"
    "lock unlock|install uninstall|compress decompress|zip unzip|serialize deserialize|"
    "even odd|row column|horizontal vertical|left right|top bottom|above below|local remote|"
    "inner outer|today tomorrow|today yesterday|"
    "yesterday tomorrow|next last|next previous|past future|old new|oldest newest|"
    "earliest latest|north south|east west|male female|boy girl|"
    "sum product|plus minus|"
    "multiply divide|stop start|keep discard|keep delete|get set|read write|"
    "send receive|client server|sync async|inside outside|long short|fast slow|hot cold|"
    "summer winter|morning evening|day night|sunrise sunset|"
    "light dark|more less|most least|many few|"
    # Session 9: more common pairs of opposite actions and states.
    "create delete|create remove|create destroy|insert delete|insert remove|add delete|"
    "include exclude|grant revoke|attach detach|join leave|"
    "expand collapse|maximize minimize|increase reduce|deposit withdraw|credit debit|"
    "borrow lend|pass fail|success failure|positive negative|public private|enter exit|"
    "arrive depart|arrival departure|visible hidden|online offline|valid invalid"
)
_ANTONYMS: dict[str, set[str]] = {}
for _pair in _ANTONYM_PAIRS.split("|"):
    _a, _b = _pair.split()
    _ANTONYMS.setdefault(_a, set()).add(_b)
    _ANTONYMS.setdefault(_b, set()).add(_a)

_STOPWORDS = frozenset(
    "a an the of in on at to for from by with and or is are was were be been being do does did "
    "i me my we you your u it its this that these those what whats which who whom how can could "
    "would should will shall may might must please pls plz thanks hey hi quick one some any "
    "there their they them he she his her our us as if so than then just like get got give tell "
    "me need want know way best good right simple simplest easy easiest help make about into "
    "up out over also really very much here im ive id youre whats hows thats is there".split()
)
# Temperature units written as symbols read as their words, so "30°C" and "30 celsius" match
# and "30°C in F" / "30°F in C" differ in words, not only in a letter.
_UNITS = (
    (re.compile(r"°\s*c\b"), " celsius "),
    (re.compile(r"°\s*f\b"), " fahrenheit "),
    (re.compile(r"°"), " degrees "),
)
_TOKEN = re.compile(r"[a-z]+|\d+(?:[.,]\d+)*|\^\d+|[%°×÷=+<>]")


@dataclass(frozen=True, slots=True)
class PromptTerms:
    """What the guard keeps of one prompt: stored next to each cache entry, computed once."""

    numbers: frozenset[str]
    negations: int
    content: frozenset[str]
    # Every token in order (stopwords and single letters too): equal only for the same
    # wording up to case, punctuation and spacing.
    wording: str = ""

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(self.wording.split(" ")) if self.wording else ()


def prompt_terms(text: str) -> PromptTerms:
    # Numerals first, on the original case: "World War II" / "WWII" / "ww2" all read "2".
    lowered = _SUPERSCRIPT_RUN.sub(
        lambda run: "^" + run.group().translate(_SUPERSCRIPT_DIGITS), read_numerals(text)
    )
    lowered = lowered.lower().translate(_HALF).replace("'", "").replace("’", "")
    for pattern, word in _UNITS:
        lowered = pattern.sub(word, lowered)
    numbers: set[str] = set()
    negations = 0
    content: set[str] = set()
    tokens = _TOKEN.findall(lowered)
    for token in tokens:
        if token[0].isdigit():
            numbers.add(token.replace(",", ""))
            continue
        if token[0] == "^":
            numbers.add(token)
            continue
        if token in _NEGATIONS:
            negations += 1
            continue
        if token in _NUMBER_WORDS:
            numbers.add(_NUMBER_WORDS[token])
            continue
        if token in _ORDINALS:
            content.add(token)
            continue
        if len(token) == 1 and token not in "x%":
            continue
        if token not in _STOPWORDS:
            content.add(stem(token) if token not in _ANTONYMS else token)
    wording = " ".join(re.findall(r"\w+|[^\w\s]", lowered))
    return PromptTerms(frozenset(numbers), negations, frozenset(content), wording)


def _antonym_swap(a: frozenset[str], b: frozenset[str]) -> bool:
    only_a, only_b = a - b, b - a
    return any(_ANTONYMS.get(word, set()) & only_b for word in only_a)


def antonym_swap(a: PromptTerms, b: PromptTerms) -> bool:
    return _antonym_swap(a.content, b.content)


def numbers_changed(a: PromptTerms, b: PromptTerms) -> bool:
    """Both sides have numbers and neither set holds the other: "16-year-old" / "6-year-old".
    (One side adding a number, "in python" / "in python 3", is left to the model.)"""
    return bool(a.numbers and b.numbers) and not (a.numbers <= b.numbers or b.numbers <= a.numbers)


def edit_of(a: PromptTerms, b: PromptTerms, known_words: frozenset[str] = frozenset()) -> EditShape:
    return edit_shape(a.tokens, b.tokens, _STOPWORDS, known_words)


def pair_features(
    cosine: float,
    a: PromptTerms,
    b: PromptTerms,
    edit: EditShape | None = None,
    span_similarity: float = 1.0,
) -> list[float]:
    """Features in `FEATURE_NAMES` order; symmetric in (a, b). `span_similarity` is the
    lowest embedding similarity of a replaced span pair of `edit` (1.0 when none)."""
    edit = edit if edit is not None else edit_of(a, b)
    only_a, only_b = a.content - b.content, b.content - a.content
    common = len(a.content & b.content)
    union = len(a.content | b.content)
    smaller = min(len(a.content), len(b.content))
    overlap = common / smaller if smaller else 1.0
    min_unique = min(len(only_a), len(only_b))
    return [
        cosine,
        float(bool(a.numbers and b.numbers and a.numbers != b.numbers)),
        float(bool(a.numbers) != bool(b.numbers)),
        float((a.negations > 0) != (b.negations > 0)),
        float(_antonym_swap(a.content, b.content)),
        common / union if union else 1.0,
        overlap,
        # A one-for-one swap with the rest kept: the shape of a hard negative.
        overlap * float(min_unique >= 1),
        float(min(min_unique, 3)),
        float(min(max(len(only_a), len(only_b)), 6)),
        edit.ratio,
        float(min(edit.ops, 6)),
        span_similarity,
        # A small edit whose replaced words mean something else: the hard-negative shape.
        edit.ratio * (1.0 - span_similarity),
        float(len(edit.replaced) == 1) * (1.0 - span_similarity),
    ]
