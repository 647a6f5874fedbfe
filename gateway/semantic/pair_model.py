"""A fine-tuned cross-encoder for the guard: p(same answer) of a prompt pair (torch).

The sentence model (all-MiniLM-L6-v2) reads the pair as one sequence, `[CLS] a [SEP] b [SEP]`
(token types 0 / 1, truncated longest-first to `max_tokens`). Its embeddings and lower layers
stay frozen; only the top `top_layers` encoder layers (copies, fine-tuned) and a small head are
trained (benchmarks/semantic_pair_train.py). The head reads the mean of every token state, and
|ma - mb| and ma * mb of each side's unit mean state, layer-normed, and gives one logit.
`PairScorer` averages the probability over both orders, (a, b) and (b, a), so the score is
symmetric.

Frozen states: `lower_states` runs the frozen part once per wording pair; training memoises it,
a lookup runs it through the embedder's own eager BERT module (the same weights). Rules for
callers: like `TextEncoder`, nothing here is thread-safe; call it on the embedder's thread.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PAIR_WEIGHTS_FILE = "pair_model.safetensors"
# The cross-encoder is tied to this sentence model's frozen lower layers.
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def shipped_pair_weights() -> Path:
    """The fine-tuned layers and head shipped with the project (trained on all seven sets)."""
    return Path(__file__).resolve().parent / PAIR_WEIGHTS_FILE


@dataclass(frozen=True, slots=True)
class PairSpec:
    """How the pair model was cut from the base model; stored in the weights' metadata."""

    top_layers: int = 1
    max_tokens: int = 64


@dataclass(frozen=True, slots=True)
class PairBatch:
    """Frozen states of a batch of sequences, right-padded: hidden (B, T, D) float32, mask
    (B, T) 1 for a real token, side (B, T) 0 for a's word pieces, 1 for b's, -1 otherwise."""

    hidden: Any
    mask: Any
    side: Any


def pair_head_module(dim: int) -> Any:
    import torch

    # The pooled parts differ in scale by ~sqrt(dim) (a raw mean state, products of unit
    # vectors): a layer norm first lets one learning rate move every weight.
    return torch.nn.Sequential(torch.nn.LayerNorm(3 * dim), torch.nn.Linear(3 * dim, 1))


class PairModel:
    """The trainable part: copies of the top encoder layers, and the head."""

    def __init__(self, bert: Any, spec: PairSpec):
        import torch

        self.spec = spec
        layers = bert.encoder.layer
        self.dim = int(bert.config.hidden_size)
        self.first = len(layers) - spec.top_layers  # index of the first trained layer
        self.module = torch.nn.ModuleDict(
            {
                "layers": torch.nn.ModuleList(
                    copy.deepcopy(layers[i]) for i in range(self.first, len(layers))
                ),
                "head": pair_head_module(self.dim),
            }
        ).float()

    def logits(self, batch: PairBatch) -> Any:
        """One logit per sequence (B,)."""
        import torch

        mask = batch.mask.to(torch.float32)
        # Additive key mask, broadcast over heads and queries: padding is never attended to.
        bias = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
        hidden = batch.hidden
        for layer in self.module["layers"]:
            out = layer(hidden, attention_mask=bias)
            hidden = out[0] if isinstance(out, tuple) else out
        return self.module["head"](_pooled(hidden, mask, batch.side)).squeeze(-1)

    def state_dict_fp16(self) -> dict[str, Any]:
        import torch

        return {
            k: v.detach().to(torch.float16).contiguous()
            for k, v in self.module.state_dict().items()
        }

    def load_fp16(self, tensors: dict[str, Any]) -> None:
        import torch

        self.module.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})


def _pooled(hidden: Any, mask: Any, side: Any) -> Any:
    import torch

    def mean(weights: Any) -> Any:
        w = weights.unsqueeze(-1)
        return (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)

    every = mean(mask)
    # A side with no word piece falls back to the whole sequence's mean (defined, never NaN).
    a = torch.nn.functional.normalize(mean((side == 0).to(hidden.dtype)) + 1e-6 * every, dim=-1)
    b = torch.nn.functional.normalize(mean((side == 1).to(hidden.dtype)) + 1e-6 * every, dim=-1)
    return torch.cat([every, (a - b).abs(), a * b], dim=-1)


def encode_pairs(
    tokenizer: Any, pairs: Sequence[tuple[str, str]]
) -> list[tuple[list[int], list[int]]]:
    """(token ids, side) per pair; `tokenizer` truncates to the spec's `max_tokens`."""
    out = []
    for enc in tokenizer.encode_batch([tuple(p) for p in pairs]):
        side = [
            -1 if special else kind
            for kind, special in zip(enc.type_ids, enc.special_tokens_mask, strict=True)
        ]
        out.append((list(enc.ids), side))
    return out


