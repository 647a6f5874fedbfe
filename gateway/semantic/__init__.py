"""The semantic cache: embedder (one executor, micro-batched), HNSW index, partitioned store."""

from gateway.semantic.cache import CachedReply, CacheQuery, CacheResult, SemanticCache
from gateway.semantic.replay import cache_headers, response_body, sse_chunks

__all__ = [
    "CacheQuery",
    "CacheResult",
    "CachedReply",
    "SemanticCache",
    "cache_headers",
    "response_body",
    "sse_chunks",
]
