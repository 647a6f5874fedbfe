"""The embedder: the direct encoder agrees with sentence-transformers, batches are capped and
order-preserving, recent texts are remembered (bounded), index work jumps the embedding queue,
and the event loop keeps running while the model does."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from config.semantic import EmbedderConfig, IndexConfig
from gateway.semantic.embedder import (
    EMBED_PRIORITY,
    INDEX_PRIORITY,
    Embedder,
    EmbedderOverloaded,
    SerialWorker,
)
from gateway.semantic.index import HnswIndex
from gateway.semantic.text_encoder import TextEncoder, default_model_path, resolve_precision

TEXTS = [
    "How do I reverse a list in Python?",
    "",
    "enable dark mode",
    "disable dark mode",
    "word " * 400,  # past the 256-token limit: truncated the same way
    "What is the capital of Peru?",
]


@pytest.fixture(scope="module")
def fp32() -> TextEncoder:
    return TextEncoder.load(default_model_path(), precision="fp32")


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(default_model_path(), device="cpu", local_files_only=True)
    return np.asarray(st.encode(TEXTS, normalize_embeddings=True, show_progress_bar=False))


def test_fp32_matches_sentence_transformers(fp32: TextEncoder, reference: np.ndarray) -> None:
    vectors = fp32.encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    assert np.abs(vectors - reference).max() < 1e-5


def test_traced_graph_equals_the_eager_model(fp32: TextEncoder) -> None:
    eager = TextEncoder.load(default_model_path(), precision="fp32", trace=False)
    assert fp32.traced is not None and eager.traced is None
    assert np.abs(fp32.encode(TEXTS, batch_size=3) - eager.encode(TEXTS, batch_size=3)).max() < 1e-5


def test_rows_keep_input_order_whatever_the_sub_batches(fp32: TextEncoder) -> None:
    alone = np.stack([fp32.encode([t])[0] for t in TEXTS])
    for batch_size in (1, 2, 64):
        assert np.abs(fp32.encode(TEXTS, batch_size=batch_size) - alone).max() < 1e-5


@pytest.mark.parametrize(("precision", "min_cosine"), [("bf16", 0.999), ("int8", 0.9)])
def test_reduced_precision_stays_close(
    precision: str, min_cosine: float, reference: np.ndarray
) -> None:
    encoder = TextEncoder.load(default_model_path(), precision=precision)
    vectors = encoder.encode(TEXTS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert (vectors * reference).sum(axis=1).min() >= min_cosine


def test_precision_names() -> None:
    assert resolve_precision("auto") in ("bf16", "fp32")
    with pytest.raises(ValueError):
        resolve_precision("fp8")


async def test_concurrent_embeds_are_batched_up_to_the_cap(fp32: TextEncoder) -> None:
    embedder = Embedder(EmbedderConfig(max_batch=4, cache_entries=0), fp32)
    embedder.start()
    texts = [f"question number {i} about sorting arrays" for i in range(10)]
    try:
        vectors = await embedder.embed_many(texts)
    finally:
        await embedder.close()
    assert embedder.batched_texts == 10
    assert embedder.batches >= 3  # 10 texts, at most 4 per batch
    assert np.abs(vectors - fp32.encode(texts)).max() < 1e-5


async def test_recent_texts_are_remembered_and_bounded(fp32: TextEncoder) -> None:
    embedder = Embedder(EmbedderConfig(cache_entries=2), fp32)
    embedder.start()
    try:
        first = await embedder.embed("alpha")
        again = await embedder.embed("alpha")
        assert again is first and embedder.recent_hits == 1 and embedder.batches == 1
        assert not first.flags.writeable  # shared between callers: read-only
        await embedder.embed("beta")
        await embedder.embed("gamma")  # evicts alpha
        await embedder.embed("alpha")
        assert embedder.batches == 4 and embedder.recent_hits == 1
    finally:
        await embedder.close()


async def test_full_queue_is_overloaded_not_waiting(fp32: TextEncoder) -> None:
    embedder = Embedder(EmbedderConfig(max_queue=2, cache_entries=0), fp32)
    embedder.start()
    try:
        results = await asyncio.gather(
            *(embedder.embed(f"text {i}") for i in range(3)), return_exceptions=True
        )
    finally:
        await embedder.close()
    assert sum(isinstance(r, EmbedderOverloaded) for r in results) == 1
    assert sum(isinstance(r, np.ndarray) for r in results) == 2


def test_index_jobs_run_before_queued_embedding_batches() -> None:
    worker = SerialWorker("test-worker", num_threads=1)
    gate = threading.Event()
    ran: list[str] = []
    blocker = worker.submit(EMBED_PRIORITY, gate.wait)
    jobs = [
        worker.submit(EMBED_PRIORITY, ran.append, "embed-1"),
        worker.submit(EMBED_PRIORITY, ran.append, "embed-2"),
        worker.submit(INDEX_PRIORITY, ran.append, "index"),
    ]
    gate.set()
    for job in [blocker, *jobs]:
        job.result(timeout=10)
    worker.shutdown()
    assert ran == ["index", "embed-1", "embed-2"]


async def test_event_loop_runs_while_the_model_does(fp32: TextEncoder) -> None:
    embedder = Embedder(EmbedderConfig(max_batch=64, cache_entries=0), fp32)
    embedder.start()
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    tick = asyncio.create_task(ticker())
    try:
        await embedder.embed_many([f"a longer request, number {i}, " * 8 for i in range(64)])
    finally:
        done.set()
        await tick
        await embedder.close()
    assert ticks > 10  # the loop kept running during the forward pass


def test_add_many_fills_fresh_slots_and_grows() -> None:
    index = HnswIndex(IndexConfig(initial_capacity=8, max_entries=1_000), dim=8)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((100, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    slots = index.add_many(vectors)
    assert slots.tolist() == list(range(100)) and index.live == 100 and index.capacity >= 100
    assert index.add(vectors[0]) == 100
    best = index.search(vectors[42], 1, lambda slot: True)
    assert best[0][0] == 42 and best[0][1] == pytest.approx(1.0, abs=1e-5)


def test_saved_graph_restores_into_an_empty_index(tmp_path: object) -> None:
    cfg = IndexConfig(initial_capacity=8, max_entries=1_000)
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    built = HnswIndex(cfg, dim=8)
    built.add_many(vectors)
    path = str(tmp_path) + "/graph.hnsw"
    built.save(path)
    restored = HnswIndex(cfg, dim=8)
    assert restored.restore(path, vectors).tolist() == list(range(50))
    assert restored.live == 50 and restored.search(vectors[7], 1, lambda s: True)[0][0] == 7
    assert restored.search_exact(vectors[9], [9, 10], 1)[0][0] == 9
    with pytest.raises(ValueError):
        HnswIndex(cfg, dim=8).restore(path, vectors[:10])
