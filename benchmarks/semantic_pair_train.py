"""Fine-tune the guard's cross-encoder (gateway/semantic/pair_model.py) on labelled prompt sets.

    python benchmarks/semantic_pair_train.py --sets dev=...,h1=...,...,h6=... \
        [--write gateway/semantic/pair_model.safetensors] [--loso /tmp/kvgate_ft_loso.pkl] \
        [--leave-out dev,h1,...] [--memo /tmp/kvgate_pooled_memo.pkl]

Training pairs are the pairs the cache actually judges: for each prompt, its `NEIGHBOURS` nearest
prompts of its own set (sentence cosine >= `TRAIN_FLOOR`), label 1 when both are in the same
cluster, both orders. Every setting below was fixed before any left-out result was seen (no
search; a first run's training loss showed the head could not move, so the head got a layer
norm and the rates went up; a second run's training loss still fell steeply after 3 epochs
(0.68, 0.59, 0.54), so 8; both before any left-out probability was read): top layer only,
8 epochs, AdamW (layer 1e-4, head 1e-3, weight decay 0.01, linear
decay), batch 32, 64 tokens, seed 0. The frozen part's output (embeddings + lower five layers) is
computed once per ordered wording pair and memoised under /tmp (`--frozen-memo`), so a training
run is only the top layer's forward and backward.

`--write`: trained on every set given, written as fp16 safetensors (the shipped weights).
`--loso`: for each set in turn (or `--leave-out`), trained on the OTHER sets only, then its
probability (both orders averaged) of every pair of the left-out set at cosine >=
`JUDGED_FLOOR` (every pair a lookup at the shipped 0.75 may weigh), written as a pickle
{set: {(a, b): p}} for semantic_pooled.py's `+ft` parts. Texts are the prompts' normalised
wordings (`PromptTerms.wording`), which is what the guard hands the model at lookup time.
"""

from __future__ import annotations

import argparse
import pickle
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.semantic_quality import EMBED_KWARGS, MemoModel, load_rows  # noqa: E402
from config.semantic import SemanticCacheConfig  # noqa: E402
from gateway.semantic.embedder import load_model  # noqa: E402
from gateway.semantic.pair_model import (  # noqa: E402
    PairModel,
    PairSpec,
    collate,
    encode_pairs,
    lower_states,
    pair_tokenizer,
    save_pair_weights,
)
from gateway.semantic.text_encoder import default_model_path  # noqa: E402
from policies.semantic.pair_features import prompt_terms  # noqa: E402

NEIGHBOURS = 3
TRAIN_FLOOR = 0.5
JUDGED_FLOOR = 0.72  # a little under the shipped 0.75: every pair a lookup there may weigh
SPEC = PairSpec(top_layers=1, max_tokens=64)
EPOCHS = 8
BATCH = 32
LR_LAYERS, LR_HEAD, WEIGHT_DECAY = 1e-4, 1e-3, 0.01
SEED = 0

TextPair = tuple[str, str]


