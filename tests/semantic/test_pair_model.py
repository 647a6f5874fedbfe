"""The fine-tuned cross-encoder's plumbing (gateway/semantic/pair_model.py): the frozen / trained
split, its weights file, the guard's veto that reads it, and the real cache calling it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import msgspec
import numpy as np
import pytest
import torch

from config.semantic import GuardConfig
from gateway.semantic.cache import (
    CachedReply,
    CacheQuery,
    build_semantic_cache,
    shipped_guard_weights,
)
from gateway.semantic.pair_model import (
    PairModel,
    PairScorer,
    PairSpec,
    collate,
    encode_pairs,
    lower_states,
    read_pair_weights,
    save_pair_weights,
)
from policies.semantic.guard import PAIR_MODEL_FEATURE_NAMES, Guard, GuardModel
from policies.semantic.pair_features import prompt_terms

# Dev-set prompts (shared/semantic/dev_prompts.jsonl): a paraphrase pair of one cluster.
ACCEPT = "Help me write a polite email accepting a job offer."
ACCEPT_REWRITE = "I got the job!! Could you write a professional email saying yes to the offer?"
DECLINE = "can you draft an email to turn down a job offer politely"
POEM = "Can you write an anniversary poem for my wife? Keep it short and sweet."
POEM_REWRITE = "need a little love poem for my wife, it's our anniversary tomorrow"  # cosine 0.87


@pytest.fixture(scope="module")
def weights_file(st_model: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained pair model (the base model's own top layer, a seeded head) as a file."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pair") / "pair.safetensors"
    save_pair_weights(PairModel(st_model.bert, PairSpec()), str(path), {"sets": []})  # type: ignore[attr-defined]
    return path


def test_top_layer_on_frozen_states_reproduces_the_base_model(st_model: object) -> None:
    """The split is exact: the copied top layer over the frozen part's output gives the
    encoder's last hidden state (training on memoised states sees what a lookup computes)."""
    bert, tokenizer = st_model.bert, st_model.tokenizer  # type: ignore[attr-defined]
    rows = encode_pairs(tokenizer, [(ACCEPT, DECLINE)])
    enc = tokenizer.encode(ACCEPT, DECLINE)
    ids, types = torch.tensor([enc.ids]), torch.tensor([enc.type_ids])
    model = PairModel(bert, PairSpec(top_layers=1))
    with torch.inference_mode():
        full = bert(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=types)
        batch = collate(lower_states(bert, rows, model.first), [rows[0][1]])
        mask = torch.zeros(1, 1, 1, len(enc.ids))
        out = model.module["layers"][0](batch.hidden, attention_mask=mask)
        out = (out[0] if isinstance(out, tuple) else out)[0].numpy()
    want = full.last_hidden_state[0].float().numpy()
    # Per token, the same state up to the embedder's precision (bf16 where the CPU has it).
    cosine = (out * want).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() > 0.999


def test_weights_file_round_trip_and_symmetric_scores(st_model: object, weights_file: Path) -> None:
    assert weights_file.stat().st_size <= 8 * 1024 * 1024
    spec, tensors, _ = read_pair_weights(str(weights_file))
    expected = PairModel(st_model.bert, spec).module.state_dict()  # type: ignore[attr-defined]
    assert set(tensors) == set(expected)
    assert all(
        t.dtype == torch.float16 and t.shape == expected[k].shape for k, t in tensors.items()
    )
    scorer = PairScorer(st_model.bert, st_model.tokenizer, str(weights_file))  # type: ignore[attr-defined]
    ab, ba, same = scorer([(ACCEPT, DECLINE), (DECLINE, ACCEPT), (ACCEPT, ACCEPT)])
    assert ab == pytest.approx(ba, abs=1e-6) and 0.0 < ab < 1.0 and 0.0 < same < 1.0


def test_guard_veto_reads_the_pair_model_and_round_trips() -> None:
    shipped = GuardModel.from_json(shipped_guard_weights())
    model = replace(shipped, min_pair_probability=0.5)
    assert GuardModel.from_dict(model.to_dict()) == model
    data = model.to_dict()
    data["features"] = [*model.feature_names, *PAIR_MODEL_FEATURE_NAMES]
    data["weights"], data["mean"] = [*model.weights, 1.0], [*model.mean, 0.5]
    data["scale"] = [*model.scale, 0.25]
    with_feature = GuardModel.from_dict(data)
    assert with_feature.uses_pair_model and with_feature.needs_pair_model
    assert GuardModel.from_dict(with_feature.to_dict()) == with_feature
    # A broad rewrite that a model serving everything would serve: the veto asks the pair model.
    n = len(shipped.feature_names)
    always = GuardModel((0.0,) * n, 5.0, (0.0,) * n, (1.0,) * n, idf=shipped.idf)
    a, b = prompt_terms(ACCEPT), prompt_terms(ACCEPT_REWRITE)
    spans = lambda pairs: [1.0] * len(pairs)  # noqa: E731
    assert Guard("learned", always).probability(0.8, a, b, spans) > 0.99
    guard = Guard("learned", replace(always, min_pair_probability=0.5))
    asked: list[tuple[str, str]] = []

    def pair_model(answer: float) -> object:
        def probability(pairs: list[tuple[str, str]]) -> list[float]:
            asked.extend(pairs)
            return [answer] * len(pairs)

        return probability

    assert guard.probability(0.8, a, b, spans, pair_probability=pair_model(0.1)) == 0.0
    assert asked == [(a.wording, b.wording)]
    assert guard.probability(0.8, a, b, spans, pair_probability=pair_model(0.9)) > 0.99
    # Without a pair model the veto cannot be cleared: a miss is the safe answer.
    assert guard.probability(0.8, a, b, spans) == 0.0


async def test_cache_asks_the_real_pair_model(
    st_model: object, small_cfg: object, weights_file: Path, tmp_path: Path
) -> None:
    """The same stored prompt and rewrite: served with a veto cut nothing is below, a miss with
    one nothing reaches (the real scorer ran on the embedder's thread both times)."""
    n = len(GuardModel.from_json(shipped_guard_weights()).feature_names)
    shipped = GuardModel.from_json(shipped_guard_weights())
    always = GuardModel((0.0,) * n, 5.0, (0.0,) * n, (1.0,) * n, idf=shipped.idf)
    statuses = []
    for cut in (0.0, 1.01):
        path = tmp_path / f"guard_{cut}.json"
        path.write_text(replace(always, min_pair_probability=cut).to_json())
        guard = GuardConfig(weights_path=str(path), pair_weights_path=str(weights_file))
        cfg = msgspec.structs.replace(small_cfg(), guard=guard)  # type: ignore[operator]
        cache = build_semantic_cache(cfg, model=st_model)
        await cache.start()
        try:
            first = await cache.lookup(_chat(POEM))
            assert await cache.insert(first, CachedReply(text="Roses are red, ..."))
            statuses.append((await cache.lookup(_chat(POEM_REWRITE))).status)
        finally:
            await cache.close()
    assert statuses == ["hit", "miss"]


def _chat(text: str) -> CacheQuery:
    return CacheQuery(tenant="t", model="m", text=text, temperature=0.0)
