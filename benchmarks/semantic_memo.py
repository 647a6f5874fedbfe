"""The embedding model memoised for the semantic-cache benchmarks: every distinct text (prompt,
guard span, token states, joint pair) is encoded once per run, and prompt embeddings can be
kept on disk between runs (`load` / `save`)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from benchmarks.semantic_cross_fit import memo_joint_states
from policies.semantic.cross_pair import JointStates
from policies.semantic.token_alignment import TokenStates


class MemoModel:
    """Wraps the real model; each distinct text is encoded once for the whole run."""

    def __init__(self, model: object):
        self.model = model
        self.vectors: dict[str, np.ndarray] = {}

    def load(self, path: str | Path) -> MemoModel:
        """Add the prompt embeddings an earlier run saved at `path`, if there is one."""
        if Path(path).exists():
            self.vectors.update(pickle.loads(Path(path).read_bytes()))
        return self

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(pickle.dumps(self.vectors))

    def get_embedding_dimension(self) -> int:
        return self.model.get_embedding_dimension()  # type: ignore[attr-defined]

    def encode(self, texts: list[str], **kwargs: object) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if missing:
            out = self.model.encode(missing, **kwargs)  # type: ignore[attr-defined]
            self.vectors.update(zip(missing, np.asarray(out), strict=True))
        return np.stack([self.vectors[t] for t in texts])

    def token_states(self, texts: list[str]) -> list[TokenStates]:
        """Contextual token states (the guard's token alignment), memoised like `encode`."""
        memo: dict[str, TokenStates] = self.__dict__.setdefault("_token_memo", {})
        missing = list(dict.fromkeys(t for t in texts if t not in memo))
        if missing:
            found = self.model.token_states(missing)  # type: ignore[attr-defined]
            memo.update(zip(missing, found, strict=True))
        return [memo[t] for t in texts]

    def joint_states(self, pairs: list[tuple[str, str]]) -> list[JointStates]:
        """Joint passes over text pairs (the guard's cross features), memoised by pair."""
        return memo_joint_states(self.__dict__.setdefault("_joint_memo", {}), self.model, pairs)