class Data:
    """The sets' prompts, their unit embeddings, and the frozen states by ordered text pair."""

    def __init__(self, sets: list[tuple[str, str]], memo_path: str, frozen_path: str):
        self.rows: list[dict[str, str]] = []
        self.set_of: list[str] = []
        for name, path in sets:
            found = load_rows(path)
            self.rows += found
            self.set_of += [name] * len(found)
        self.names = [n for n, _ in sets]
        self.model = load_model(SemanticCacheConfig().embedder)
        memo = MemoModel(self.model).load(memo_path)
        self.vectors = memo.encode([r["prompt"] for r in self.rows], **EMBED_KWARGS)
        # The model reads what a lookup hands the guard: the prompts' normalised wordings.
        self.wordings = [prompt_terms(r["prompt"]).wording for r in self.rows]
        self.bert = self.model.bert  # type: ignore[attr-defined]
        self.tokenizer = pair_tokenizer(default_model_path(), SPEC)
        self.frozen_path = Path(frozen_path)
        self.frozen: dict[TextPair, tuple[np.ndarray, np.ndarray]] = {}
        if self.frozen_path.exists():
            self.frozen = pickle.loads(self.frozen_path.read_bytes())
        self._added = 0

    def indices(self, name: str) -> list[int]:
        return [i for i, s in enumerate(self.set_of) if s == name]

    def neighbour_pairs(self, name: str) -> list[tuple[int, int]]:
        """Unordered pairs: each prompt with its NEIGHBOURS nearest at cosine >= TRAIN_FLOOR."""
        own = self.indices(name)
        sim = self.vectors[own] @ self.vectors[own].T
        np.fill_diagonal(sim, -1.0)
        out: set[tuple[int, int]] = set()
        for r in range(len(own)):
            for c in np.argsort(-sim[r])[:NEIGHBOURS]:
                if sim[r, c] >= TRAIN_FLOOR:
                    out.add((min(own[r], own[c]), max(own[r], own[c])))
        return sorted(out)

    def judged_pairs(self, name: str) -> list[tuple[int, int]]:
        own = self.indices(name)
        sim = self.vectors[own] @ self.vectors[own].T
        rr, cc = np.nonzero(np.triu(sim >= JUDGED_FLOOR, k=1))
        return [(own[r], own[c]) for r, c in zip(rr.tolist(), cc.tolist(), strict=True)]

    def texts(self, pairs: list[tuple[int, int]]) -> list[TextPair]:
        return [(self.wordings[i], self.wordings[j]) for i, j in pairs]

    def ensure(self, pairs: list[TextPair]) -> None:
        """Frozen states of every ordered pair (memoised; sorted by length, batches of 64)."""
        missing = list(dict.fromkeys(p for p in pairs if p not in self.frozen))
        if not missing:
            return
        rows = encode_pairs(self.tokenizer, missing)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        started = time.monotonic()
        first = len(self.bert.encoder.layer) - SPEC.top_layers
        for start in range(0, len(order), 64):
            chunk = order[start : start + 64]
            states = lower_states(self.bert, [rows[i] for i in chunk], first)
            for i, s in zip(chunk, states, strict=True):
                side = np.asarray(rows[i][1], dtype=np.int8)
                self.frozen[missing[i]] = (s.astype(np.float16), side)
        self._added += len(missing)
        print(
            f"frozen states: {len(missing)} pairs in {time.monotonic() - started:.0f} s", flush=True
        )

    def save(self) -> None:
        if self._added:
            self.frozen_path.write_bytes(pickle.dumps(self.frozen, protocol=5))
            self._added = 0


def _batches(pairs: list[TextPair], data: Data, rng: random.Random) -> list[list[int]]:
    """Batches of similar length (less padding), in a seeded random order."""
    order = sorted(range(len(pairs)), key=lambda i: (len(data.frozen[pairs[i]][1]), rng.random()))
    batches = [order[s : s + BATCH] for s in range(0, len(order), BATCH)]
    rng.shuffle(batches)
    return batches


