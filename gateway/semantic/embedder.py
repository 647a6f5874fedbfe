"""Sentence embeddings off the event loop, with concurrent requests micro-batched.

Rules for callers: `start()` before use and `close()` after; `embed()` / `embed_many()` are safe
from any number of concurrent tasks. All model calls run on one worker thread, which the cache
also uses for index work (`run`), so model and index are never touched by two threads at once.
Index jobs go ahead of queued embedding batches: they are short and finish lookups whose
embedding is already done, so a burst of lookups does not wait behind the next batch.

Batching needs no timer: while a batch runs, new lookups queue, and the next batch takes up to
`max_batch` of them. A smaller `max_batch` lets the first lookups of a burst finish sooner (lower
p50) at a small cost in throughput. Recent exact texts are answered from a bounded LRU.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from config.semantic import EmbedderConfig
from gateway.semantic.text_encoder import TextEncoder, default_model_path

T = TypeVar("T")
INDEX_PRIORITY = 0
EMBED_PRIORITY = 1
_STOP_PRIORITY = 2  # after every queued job


class EmbedderOverloaded(RuntimeError):
    """The embedding queue is full; the caller should treat the request as a cache bypass."""


def load_model(cfg: EmbedderConfig) -> TextEncoder:
    """The embedding model from its local folder (offline), at `cfg.precision`."""
    import torch

    torch.set_num_threads(cfg.num_threads)
    return TextEncoder.load(
        cfg.model_path or default_model_path(),
        precision=cfg.precision,
        batch_size=cfg.max_batch,
        trace=cfg.trace,
    )


class SerialWorker:
    """One thread running submitted jobs one at a time, lowest priority number first (FIFO
    within a priority). Started on first use; `shutdown` runs what is queued, then stops."""

    def __init__(self, name: str, num_threads: int):
        self.name = name
        self.num_threads = num_threads
        self._jobs: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(
        self, priority: int, fn: Callable[..., T], *args: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
                self._thread.start()
        self._jobs.put((priority, next(self._seq), (future, fn, args)))
        return future

    def shutdown(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put((_STOP_PRIORITY, next(self._seq), None))
            thread.join()

    def _main(self) -> None:
        import torch

        torch.set_num_threads(self.num_threads)
        while True:
            _, _, job = self._jobs.get()
            if job is None:
                return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                future.set_exception(exc)


class Embedder:
    def __init__(self, cfg: EmbedderConfig, model: Any):
        """`model`: a TextEncoder, or anything with SentenceTransformer's `encode` (tests and
        the quality benchmark wrap one)."""
        self.cfg = cfg
        self.model = model
        dim_of = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        self.dim = int(dim_of())
        self.worker = SerialWorker("kvgate-embed", cfg.num_threads)
        # Texts waiting for the next batch, oldest first, by the future their caller awaits: a
        # caller that goes away (its client hung up) takes its text out at once, so a gone
        # request never holds one of the `max_queue` places against a live one.
        self._waiting: OrderedDict[asyncio.Future[np.ndarray], str] = OrderedDict()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self.batches = 0
        self.batched_texts = 0
        self.recent_hits = 0

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._batch_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await asyncio.get_running_loop().run_in_executor(None, self.worker.shutdown)

    def encode_now(self, texts: list[str]) -> np.ndarray:
        """Blocking encode on the caller's thread: for start-up and offline scripts only."""
        cut = [t[: self.cfg.max_text_chars] for t in texts]
        vectors = self.model.encode(
            cut,
            batch_size=max(1, self.cfg.max_batch),
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the embedder's thread, ahead of queued embedding batches."""
        return await asyncio.wrap_future(self.worker.submit(INDEX_PRIORITY, fn, *args))

    @property
    def queued(self) -> int:
        """Texts waiting for a batch (not those of the batch running now)."""
        return len(self._waiting)

    async def embed(self, text: str) -> np.ndarray:
        """The unit embedding of `text` (read-only), batched with other concurrent callers."""
        if self._arrived is None:
            raise RuntimeError("Embedder.start() was not called")
        key = text[: self.cfg.max_text_chars]
        recent = self._recent.get(key)
        if recent is not None:
            self._recent.move_to_end(key)
            self.recent_hits += 1
            return recent
        if len(self._waiting) >= self.cfg.max_queue:
            raise EmbedderOverloaded("embedding queue full")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting[future] = key
        self._arrived.set()
        try:
            return await future
        finally:
            self._waiting.pop(future, None)  # cancelled while queued: out of the queue now

    async def embed_many(self, texts: list[str]) -> np.ndarray:
        """Unit embeddings of `texts` (rows in order), through the same batching as `embed`."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.stack(await asyncio.gather(*(self.embed(t) for t in texts)))

    def _remember(self, text: str, vector: np.ndarray) -> None:
        if self.cfg.cache_entries <= 0:
            return
        self._recent[text] = vector
        self._recent.move_to_end(text)
        while len(self._recent) > self.cfg.cache_entries:
            self._recent.popitem(last=False)

    async def _next_batch(self) -> list[tuple[str, asyncio.Future[np.ndarray]]]:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = loop.time() + self.cfg.max_wait_ms / 1000.0
        while len(self._waiting) < self.cfg.max_batch:
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                break
        taken = min(len(self._waiting), self.cfg.max_batch)
        batch = [self._waiting.popitem(last=False) for _ in range(taken)]
        return [(text, future) for future, text in batch]

    async def _batch_loop(self) -> None:
        while True:
            batch = await self._next_batch()
            live = [(text, fut) for text, fut in batch if not fut.done()]
            if not live:
                continue
            texts = [text for text, _ in live]
            try:
                vectors = await asyncio.wrap_future(
                    self.worker.submit(EMBED_PRIORITY, self.encode_now, texts)
                )
            except Exception as exc:  # noqa: BLE001 - every waiter must hear of the failure
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            vectors.flags.writeable = False
            self.batches += 1
            self.batched_texts += len(live)
            for (text, fut), vector in zip(live, vectors, strict=True):
                self._remember(text, vector)
                if not fut.done():
                    fut.set_result(vector)
