"""May a semantic-cache hit be answered? The workers' context-length rule, applied by the gateway.

A worker refuses a request whose prompt, or prompt + `max_tokens`, exceeds its context (400
`context_length_exceeded`). On a miss the worker says so; on a hit no worker sees the request,
so the gateway applies the same rule (config/context_length.py) with the limits the workers
report in `/stats` and the prompt's exact length in their tokens, and answers the same 400. Every
other refusal a worker makes is made by the gateway before the lookup (gateway/parse.py, the
hint headers, the model list) or keeps the request out of the cache (semantic_stage.py), so this
is the one check a hit needs (docs/architecture.md, "A cache hit answers what a miss would").
"""

from __future__ import annotations

from collections.abc import Sequence

from config.context_length import ContextLimit
from config.protocol import RequestError
from config.worker_wire import WorkerStats


def limit_of(stats: WorkerStats | None) -> ContextLimit | None:
    """A worker's limits from its `/stats`; None when it reports none (an upstream without
    `/stats`, or a worker that leaves `max_model_len` out)."""
    if stats is None or stats.max_model_len < 1:
        return None
    prompt_max = stats.max_prompt_tokens or stats.max_model_len - 1
    return ContextLimit(max_model_len=stats.max_model_len, max_prompt_tokens=prompt_max)


def may_serve_hit(
    limits: Sequence[ContextLimit | None],
    num_prompt_tokens: int | None,
    max_tokens: int | None,
    *,
    param: str,
) -> bool:
    """Whether a hit for this request may be answered from the cache.

    `limits`: those of the workers that serve the request's model (None for one whose limits are
    unknown); `num_prompt_tokens`: the prompt's exact length in their tokens, None when the
    gateway cannot count it. True when some worker would take the request (or one of unknown
    limits might: the gateway cannot refuse for it); False when the gateway cannot tell (limits
    known, length not): the request then goes to a worker, which decides. Raises the workers'
    own `RequestError` (400 `context_length_exceeded`) when every worker would refuse it, the
    refusal of the most generous of them."""
    if not limits or any(limit is None for limit in limits):
        return True
    if num_prompt_tokens is None:
        return False
    known = [limit for limit in limits if limit is not None]
    known.sort(key=lambda lim: (lim.max_model_len, lim.max_prompt_tokens), reverse=True)
    refusal: RequestError | None = None
    for limit in known:
        try:
            limit.check(num_prompt_tokens, max_tokens, param=param)
        except RequestError as exc:
            refusal = refusal or exc
            continue
        return True
    assert refusal is not None
    raise refusal