def pair_tokenizer(folder: str, spec: PairSpec) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=spec.max_tokens)
    return tokenizer


def lower_states(
    bert: Any, rows: Sequence[tuple[list[int], list[int]]], first: int
) -> list[np.ndarray]:
    """The frozen part's output (the input of layer `first`) per sequence, float32 (T, D)."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    for r, (tok, side) in enumerate(rows):
        ids[r, : len(tok)] = tok
        mask[r, : len(tok)] = 1
        types[r, : len(tok)] = [1 if s == 1 else 0 for s in side]
        # The final [SEP] after b carries type 1 in BERT's pair template.
        if len(tok) and side[-1] == -1 and 1 in side:
            types[r, len(tok) - 1] = 1
    with torch.inference_mode():
        out = bert(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            token_type_ids=torch.from_numpy(types),
            output_hidden_states=True,
        )
        hidden = out.hidden_states[first].to(torch.float32).numpy()
    return [hidden[r, : len(tok)].copy() for r, (tok, _) in enumerate(rows)]


def collate(states: Sequence[np.ndarray], sides: Sequence[Sequence[int]]) -> PairBatch:
    import torch

    width = max(len(s) for s in states)
    dim = states[0].shape[1]
    hidden = np.zeros((len(states), width, dim), dtype=np.float32)
    mask = np.zeros((len(states), width), dtype=np.float32)
    side = np.full((len(states), width), -1, dtype=np.int64)
    for r, (s, k) in enumerate(zip(states, sides, strict=True)):
        hidden[r, : len(s)] = s
        mask[r, : len(s)] = 1.0
        side[r, : len(s)] = k
    return PairBatch(torch.from_numpy(hidden), torch.from_numpy(mask), torch.from_numpy(side))


def save_pair_weights(model: PairModel, path: str, extra: dict[str, object]) -> None:
    from safetensors.torch import save_file

    meta = {"top_layers": model.spec.top_layers, "max_tokens": model.spec.max_tokens, **extra}
    save_file(model.state_dict_fp16(), path, metadata={"pair_model": json.dumps(meta)})


def read_pair_weights(path: str) -> tuple[PairSpec, dict[str, Any], dict[str, object]]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = json.loads(f.metadata()["pair_model"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    spec = PairSpec(int(meta["top_layers"]), int(meta["max_tokens"]))
    return spec, tensors, meta


class PairScorer:
    """p(same answer) of wording pairs, both orders averaged, over a sentence encoder's eager
    BERT module (`TextEncoder.bert`), its tokenizer (copied: this one truncates to the pair
    model's length) and a fine-tuned weights file."""

    def __init__(self, bert: Any, tokenizer: Any, weights_path: str, batch_size: int = 32):
        from tokenizers import Tokenizer

        spec, tensors, self.meta = read_pair_weights(weights_path)
        self.bert = bert
        self.model = PairModel(bert, spec)
        self.model.load_fp16(tensors)
        self.model.module.eval()
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=spec.max_tokens)
        self.batch_size = batch_size

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        import torch

        if not pairs:
            return []
        both = [*pairs, *[(b, a) for a, b in pairs]]
        rows = encode_pairs(self.tokenizer, both)
        probs = np.zeros(len(both))
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            states = lower_states(self.bert, [rows[i] for i in chunk], self.model.first)
            batch = collate(states, [rows[i][1] for i in chunk])
            with torch.inference_mode():
                probs[chunk] = torch.sigmoid(self.model.logits(batch)).numpy()
        n = len(pairs)
        return [float(x) for x in (probs[:n] + probs[n:]) / 2.0]


def pair_probability_for(model: Any, weights_path: str = "") -> Any:
    """The cross-encoder over an embedding model: its own `pair_probability` (an evaluation
    harness's table), or a `PairScorer` over a `TextEncoder`'s BERT module and tokenizer with
    `weights_path` (empty: the shipped weights), or over a wrapper's inner `model`; None for
    other models (a guard that needs it
    then rejects every pair a model would decide)."""
    own = getattr(model, "pair_probability", None)
    if callable(own):
        return own
    bert, tokenizer = getattr(model, "bert", None), getattr(model, "tokenizer", None)
    if bert is None or tokenizer is None:
        inner = getattr(model, "model", None)  # a memoising wrapper (the benchmarks' MemoModel)
        return pair_probability_for(inner, weights_path) if inner is not None else None
    path = weights_path or str(shipped_pair_weights())
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"the guard weights read the fine-tuned pair model, and {path} is missing "
            "(set guard.pair_weights_path; benchmarks/semantic_pair_train.py --write makes one)"
        )
    return PairScorer(bert, tokenizer, path)