def train(data: Data, pairs: list[TextPair], labels: list[float]) -> PairModel:
    """The pair model fitted on ordered `pairs` (SPEC, EPOCHS, the fixed optimiser)."""
    import torch

    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    model = PairModel(data.bert, SPEC)
    module = model.module
    module.train()
    groups = [
        {"params": module["layers"].parameters(), "lr": LR_LAYERS},
        {"params": module["head"].parameters(), "lr": LR_HEAD},
    ]
    opt = torch.optim.AdamW(groups, weight_decay=WEIGHT_DECAY)
    steps = EPOCHS * ((len(pairs) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    y_all = torch.tensor(labels, dtype=torch.float32)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    started = time.monotonic()
    for epoch in range(EPOCHS):
        total = 0.0
        for chunk in _batches(pairs, data, rng):
            batch = collate(
                [data.frozen[pairs[i]][0].astype(np.float32) for i in chunk],
                [data.frozen[pairs[i]][1] for i in chunk],
            )
            loss = loss_fn(model.logits(batch), y_all[chunk])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(chunk)
        print(
            f"  epoch {epoch}: loss {total / len(pairs):.4f} ({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    module.eval()
    return model


def predict(data: Data, model: PairModel, pairs: list[TextPair]) -> dict[TextPair, float]:
    """p(same) of each unordered pair, (a, b) and (b, a) averaged; keyed by both orders."""
    import torch

    both = [*pairs, *[(b, a) for a, b in pairs]]
    data.ensure(both)
    probs: dict[TextPair, float] = {}
    order = sorted(range(len(both)), key=lambda i: len(data.frozen[both[i]][1]))
    for start in range(0, len(order), 128):
        chunk = order[start : start + 128]
        batch = collate(
            [data.frozen[both[i]][0].astype(np.float32) for i in chunk],
            [data.frozen[both[i]][1] for i in chunk],
        )
        with torch.inference_mode():
            p = torch.sigmoid(model.logits(batch)).numpy()
        probs.update({both[i]: float(x) for i, x in zip(chunk, p, strict=True)})
    out: dict[TextPair, float] = {}
    for a, b in pairs:
        out[(a, b)] = out[(b, a)] = (probs[(a, b)] + probs[(b, a)]) / 2.0
    return out


def training_set(data: Data, names: list[str]) -> tuple[list[TextPair], list[float]]:
    pairs, labels = [], []
    for name in names:
        for i, j in data.neighbour_pairs(name):
            same = float(data.rows[i]["cluster"] == data.rows[j]["cluster"])
            a, b = data.wordings[i], data.wordings[j]
            pairs += [(a, b), (b, a)]
            labels += [same, same]
    return pairs, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", required=True, help="name=path,...")
    parser.add_argument("--write", default="", help="train on every set, write fp16 weights")
    parser.add_argument("--loso", default="", help="pickle of leave-one-set-out probabilities")
    parser.add_argument("--leave-out", default="", help="with --loso: only these sets")
    parser.add_argument("--memo", default="/tmp/kvgate_pooled_memo.pkl")
    parser.add_argument("--frozen-memo", default="/tmp/kvgate_ft_frozen.pkl")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    sets = [tuple(s.split("=", 1)) for s in args.sets.split(",")]
    data = Data(sets, args.memo, args.frozen_memo)  # type: ignore[arg-type]
    torch.set_num_threads(args.threads)
    counts = {n: (len(data.neighbour_pairs(n)), len(data.judged_pairs(n))) for n in data.names}
    print(f"pairs per set (training, judged): {counts}", flush=True)
    everything, _ = training_set(data, data.names)
    judged = [p for n in data.names for p in data.texts(data.judged_pairs(n))]
    data.ensure(everything + judged + [(b, a) for a, b in judged])
    data.save()
    if args.loso:
        path = Path(args.loso)
        out: dict[str, dict[TextPair, float]] = (
            pickle.loads(path.read_bytes()) if path.exists() else {}
        )
        for name in args.leave_out.split(",") if args.leave_out else data.names:
            pairs, labels = training_set(data, [n for n in data.names if n != name])
            print(
                f"leave out {name}: {len(pairs)} ordered pairs, {int(sum(labels))} same", flush=True
            )
            model = train(data, pairs, labels)
            out[name] = predict(data, model, data.texts(data.judged_pairs(name)))
            path.write_bytes(pickle.dumps(out))
    if args.write:
        pairs, labels = training_set(data, data.names)
        print(f"all sets: {len(pairs)} ordered pairs, {int(sum(labels))} same", flush=True)
        model = train(data, pairs, labels)
        save_pair_weights(model, args.write, {"sets": data.names, "seed": SEED, "epochs": EPOCHS})
        print(f"wrote {args.write} ({Path(args.write).stat().st_size} bytes)", flush=True)


if __name__ == "__main__":
    main()
