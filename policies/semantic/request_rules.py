"""Per-request cache decisions: bypass or not, and the hard partition a hit never crosses."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from config.semantic import CategoryPolicy


@dataclass(frozen=True, slots=True)
class CacheControl:
    no_cache: bool = False  # skip the lookup (still store the fresh reply)
    no_store: bool = False  # do not store the reply


def parse_cache_control(header: str | None) -> CacheControl:
    if not header:
        return CacheControl()
    directives = {part.strip().split("=", 1)[0].lower() for part in header.split(",")}
    return CacheControl(no_cache="no-cache" in directives, no_store="no-store" in directives)


def is_sampled(temperature: float | None) -> bool:
    # OpenAI's default temperature is 1.0: an absent temperature is a sampled request.
    return temperature is None or temperature > 0.0


def bypass_reason(policy: CategoryPolicy, temperature: float | None, enabled: bool) -> str | None:
    """Why this request skips the cache entirely (both lookup and insert), or None."""
    if not enabled:
        return "disabled"
    if not policy.cacheable:
        return "not_cacheable"
    if is_sampled(temperature) and not policy.serve_sampled:
        return "sampled"
    return None


def partition_key(
    *,
    tenant: str,
    model: str,
    system_prompt: str,
    earlier_turns: list[tuple[str, str]],
    policy: CategoryPolicy,
    temperature: float | None,
    top_p: float | None,
    seed: int | None,
    stop: tuple[str, ...] = (),
    endpoint: str = "chat",
) -> bytes:
    """16-byte key of everything a hit must match exactly.

    `earlier_turns` is every message before the last user message, as (role, content): a
    multi-turn request hits only an entry stored under the very same conversation so far.
    `stop`: the request's stop strings (as a set): a reply cut at one stop string is not the
    answer to a request with other ones, or none. `endpoint`: "chat" or "completions": a chat
    answer to a message is not the continuation of the same text sent as a raw prompt.
    """
    sampling: list[object] = []
    if policy.partition_sampling and is_sampled(temperature):
        sampling = [temperature, top_p, seed]
    payload = json.dumps(
        [endpoint, tenant, model, system_prompt, earlier_turns, sampling, sorted(set(stop))],
        ensure_ascii=False,
    ).encode()
    return hashlib.blake2b(payload, digest_size=16).digest()
