"""The one block-hash function of kvgate, shared by the worker's block manager and the router.

h_0 = H(SEED, extra); h_i = H(h_{i-1}, token ids of block i), over *full* blocks only. `extra`
carries what makes KV differ for equal tokens (the model id; a tenant cache salt when isolation is
on), so it is folded into the chain's root and reaches every block through the chain.

H is BLAKE2b with an 8-byte digest over little-endian bytes: stable across processes, machines and
Python versions (never Python's `hash()`). Two blocks with equal hashes are equal prefixes with
overwhelming probability; the worker still compares token ids before it reuses a cached block.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from hashlib import blake2b

SEED = 0x6B76676174650001  # "kvgate" + version; changing it invalidates every published hash
DEFAULT_BLOCK_SIZE = 16
_LITTLE = sys.byteorder == "little"


def _h(parent: int, payload: bytes) -> int:
    digest = blake2b(parent.to_bytes(8, "little"), digest_size=8)
    digest.update(payload)
    return int.from_bytes(digest.digest(), "little")


def _token_bytes(tokens: Sequence[int]) -> bytes:
    arr = array("I", tokens)
    if not _LITTLE:
        arr.byteswap()
    return arr.tobytes()


def extra_key(model_id: str, cache_salt: str | None = None) -> bytes:
    """The `extra` of a request: model id, plus the tenant's cache salt when isolation is on.

    The salt arrives in a header, which aiohttp decodes as UTF-8 with `surrogateescape`: bytes
    that are not UTF-8 come back as the same bytes here (never an error), so the gateway and the
    worker, both reading the header that way, fold in the same key."""
    key = model_id.encode()
    if cache_salt:
        key += b"\x00salt\x00" + cache_salt.encode("utf-8", "surrogateescape")
    return key


def root_hash(extra: bytes = b"") -> int:
    return _h(SEED, extra)


def hash_block(parent: int, tokens: Sequence[int]) -> int:
    return _h(parent, _token_bytes(tokens))


def block_hashes(
    token_ids: Sequence[int],
    block_size: int = DEFAULT_BLOCK_SIZE,
    extra: bytes = b"",
) -> list[int]:
    """Chained hashes of every full block of `token_ids` (a trailing partial block has none)."""
    if block_size <= 0:
        raise ValueError("block_size must be positive")
    parent = root_hash(extra)
    out: list[int] = []
    num_full = len(token_ids) // block_size
    # One conversion for the whole prompt, sliced per block: the same bytes `hash_block` hashes.
    data = _token_bytes(token_ids[: num_full * block_size])
    step = 4 * block_size
    for start in range(0, num_full * step, step):
        parent = _h(parent, data[start : start + step])
        out.append(parent)
    return out
