"""The guard's added cost per lookup, against embedding the prompt itself (same run).

Used by semantic_quality.py (`guard_cost` in its report). Bare encodes are interleaved and
repeated, medians reported: on a loaded machine read the ratios, not the milliseconds.
"""

from __future__ import annotations

import time

import numpy as np

from gateway.semantic.cross_encoder import joint_states
from policies.semantic.guard import MAX_SPAN_CHARS, MAX_SPAN_PAIRS, Guard, GuardModel
from policies.semantic.pair_features import edit_of, prompt_terms
from policies.semantic.token_alignment import TokenStateCache, token_alignment_features
from policies.semantic.word_alignment import WordVectors, alignment_features

EMBED_KWARGS = {"normalize_embeddings": True, "batch_size": 64, "show_progress_bar": False}


def guard_cost(
    rows: list[dict[str, str]],
    raw_model: object,
    model: GuardModel,
    repeats: int = 3,
    max_timed: int = 60,
    known_words: frozenset[str] = frozenset(),
) -> dict[str, float]:
    """Extra work of the guard per lookup, against embedding the prompt itself (same run).

    For each prompt, its nearest earlier prompt at cosine >= 0.6 is the candidate; where the
    learned guard gets as far as the model, its replaced spans are embedded (one batch). Bare
    encodes of the prompt and of the spans are interleaved, `repeats` times, for the first
    `max_timed` such lookups; medians."""
    texts = [r["prompt"] for r in rows]
    vectors = np.asarray(raw_model.encode(texts, **EMBED_KWARGS))  # type: ignore[attr-defined]
    terms = [prompt_terms(t) for t in texts]
    guard = Guard("learned", model, known_words=known_words)
    prompt_s: list[float] = []
    spans_s: list[float] = []
    pure_s: list[float] = []
    # Content-word alignment (only for a model with those features): cold = every word of the
    # pair embedded (one batch, empty LRU), warm = all words already in the LRU.
    align_cold_s: list[float] = []
    align_warm_s: list[float] = []
    # Token alignment (only for a model with those features): both prompts' token states
    # computed (one forward of 2), or only the query's (the cached one's still in the LRU).
    tokens_both_s: list[float] = []
    tokens_query_s: list[float] = []
    # Cross features (only for a model with them): the joint pass(es) of the pair, one forward.
    cross_s: list[float] = []
    needing = 0
    looked = 0
    for q in range(1, len(rows)):
        sims = vectors[:q] @ vectors[q]
        c = int(np.argmax(sims))
        if sims[c] < 0.6:
            continue
        looked += 1
        started = time.perf_counter()
        edit = edit_of(terms[q], terms[c], known_words)
        vetoed = guard.veto(terms[q], terms[c], edit)
        pure_s.append(time.perf_counter() - started)
        if vetoed or terms[q].content == terms[c].content or not edit.replaced:
            continue
        needing += 1
        if needing > max_timed:
            continue
        flat = [s[:MAX_SPAN_CHARS] for pair in edit.replaced[:MAX_SPAN_PAIRS] for s in pair]
        for _ in range(repeats):
            for batch, sink in (([texts[q]], prompt_s), (flat, spans_s)):
                started = time.perf_counter()
                raw_model.encode(batch, **EMBED_KWARGS)  # type: ignore[attr-defined]
                sink.append(time.perf_counter() - started)
            if model.uses_alignment:
                words = WordVectors(lambda t: raw_model.encode(t, **EMBED_KWARGS))  # type: ignore[attr-defined]
                for sink in (align_cold_s, align_warm_s):
                    started = time.perf_counter()
                    alignment_features(terms[q].tokens, terms[c].tokens, words)
                    sink.append(time.perf_counter() - started)
            if model.uses_cross:
                pairs = [(terms[q].wording, terms[c].wording)]
                if model.cross_orders == 2:
                    pairs.append(pairs[0][::-1])
                started = time.perf_counter()
                joint_states(raw_model, pairs)  # type: ignore[arg-type]
                cross_s.append(time.perf_counter() - started)
            if model.uses_tokens:
                pair = [terms[q].wording, terms[c].wording]
                for sink, first in ((tokens_both_s, []), (tokens_query_s, [pair[1]])):
                    states = TokenStateCache(raw_model.token_states)  # type: ignore[attr-defined]
                    states(first)  # warm the LRU (not timed)
                    started = time.perf_counter()
                    token_alignment_features(*states(pair))
                    sink.append(time.perf_counter() - started)
    prompt_ms = 1000 * float(np.median(prompt_s)) if prompt_s else 0.0
    spans_ms = 1000 * float(np.median(spans_s)) if spans_s else 0.0
    cold_ms = 1000 * float(np.median(align_cold_s)) if align_cold_s else 0.0
    warm_ms = 1000 * float(np.median(align_warm_s)) if align_warm_s else 0.0
    both_ms = 1000 * float(np.median(tokens_both_s)) if tokens_both_s else 0.0
    query_ms = 1000 * float(np.median(tokens_query_s)) if tokens_query_s else 0.0
    cross_ms = 1000 * float(np.median(cross_s)) if cross_s else 0.0
    return {
        "cross_joint_p50_ms": cross_ms,
        "cross_joint_to_prompt_ratio": cross_ms / prompt_ms if prompt_ms else 0.0,
        "tokens_both_p50_ms": both_ms,
        "tokens_query_only_p50_ms": query_ms,
        "tokens_both_to_prompt_ratio": both_ms / prompt_ms if prompt_ms else 0.0,
        "tokens_query_only_to_prompt_ratio": query_ms / prompt_ms if prompt_ms else 0.0,
        "align_cold_p50_ms": cold_ms,
        "align_warm_p50_ms": warm_ms,
        "align_cold_to_prompt_ratio": cold_ms / prompt_ms if prompt_ms else 0.0,
        "align_warm_to_prompt_ratio": warm_ms / prompt_ms if prompt_ms else 0.0,
        "lookups_with_candidate": looked,
        "share_embedding_spans": needing / max(1, looked),
        "prompt_embed_p50_ms": prompt_ms,
        "span_embed_p50_ms": spans_ms,
        "span_to_prompt_ratio": spans_ms / prompt_ms if prompt_ms else 0.0,
        "alignment_and_veto_p50_ms": 1000 * float(np.median(pure_s)) if pure_s else 0.0,
    }
