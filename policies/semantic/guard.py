"""The false-hit guard: is a near neighbour really the same question?

Plain cosine similarity cannot tell "15 % of 80" from "15 % of 90" (similarity ~0.95). The guard
looks at the words of the pair (see pair_features and edit_shape) and answers with a
probability that both prompts want the same reply.

- `rules` rejects any difference in numbers, negation, an antonym swap or a direction swap.
- `learned` rejects a changed number or a direction swap always, a negation / antonym / number
  difference in a near-duplicate edit, and scores the rest with a logistic model over the pair
  features, one of which embeds the replaced word spans (the caller's `span_similarity`).
  Weights are plain numbers, fitted by benchmarks/semantic_eval.py (cross-validated by cluster).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from policies.semantic.contrast_checks import CHECKS
from policies.semantic.cross_pair import (
    JointEncoder,
    cross_feature_names,
    cross_features,
    parse_cross_names,
)
from policies.semantic.edit_shape import EditShape
from policies.semantic.pair_features import (
    FEATURE_NAMES,
    PromptTerms,
    antonym_swap,
    edit_of,
    numbers_changed,
    pair_features,
)
from policies.semantic.pair_head import head_dim, head_feature_names, head_features
from policies.semantic.pair_knn import KNN_FEATURE_NAMES, PairBank
from policies.semantic.polarity import POLARITY_FEATURE_NAMES, polarity_features
from policies.semantic.term_weights import IDF_FEATURE_NAMES, TermWeights, idf_features
from policies.semantic.token_alignment import (
    TOKEN_FEATURE_NAMES,
    TokenEncoder,
    token_alignment_features,
)
from policies.semantic.word_alignment import ALIGN_FEATURE_NAMES, WordVectors, alignment_features


@dataclass(frozen=True, slots=True)
class GuardModel:
    """Logistic model over standardised pair features."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    # Weights for FEATURE_NAMES + ALIGN_FEATURE_NAMES: the guard then aligns content words.
    uses_alignment: bool = False
    # ... + TOKEN_FEATURE_NAMES: the guard then aligns contextual token states.
    uses_tokens: bool = False
    # > 0: ... + the pair head's |u - v| and u * v of the two prompts' sentence embeddings of
    # this dimension (last); the guard then needs both vectors (pair_head.py).
    head_dim: int = 0
    # Cross-encoded pair features last (cross_pair.py): the guard then needs a joint pass of
    # the two prompts and both sentence vectors. `cross_dim` > 0: with the vector blocks of that
    # dimension; `cross_orders` 2: (a, b) and (b, a) averaged.
    uses_cross: bool = False
    cross_dim: int = 0
    cross_orders: int = 1
    # An IDF table (term_weights.py): IDF_FEATURE_NAMES follow FEATURE_NAMES.
    idf: TermWeights | None = None
    # A second model over FEATURE_NAMES (+ IDF_FEATURE_NAMES with its own table) that also
    # scores near-duplicate edits the span rule passes (session 6; off in older weights).
    near_duplicate: GuardModel | None = None
    # POLARITY_FEATURE_NAMES follow the IDF features (session 6 experiment, polarity.py).
    uses_polarity: bool = False
    # With a near-duplicate model: an edit that replaces one word by one word and changes
    # nothing else, the two words embedding at least this close ("biggest" / "largest"), is
    # served without asking that model (session 6 experiment; None: the model decides).
    serve_span_similarity: float | None = None
    # With a near-duplicate model: an edit that only adds or drops words of a closed class of
    # discourse adverbs ("actually", "briefly", "simply"; FILLER_WORDS) is served without
    # asking that model (session 6 experiment).
    serve_filler_edits: bool = False
    # KNN_FEATURE_NAMES before any cross features: the difference direction of the two
    # prompts' vectors matched against training pairs (pair_knn.py; session 6 experiment).
    pair_bank: PairBank | None = None
    # A fine-tuned cross-encoder's p(same answer) (gateway/semantic/pair_model.py; session 7):
    # `uses_pair_model`: PAIR_MODEL_FEATURE_NAMES last in the broad-rewrite model; `min_pair_
    # probability`: a pair the guard would serve by a model (near-duplicate or broad) is
    # rejected when that probability is below it. The guard then needs a `PairProbability`.
    uses_pair_model: bool = False
    min_pair_probability: float | None = None

    @property
    def needs_pair_model(self) -> bool:
        return self.uses_pair_model or self.min_pair_probability is not None

    @property
    def needs_vectors(self) -> bool:
        """Whether the guard must be handed both prompts' sentence vectors."""
        return bool(self.head_dim or self.uses_cross or self.pair_bank is not None)

    @property
    def feature_names(self) -> tuple[str, ...]:
        names = feature_names(
            self.uses_alignment,
            self.uses_tokens,
            self.head_dim,
            self.idf is not None,
            self.uses_polarity,
        )
        if self.pair_bank is not None:
            names += KNN_FEATURE_NAMES
        if self.uses_cross:
            names += cross_feature_names(self.cross_dim, self.cross_dim > 0)
        if self.uses_pair_model:
            names += PAIR_MODEL_FEATURE_NAMES
        return names

    def probability(self, features: Sequence[float] | np.ndarray) -> float:
        x = np.asarray(features, dtype=np.float64)
        if x.shape != (len(self.weights),):
            raise ValueError(f"{x.shape[0]} features for {len(self.weights)} weights")
        z = self.bias + float(
            np.dot((x - np.asarray(self.mean)) / np.asarray(self.scale), np.asarray(self.weights))
        )
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "features": list(self.feature_names),
            "weights": list(self.weights),
            "bias": self.bias,
            "mean": list(self.mean),
            "scale": list(self.scale),
        }
        if self.uses_cross:
            data["cross_orders"] = self.cross_orders
        if self.idf is not None:
            data["idf"] = self.idf.to_dict()
        if self.near_duplicate is not None:
            data["near_duplicate"] = self.near_duplicate.to_dict()
        if self.serve_span_similarity is not None:
            data["serve_span_similarity"] = self.serve_span_similarity
        if self.serve_filler_edits:
            data["serve_filler_edits"] = True
        if self.pair_bank is not None:
            data["pair_bank"] = self.pair_bank.to_dict()
        if self.min_pair_probability is not None:
            data["min_pair_probability"] = self.min_pair_probability
        return data

    @classmethod
    def from_json(cls, text: str) -> GuardModel:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> GuardModel:
        names = tuple(data["features"])  # type: ignore[arg-type]
        uses_pair_model = names[-len(PAIR_MODEL_FEATURE_NAMES) :] == PAIR_MODEL_FEATURE_NAMES
        if uses_pair_model:
            names = names[: len(names) - len(PAIR_MODEL_FEATURE_NAMES)]
        cross_dim, _, cross_count = parse_cross_names(names)
        names = names[: len(names) - cross_count]
        bank = data.get("pair_bank")
        if isinstance(bank, dict):
            if names[-len(KNN_FEATURE_NAMES) :] != KNN_FEATURE_NAMES:
                raise ValueError("a pair bank needs its feature before any cross features")
            names = names[: len(names) - len(KNN_FEATURE_NAMES)]
        dim = head_dim(names)
        base = names[: len(names) - 2 * dim]
        two = (False, True)
        flags = [(a, t, i, p) for a in two for t in two for i in two for p in two]
        known = {feature_names(a, t, 0, i, p): (a, t, i, p) for a, t, i, p in flags}
        if base not in known or known[base][2] != ("idf" in data):
            raise ValueError(f"guard weights are for features {list(names)[:40]}")
        near = data.get("near_duplicate")
        near_model = cls.from_dict(near) if isinstance(near, dict) else None
        if near_model is not None and near_model.feature_names != feature_names(
            False, False, 0, near_model.idf is not None
        ):
            raise ValueError("the near-duplicate model takes the cheap (and IDF) features only")
        return cls(
            idf=TermWeights.from_dict(data["idf"]) if "idf" in data else None,  # type: ignore[arg-type]
            near_duplicate=near_model,
            uses_alignment=known[base][0],
            uses_tokens=known[base][1],
            uses_polarity=known[base][3],
            serve_filler_edits=bool(data.get("serve_filler_edits", False)),
            serve_span_similarity=(
                float(data["serve_span_similarity"])  # type: ignore[arg-type]
                if data.get("serve_span_similarity") is not None
                else None
            ),
            head_dim=dim,
            uses_cross=cross_count > 0,
            cross_dim=cross_dim,
            cross_orders=int(data.get("cross_orders", 1)),
            pair_bank=PairBank.from_dict(bank) if isinstance(bank, dict) else None,
            uses_pair_model=uses_pair_model,
            min_pair_probability=(
                float(data["min_pair_probability"])  # type: ignore[arg-type]
                if data.get("min_pair_probability") is not None
                else None
            ),
            weights=tuple(float(w) for w in data["weights"]),  # type: ignore[attr-defined]
            bias=float(data["bias"]),  # type: ignore[arg-type]
            mean=tuple(float(m) for m in data["mean"]),  # type: ignore[attr-defined]
            scale=tuple(float(s) for s in data["scale"]),  # type: ignore[attr-defined]
        )

    def cheap_row(
        self, cosine: float, a: PromptTerms, b: PromptTerms, edit: EditShape, lowest: float
    ) -> list[float]:
        """FEATURE_NAMES (+ IDF_FEATURE_NAMES when this model has an IDF table, +
        POLARITY_FEATURE_NAMES when it uses them)."""
        row = pair_features(cosine, a, b, edit, lowest)
        if self.idf is not None:
            row += idf_features(a, b, self.idf)
        if self.uses_polarity:
            row += polarity_features(a.tokens, b.tokens)
        return row


