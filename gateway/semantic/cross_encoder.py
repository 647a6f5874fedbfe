"""Joint passes of the sentence encoder over prompt pairs, for the guard's cross features.

`joint_states(encoder, pairs)` runs each pair as one BERT sequence, `[CLS] a [SEP] b [SEP]` with
token types 0 / 1 (the tokenizer's pair template), truncated longest-first to the encoder's
`max_tokens`, and returns the last-layer states split by side (policies/semantic/cross_pair.py
turns them into features). All pairs go through in sub-batches sorted by length. The frozen
TorchScript graph of `TextEncoder` takes no token types, so this runs the eager module (same
weights and precision).

`LookupPairs` batches one lookup's candidates: the guard asks for one pair at a time, in order of
similarity; the first request encodes every pair the lookup named in one forward, and later
requests are answered from that batch. Rules for callers: like `TextEncoder`, not thread-safe;
call it on the embedder's thread (the cache's `_search` runs there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gateway.semantic.text_encoder import TextEncoder
from policies.semantic.cross_pair import JointEncoder, JointStates


def joint_states(encoder: TextEncoder, pairs: Sequence[tuple[str, str]]) -> list[JointStates]:
    """The joint pass of every (a, b) pair, in the order given."""
    import torch

    if not pairs:
        return []
    encodings = encoder.tokenizer.encode_batch([tuple(p) for p in pairs])
    out: list[JointStates | None] = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: len(encodings[i].ids))
    for start in range(0, len(order), encoder.batch_size):
        chunk = order[start : start + encoder.batch_size]
        ids, attention = encoder._batch([encodings[i].ids for i in chunk])
        types = np.zeros(tuple(ids.shape), dtype=np.int64)
        for row, i in enumerate(chunk):
            types[row, : len(encodings[i].type_ids)] = encodings[i].type_ids
        with torch.inference_mode():
            hidden = encoder.bert(
                input_ids=ids, attention_mask=attention, token_type_ids=torch.from_numpy(types)
            ).last_hidden_state
            states = hidden.to(torch.float32).numpy()
        for row, i in enumerate(chunk):
            out[i] = _split(states[row], encodings[i].type_ids, encodings[i].special_tokens_mask)
    return [s for s in out if s is not None]


def _split(states: np.ndarray, type_ids: list[int], special: list[int]) -> JointStates:
    n = len(type_ids)
    kind = np.asarray(type_ids)
    plain = np.asarray(special) == 0
    a = states[:n][(kind == 0) & plain]
    b = states[:n][(kind == 1) & plain]
    return JointStates(cls=states[0].copy(), a=a.copy(), b=b.copy())


def joint_encoder(model: Any) -> JointEncoder | None:
    """A `JointEncoder` over `model`: its own `joint_states` (a memoising wrapper's), or this
    module's over a `TextEncoder` (the only kind with a pair template and token types here);
    None for other models (a cross-feature guard then rejects every broad rewrite)."""
    own = getattr(model, "joint_states", None)
    if callable(own):
        return own  # type: ignore[no-any-return]
    if not isinstance(model, TextEncoder):
        return None
    return lambda pairs: joint_states(model, pairs)


class LookupPairs:
    """One lookup's candidate pairs, encoded together on the first request.

    `expected` are the (query, cached) wordings of the lookup's candidates in the order the
    guard will weigh them; a request for a pair not among them is encoded on its own."""

    def __init__(self, encode: JointEncoder, expected: Sequence[tuple[str, str]]):
        self._encode = encode
        self._expected = list(dict.fromkeys(expected))
        self._done: dict[tuple[str, str], JointStates] = {}
        self.forwards = 0

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[JointStates]:
        missing = [p for p in pairs if p not in self._done]
        if missing:
            rest = [p for p in self._expected if p not in self._done]
            batch = list(dict.fromkeys([*missing, *rest]))
            self._done.update(zip(batch, self._encode(batch), strict=True))
            self.forwards += 1
        return [self._done[p] for p in pairs]
