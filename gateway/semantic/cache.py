"""The semantic cache: `await lookup(query)`, then `await insert(result, reply)` on a miss.

Rules for callers (the gateway):
- Build once with `build_semantic_cache(cfg)` (loads the model: seconds, do it at start-up),
  `await cache.start()` inside the event loop, `await cache.close()` at shutdown.
- `lookup` never raises for a cache reason: it answers hit, miss, bypass or verify (a hit in a
  `verify: true` category: the caller sends the request upstream with the cached reply as its
  `prediction`, and stores the upstream's reply as a miss's). After a miss, a verify or a
  `no-cache` bypass, call `insert(result, reply)` once the upstream reply is complete and
  successful; `insert` ignores results that must not be stored (no-store, sampled, ...).
- The clock is injectable (`clock`): TTLs and entry values use it, tests pass a fake one.
All model and index work runs on the embedder's single executor thread, never on the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

from config.semantic import SemanticCacheConfig
from gateway.semantic.cross_encoder import LookupPairs, joint_encoder
from gateway.semantic.embedder import Embedder, EmbedderOverloaded, load_model
from gateway.semantic.entries import Entry, EntryTable, text_key
from gateway.semantic.index import HnswIndex
from gateway.semantic.pair_model import pair_probability_for
from gateway.semantic.stats import CacheStats
from policies.semantic.categorizer import Categorizer, build_categorizer, named_category
from policies.semantic.cross_pair import JointEncoder
from policies.semantic.guard import Guard, GuardModel, PairProbability, span_similarity_from
from policies.semantic.pair_features import PromptTerms, prompt_terms
from policies.semantic.request_rules import (
    bypass_reason,
    is_sampled,
    parse_cache_control,
    partition_key,
)
from policies.semantic.token_alignment import TokenStateCache
from policies.semantic.word_alignment import WordVectors

Status = Literal["hit", "miss", "bypass", "verify"]
EXPIRY_SWEEP = 64  # expired entries removed per lookup/insert: bounded work per call


@dataclass(frozen=True, slots=True)
class CacheQuery:
    """What the cache needs of a request, as plain fields.

    `text` is the text that decides the answer: the last user message (chat) or the prompt.
    `earlier_turns` are all messages before it except the system prompt, as (role, content).
    """

    tenant: str
    model: str
    text: str
    system_prompt: str = ""
    earlier_turns: tuple[tuple[str, str], ...] = ()
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    category_header: str | None = None
    cache_control: str | None = None
    # An entry whose reply is longer than the request's `max_tokens` is not a candidate (the
    # request would have been cut short). Stop strings are part of the partition.
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    # "chat" or "completions": part of the partition (a raw prompt is continued, a chat
    # message answered).
    endpoint: str = "chat"


@dataclass(frozen=True, slots=True)
class CachedReply:
    """A complete upstream reply as stored. Only `finish_reason == "stop"` replies are kept.
    `completion_tokens`: its length in tokens as the upstream reported it (usage), else as
    counted in stream chunks; 0 = unknown (no `max_tokens` check)."""

    text: str
    finish_reason: str = "stop"
    model: str = ""
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class CacheResult:
    status: Status
    category: str
    reason: str = ""
    similarity: float | None = None
    reply: CachedReply | None = None
    # What `insert` needs; None when the reply must not be stored.
    vector: np.ndarray | None = field(default=None, repr=False)
    partition: bytes = b""
    terms: PromptTerms | None = field(default=None, repr=False)
    tenant: str = ""
    text_key: bytes = field(default=b"", repr=False)


def fits(reply: CachedReply, max_tokens: int | None) -> bool:
    """Whether `reply` is an answer a request with `max_tokens` could have got."""
    return max_tokens is None or reply.completion_tokens <= max_tokens


class SemanticCache:
    def __init__(
        self,
        cfg: SemanticCacheConfig,
        embedder: Embedder,
        categorizer: Categorizer,
        guard: Guard,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.cfg = cfg
        self.embedder = embedder
        self.categorizer = categorizer
        self.guard = guard
        # The guard embeds the words that differ between query and candidate; it runs inside
        # `_search`, already on the embedder's thread, so it encodes directly.
        self._span_similarity = span_similarity_from(embedder.encode_now)
        # Single-word vectors for a guard model that aligns content words (LRU-bounded).
        self._word_vectors = (
            WordVectors(embedder.encode_now)
            if guard.model is not None and guard.model.uses_alignment
            else None
        )
        # Contextual token states for a guard model that aligns them (LRU-bounded per text).
        encode_tokens = getattr(embedder.model, "token_states", None)
        self._token_states = (
            TokenStateCache(encode_tokens)
            if guard.model is not None and guard.model.uses_tokens and encode_tokens is not None
            else None
        )
        # Joint passes over (query, candidate) for a guard model with cross features; one batch
        # per lookup (cross_encoder.LookupPairs), on this thread like the spans.
        self._joint = (
            joint_encoder(embedder.model)
            if guard.model is not None and guard.model.uses_cross
            else None
        )
        # The fine-tuned cross-encoder for a guard model that reads it (session 7); batched per
        # lookup like the joint passes, on this thread.
        self._pair_probability = (
            pair_probability_for(embedder.model, cfg.guard.pair_weights_path)
            if guard.model is not None and guard.model.needs_pair_model
            else None
        )
        self.clock = clock
        self.index = HnswIndex(cfg.index, embedder.dim)
        self.table = EntryTable(sample_size=cfg.index.eviction_sample)
        self.stats_by_category = CacheStats()
        self._seq = 0
        # Per sampled/greedy request: the bypass reason when *every* policy a request could get
        # bypasses it, so the category (and the embedding it may need) does not matter. With the
        # defaults no category serves sampled requests: those skip the model entirely.
        self._bypass_all = {
            sampled: _common_bypass(cfg, 1.0 if sampled else 0.0) for sampled in (False, True)
        }

    async def start(self) -> None:
        self.embedder.start()

    async def close(self) -> None:
        await self.embedder.close()

    async def lookup(self, query: CacheQuery) -> CacheResult:
        started = time.perf_counter()
        result = await self._lookup(query)
        self.stats_by_category.record(result.category, result.status, time.perf_counter() - started)
        return result

    async def _lookup(self, q: CacheQuery) -> CacheResult:
        control = parse_cache_control(q.cache_control)
        # A header naming no configured category is ignored (the HTTP stage refuses it first):
        # categories stay the configured ones, so per-category stats stay bounded.
        header = named_category(q.category_header)
        if header not in self.cfg.categories:
            header = None
        category = self.categorizer.by_rules(q.text, header)
        if category is not None:
            reason = bypass_reason(self.cfg.policy(category), q.temperature, self.cfg.enabled)
            if reason is not None:
                return CacheResult("bypass", category, reason=reason)
        elif not self.cfg.enabled:
            return CacheResult("bypass", self.categorizer.cfg.default, reason="disabled")
        elif (reason := self._bypass_all[is_sampled(q.temperature)]) is not None:
            return CacheResult("bypass", self.categorizer.cfg.default, reason=reason)
        if control.no_cache and control.no_store:
            return CacheResult("bypass", category or self.categorizer.cfg.default, "no-cache")
        try:
            vector = await self.embedder.embed(q.text)
        except EmbedderOverloaded:
            return CacheResult("bypass", category or self.categorizer.cfg.default, "overloaded")
        if category is None:
            category = self.categorizer.by_embedding(vector)
            reason = bypass_reason(self.cfg.policy(category), q.temperature, self.cfg.enabled)
            if reason is not None:
                return CacheResult("bypass", category, reason=reason)
        policy = self.cfg.policy(category)
        terms = prompt_terms(q.text)
        partition = partition_key(
            tenant=q.tenant,
            model=q.model,
            system_prompt=q.system_prompt,
            earlier_turns=[list(t) for t in q.earlier_turns],  # type: ignore[misc]
            policy=policy,
            temperature=q.temperature,
            top_p=q.top_p,
            seed=q.seed,
            stop=q.stop,
            endpoint=q.endpoint,
        )
        key = text_key(q.text)
        store = {} if control.no_store else {"vector": vector, "terms": terms, "text_key": key}
        if control.no_cache:
            return CacheResult(
                "bypass", category, "no-cache", partition=partition, tenant=q.tenant, **store
            )
        found = await self.embedder.run(
            self._search, vector, partition, terms, policy.threshold, self.clock(), q.max_tokens
        )
        if found is not None:
            entry, similarity = found
            # In a verify category the worker checks the cached reply (its own is stored), unless
            # the request is identical to the one the reply answered (same text, and the same
            # partition: tenant, model, system prompt, earlier turns, sampling): that one cannot
            # be a false hit, and greedy, the worker would write the same reply again.
            if policy.verify and entry.text_key != key:
                return CacheResult(
                    "verify",
                    category,
                    similarity=similarity,
                    reply=entry.reply,  # type: ignore[arg-type]
                    partition=partition,
                    tenant=q.tenant,
                    **store,
                )
            return CacheResult("hit", category, similarity=similarity, reply=entry.reply)  # type: ignore[arg-type]
        return CacheResult("miss", category, partition=partition, tenant=q.tenant, **store)

    def _search(
        self,
        vector: np.ndarray,
        partition: bytes,
        terms: PromptTerms,
        threshold: float,
        now: float,
        max_tokens: int | None = None,
    ) -> tuple[Entry, float] | None:
        self._expire(now)
        members = self.table.by_partition.get(partition)
        if not members:
            return None
        # No more candidates than the partition has: hnswlib fails a filtered search that
        # cannot find k allowed points (a partition smaller than k under `exact_search_below:
        # 0` always missed).
        k = min(self.cfg.index.candidates, len(members))
        if len(members) <= self.cfg.index.exact_search_below:
            candidates = self.index.search_exact(vector, list(members), k)
        else:
            # One partition holding every live entry (one tenant, model and system prompt: the
            # common case) needs no filter; the membership check after it keeps a hit inside
            # its partition whatever the counts say.
            whole = len(members) == self.index.live
            candidates = self.index.search(vector, k, None if whole else members.__contains__)
            if whole:
                candidates = [(slot, sim) for slot, sim in candidates if slot in members]
        live = [
            (self.table.by_slot[slot], similarity)
            for slot, similarity in candidates
            if similarity >= threshold
            and self.table.by_slot[slot].expires_s > now
            and fits(self.table.by_slot[slot].reply, max_tokens)  # type: ignore[arg-type]
        ]
        joint = None
        if self._joint is not None:
            expected = [(terms.wording, e.terms.wording) for e, _ in live]
            if self.guard.model is not None and self.guard.model.cross_orders == 2:
                expected += [(b, a) for a, b in expected]
            joint = LookupPairs(self._joint, expected)
        paired = None
        if self._pair_probability is not None:
            # A model that reads the probability weighs every broad candidate: batch them all.
            # The veto alone asks only for a pair about to be served: one at a time.
            wants_all = self.guard.model is not None and self.guard.model.uses_pair_model
            expected = [(terms.wording, e.terms.wording) for e, _ in live] if wants_all else []
            paired = LookupPairs(self._pair_probability, expected)  # type: ignore[arg-type]
        for entry, similarity in live:
            if self._accepts(similarity, terms, entry.terms, vector, entry.slot, joint, paired):
                if self._ambiguous(entry, similarity, live):
                    return None
                entry.hits += 1
                return entry, similarity
        return None

    def _accepts(
        self,
        similarity: float,
        query: PromptTerms,
        cached: PromptTerms,
        query_vector: np.ndarray,
        cached_slot: int,
        joint: JointEncoder | None = None,
        paired: PairProbability | None = None,
    ) -> bool:
        # The cached prompt's vector is read from the index only for a model that reads vectors
        # (pair head, cross features, pair bank).
        model = self.guard.model
        vectors = (
            (query_vector, self.index.vector(cached_slot))
            if model is not None and model.needs_vectors
            else None
        )
        return self.guard.accepts(
            similarity,
            query,
            cached,
            self._span_similarity,
            self._word_vectors,
            self._token_states,
            vectors,
            joint if joint is not None else self._joint,
            paired if paired is not None else self._pair_probability,
        )

    def _ambiguous(self, chosen: Entry, similarity: float, live: list[tuple[Entry, float]]) -> bool:
        """With `guard.runner_up_margin` set: another candidate within the margin of the chosen
        one that asks a different question than the chosen entry (the guard rejects the two
        cached prompts as a pair) makes the lookup ambiguous, and ambiguous is a miss."""
        margin = self.cfg.guard.runner_up_margin
        if margin is None:
            return False
        for other, other_similarity in live:
            if other is chosen or other_similarity < similarity - margin:
                continue
            pair = float(self.index.vector(other.slot) @ self.index.vector(chosen.slot))
            if not self._accepts(
                pair, chosen.terms, other.terms, self.index.vector(chosen.slot), other.slot
            ):
                return True
        return False

    async def insert(self, result: CacheResult, reply: CachedReply) -> bool:
        """Store `reply` for the query behind `result`; False when it must not be stored."""
        if result.status == "hit" or result.vector is None or result.terms is None:
            return False
        if reply.finish_reason != "stop" or not reply.text:
            return False
        return await self.embedder.run(self._insert, result, reply, self.clock())

    def _insert(self, result: CacheResult, reply: CachedReply, now: float) -> bool:
        assert result.vector is not None and result.terms is not None
        self._expire(now)
        policy = self.cfg.policy(result.category)
        if policy.max_entries <= 0:
            return False
        while self.table.count(result.category) >= policy.max_entries:
            self._evict(self.table.victim(result.category, now), result.category)
        while self.index.live >= self.cfg.index.max_entries:
            self._evict(self.table.victim(None, now), result.category)
        slot = self.index.add(result.vector)
        self._seq += 1
        self.table.add(
            Entry(
                slot=slot,
                partition=result.partition,
                tenant=result.tenant,
                category=result.category,
                terms=result.terms,
                text_key=result.text_key,
                reply=reply,
                created_s=now,
                expires_s=now + policy.ttl_s,
                seq=self._seq,
            )
        )
        self.stats_by_category.set_entries(result.category, self.table.count(result.category))
        return True

    def _remove(self, slot: int) -> Entry:
        entry = self.table.remove(slot)
        self.index.remove(slot)
        self.stats_by_category.set_entries(entry.category, self.table.count(entry.category))
        return entry

    def _evict(self, slot: int | None, category: str) -> None:
        if slot is None:
            raise RuntimeError(f"nothing to evict for category {category}")
        entry = self._remove(slot)
        self.stats_by_category.count(entry.category, "evictions")

    def _expire(self, now: float) -> None:
        for slot in self.table.expired(now, EXPIRY_SWEEP):
            entry = self._remove(slot)
            self.stats_by_category.count(entry.category, "expirations")

    async def clear(self, tenant: str | None = None, category: str | None = None) -> int:
        """Remove every entry of `tenant` and/or `category` (both None: everything)."""
        return await self.embedder.run(self._clear, tenant, category)

    def _clear(self, tenant: str | None, category: str | None) -> int:
        doomed = [
            e.slot
            for e in self.table.by_slot.values()
            if (tenant is None or e.tenant == tenant)
            and (category is None or e.category == category)
        ]
        for slot in doomed:
            self._remove(slot)
        return len(doomed)

    def stats(self) -> dict[str, object]:
        return {
            "enabled": self.cfg.enabled,
            "entries": self.index.live,
            "index_capacity": self.index.capacity,
            "index_slots_used": self.index.slots_used,
            "embed_batches": self.embedder.batches,
            "embed_texts": self.embedder.batched_texts,
            "categories": self.stats_by_category.snapshot(),
        }


def shipped_guard_weights() -> str:
    return resources.files("policies.semantic").joinpath("guard_weights.json").read_text()


def build_guard(cfg: SemanticCacheConfig, known_words: frozenset[str] = frozenset()) -> Guard:
    model = None
    if cfg.guard.mode == "learned":
        text = (
            Path(cfg.guard.weights_path).read_text()
            if cfg.guard.weights_path
            else shipped_guard_weights()
        )
        model = GuardModel.from_json(text)
    return Guard(
        cfg.guard.mode,
        model,
        cfg.guard.min_probability,
        cfg.guard.min_span_similarity,
        known_words,
        cfg.guard.contrast_checks,
    )


def build_semantic_cache(
    cfg: SemanticCacheConfig,
    clock: Callable[[], float] = time.monotonic,
    model: object | None = None,
) -> SemanticCache:
    """Load the model (or reuse `model`), embed the categorizer's examples, build the cache."""
    embedder = Embedder(cfg.embedder, model if model is not None else load_model(cfg.embedder))
    categorizer = build_categorizer(cfg.categorizer, embedder.encode_now, embedder.dim)
    whole_words = getattr(embedder.model, "whole_words", None)
    known = whole_words() if cfg.guard.typo_vocabulary and whole_words is not None else frozenset()
    guard = build_guard(cfg, known)
    # A pair-head model reads both prompts' vectors: its weights must match this embedder.
    if guard.model is not None and guard.model.head_dim not in (0, embedder.dim):
        raise ValueError(
            f"guard weights {cfg.guard.weights_path!r} are for {guard.model.head_dim}-dimensional"
            f" embeddings, the embedder gives {embedder.dim}"
        )
    # A cross-feature model needs joint passes of this embedder's model, of its dimension.
    if guard.model is not None and guard.model.uses_cross:
        if joint_encoder(embedder.model) is None:
            raise ValueError("guard weights with cross features need a TextEncoder embedder")
        if guard.model.cross_dim not in (0, embedder.dim):
            raise ValueError(
                f"guard weights {cfg.guard.weights_path!r} are for {guard.model.cross_dim}-"
                f"dimensional cross features, the embedder gives {embedder.dim}"
            )
    return SemanticCache(cfg, embedder, categorizer, guard, clock)


def _common_bypass(cfg: SemanticCacheConfig, temperature: float) -> str | None:
    """The bypass reason every category (and the fallback) gives a request at `temperature`,
    or None when at least one would look it up."""
    policies = [*cfg.categories.values(), cfg.fallback]
    reasons = {bypass_reason(p, temperature, cfg.enabled) for p in policies}
    if None in reasons:
        return None
    return "sampled" if "sampled" in reasons else min(r for r in reasons if r is not None)