def feature_names(
    uses_alignment: bool,
    uses_tokens: bool,
    dim: int = 0,
    uses_idf: bool = False,
    uses_polarity: bool = False,
) -> tuple[str, ...]:
    return (
        FEATURE_NAMES
        + (IDF_FEATURE_NAMES if uses_idf else ())
        + (POLARITY_FEATURE_NAMES if uses_polarity else ())
        + (ALIGN_FEATURE_NAMES if uses_alignment else ())
        + (TOKEN_FEATURE_NAMES if uses_tokens else ())
        + (head_feature_names(dim) if dim else ())
    )


SpanSimilarity = Callable[[Sequence[tuple[str, str]]], Sequence[float]]
# p(same answer) of (query, cached) wording pairs from the fine-tuned cross-encoder.
PairProbability = Callable[[Sequence[tuple[str, str]]], Sequence[float]]
PAIR_MODEL_FEATURE_NAMES = ("pair_model_probability",)

# An edit keeping at least this share of the tokens (difflib ratio) is a near-duplicate: there a
# changed number, negation or direction word alone decides. In broader rewrites such words
# move around without changing the question ("can't sleep" / "fall asleep faster"), so there
# the model weighs them instead.
NEAR_DUPLICATE_RATIO = 0.5
# At most this many replaced span pairs are embedded per candidate: more places changed means
# a broad rewrite, where the first few spans tell enough.
MAX_SPAN_PAIRS = 4
MAX_SPAN_CHARS = 200


def one_word_swap(edit: EditShape) -> bool:
    """The edit replaces one word by one word and changes nothing else."""
    return edit.ops == 1 and len(edit.replaced) == 1 and " " not in "".join(edit.replaced[0])


# Discourse adverbs that hedge, stress or ask for brevity without changing what is asked
# (a closed class of English, like the stopwords): "how do vaccines *actually* work".
FILLER_WORDS = frozenset(
    "actually really simply briefly quickly basically kindly together truly honestly "
    "literally".split()
)


def filler_edit(a: PromptTerms, b: PromptTerms, edit: EditShape) -> bool:
    """Nothing replaced, and every word one side adds is a FILLER_WORDS word (punctuation
    aside)."""
    if edit.replaced:
        return False
    x, y = Counter(a.tokens), Counter(b.tokens)
    added = [word for word in (x - y) + (y - x) if word.isalnum()]
    return bool(added) and all(word in FILLER_WORDS for word in added)


def span_similarity_from(encode: Callable[[list[str]], np.ndarray]) -> SpanSimilarity:
    """A `SpanSimilarity` from a batch encoder of unit vectors: one call for all the spans."""

    def similarity(pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        vectors = np.asarray(encode([text for pair in pairs for text in pair]))
        return [float(v) for v in np.einsum("ij,ij->i", vectors[0::2], vectors[1::2])]

    return similarity


class Guard:
    """Decides whether a candidate above the similarity threshold may be served.

    `learned` mode, past the vetoes: a near-duplicate edit (difflib ratio >=
    NEAR_DUPLICATE_RATIO) is served only when every replaced span means about the same as its
    replacement (embedding cosine >= `min_span_similarity`: "biggest" / "largest" yes, "Python"
    / "Ruby" no); a broader rewrite is scored by the logistic model. The near-duplicate rule is
    not learned on purpose: evaluation sets are full of near-duplicate hard negatives and have
    few near-duplicate paraphrases, so a learned model ends up rejecting every small edit.

    `span_similarity(pairs)` returns the embedding cosine of each (span, span) pair; the cache
    passes one backed by its sentence embedder. Without it a near-duplicate with a replaced span
    is rejected, and the model reads the span feature as 1.0."""

    def __init__(
        self,
        mode: str,
        model: GuardModel | None = None,
        min_probability: float = 0.5,
        min_span_similarity: float = 0.85,
        known_words: frozenset[str] = frozenset(),
        contrast_checks: Sequence[str] = (),
    ):
        if mode == "learned" and model is None:
            raise ValueError("the learned guard needs a model")
        unknown = [name for name in contrast_checks if name not in CHECKS]
        if unknown:
            raise ValueError(f"unknown contrast checks {unknown}; known: {sorted(CHECKS)}")
        self.mode = mode
        self.model = model
        self.min_probability = min_probability
        self.min_span_similarity = min_span_similarity
        # Whole words of a vocabulary: two of them are never folded as a typo (edit_shape).
        self.known_words = known_words
        # Vetoes in any edit shape (contrast_checks.py), in the order given.
        self.contrast_checks = tuple(CHECKS[name] for name in contrast_checks)

    def veto(self, query: PromptTerms, cached: PromptTerms, edit: EditShape) -> bool:
        """A difference that makes it another question whatever the model says."""
        if edit.direction_swap or numbers_changed(query, cached):
            return True
        if any(check(query.tokens, cached.tokens) for check in self.contrast_checks):
            return True
        numbers = bool(query.numbers and cached.numbers and query.numbers != cached.numbers)
        negation = (query.negations > 0) != (cached.negations > 0)
        antonym = antonym_swap(query, cached)
        if self.mode == "rules" or edit.ratio >= NEAR_DUPLICATE_RATIO:
            return numbers or negation or antonym
        return False

    def probability(
        self,
        cosine: float,
        query: PromptTerms,
        cached: PromptTerms,
        span_similarity: SpanSimilarity | None = None,
        word_vectors: WordVectors | None = None,
        token_states: TokenEncoder | None = None,
        vectors: tuple[np.ndarray, np.ndarray] | None = None,
        joint: JointEncoder | None = None,
        pair_probability: PairProbability | None = None,
    ) -> float:
        """Estimated probability that both prompts want the same answer. `vectors`: the
        query's and the cached prompt's unit sentence embeddings, needed by a pair-head model
        (without them such a model rejects every broad rewrite: a miss is the safe answer).
        `joint`: joint passes over (query, cached) wordings, needed (with `vectors`) by a model
        with cross features; without either such a model rejects every broad rewrite too.
        `pair_probability`: the fine-tuned cross-encoder, needed by a model that reads it
        (without it such a model rejects every pair a model would decide)."""
        if self.mode == "off":
            return 1.0
        edit = edit_of(query, cached, self.known_words)
        if self.veto(query, cached, edit):
            return 0.0
        # The same content words, numbers and negation in any order (not swapped around a
        # "to"/"in": that is vetoed above) are the same question.
        if (query.content, query.numbers, query.negations) == (
            cached.content,
            cached.numbers,
            cached.negations,
        ):
            return 1.0
        if self.mode == "rules":
            return 1.0
        assert self.model is not None
        spans = [
            (x[:MAX_SPAN_CHARS], y[:MAX_SPAN_CHARS]) for x, y in edit.replaced[:MAX_SPAN_PAIRS]
        ]
        near_duplicate = edit.ratio >= NEAR_DUPLICATE_RATIO
        lowest = 1.0
        if spans:
            if span_similarity is None:
                if near_duplicate:
                    return 0.0
            else:
                lowest = min(1.0, min(float(s) for s in span_similarity(spans)))
        if near_duplicate:
            # Only words added or dropped, or every replacement a near-synonym; then, with a
            # near-duplicate model in the weights, that model decides.
            if lowest < self.min_span_similarity:
                return 0.0
            near = self.model.near_duplicate
            if near is None:
                return 1.0
            serve = self.model.serve_span_similarity
            if serve is not None and one_word_swap(edit) and lowest >= serve:
                return 1.0
            if self.model.serve_filler_edits and filler_edit(query, cached, edit):
                return 1.0
            p = near.probability(near.cheap_row(cosine, query, cached, edit, lowest))
            return self._pair_veto(p, None, query, cached, pair_probability)
        features = self.model.cheap_row(cosine, query, cached, edit, lowest)
        if self.model.uses_alignment:
            # Without word vectors the alignment reads as complete (neutral).
            features += (
                alignment_features(query.tokens, cached.tokens, word_vectors)
                if word_vectors is not None
                else [1.0, 0.0, 0.0, 0.0]
            )
        if self.model.uses_tokens:
            # Without token states the alignment reads as perfect (neutral).
            if token_states is not None:
                mine, theirs = token_states([query.wording, cached.wording])
                features += token_alignment_features(mine, theirs)
            else:
                features += [1.0] * len(TOKEN_FEATURE_NAMES)
        row = np.asarray(features, dtype=np.float64)
        if self.model.head_dim:
            if vectors is None:
                return 0.0
            row = np.concatenate([row, head_features(*vectors)])
        if self.model.pair_bank is not None:
            if vectors is None:
                return 0.0
            row = np.concatenate([row, [self.model.pair_bank.share(*vectors)]])
        if self.model.uses_cross:
            if vectors is None or joint is None:
                return 0.0
            pairs = [(query.wording, cached.wording)]
            if self.model.cross_orders == 2:
                pairs.append((cached.wording, query.wording))
            extra = cross_features(joint(pairs), *vectors, self.model.cross_dim > 0)
            row = np.concatenate([row, extra])
        fine_tuned = None
        if self.model.uses_pair_model:
            if pair_probability is None:
                return 0.0
            fine_tuned = float(pair_probability([(query.wording, cached.wording)])[0])
            row = np.concatenate([row, [fine_tuned]])
        p = self.model.probability(row)
        return self._pair_veto(p, fine_tuned, query, cached, pair_probability)

    def _pair_veto(
        self,
        p: float,
        fine_tuned: float | None,
        query: PromptTerms,
        cached: PromptTerms,
        pair_probability: PairProbability | None,
    ) -> float:
        """`p`, or 0.0 when the model's `min_pair_probability` vetoes a pair `p` would serve
        (the cross-encoder runs only for such a pair)."""
        assert self.model is not None
        cut = self.model.min_pair_probability
        if cut is None or p < self.min_probability:
            return p
        if fine_tuned is None:
            if pair_probability is None:
                return 0.0
            fine_tuned = float(pair_probability([(query.wording, cached.wording)])[0])
        return p if fine_tuned >= cut else 0.0

    def accepts(
        self,
        cosine: float,
        query: PromptTerms,
        cached: PromptTerms,
        span_similarity: SpanSimilarity | None = None,
        word_vectors: WordVectors | None = None,
        token_states: TokenEncoder | None = None,
        vectors: tuple[np.ndarray, np.ndarray] | None = None,
        joint: JointEncoder | None = None,
        pair_probability: PairProbability | None = None,
    ) -> bool:
        p = self.probability(
            cosine,
            query,
            cached,
            span_similarity,
            word_vectors,
            token_states,
            vectors,
            joint,
            pair_probability,
        )
        return p >= self.min_probability
