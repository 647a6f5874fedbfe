"""Predicted Outputs in the engine (tiny model): whatever the prediction, the answer is the one
the engine gives without it; the prediction's matching lead is kept, counted, and costs no
decode steps; nothing leaks."""

import msgspec
import pytest

from gpu_worker.engine_api import EngineRequest
from gpu_worker.reference_drafts import FIRST_DRAFT_TOKENS


def predicted(request: EngineRequest, prediction: list[int]) -> EngineRequest:
    return msgspec.structs.replace(request, prediction_token_ids=list(prediction))


def plain_answers(make_engine, run_all, reqs):
    engine = make_engine()
    for r in reqs:
        engine.add_request(r)
    return run_all(engine)[0]


def garbage(n: int, offset: int = 0) -> list[int]:
    return [(7 * i + 11 + offset) % 250 + 3 for i in range(n)]


def cases(answer: list[int]) -> dict[str, list[int]]:
    """Predictions of one answer: right, right then wrong (at several block offsets), wrong,
    too long, a single token, and one that is the answer with a token changed early."""
    out = {
        "exact": answer[:-1],
        "whole": answer,
        "wrong": garbage(len(answer)),
        "longer": answer + garbage(20),
        "one": answer[:1],
    }
    for k in (1, 3, 4, 5, 8):
        out[f"lead{k}"] = answer[:k] + garbage(12, offset=k)
    return out


@pytest.mark.parametrize("block_size", [4, 16])
def test_any_prediction_gives_the_plain_answer(make_engine, req, run_all, prompts, block_size):
    base = [req(f"p{i}", p, max_tokens=14) for i, p in enumerate(prompts(3, seed=21, lo=5, hi=30))]
    plain = plain_answers(make_engine, run_all, base)
    engine = make_engine(block_size=block_size)
    expect = {}
    for r in base:
        for name, prediction in cases(plain[r.request_id]).items():
            rid = f"{r.request_id}-{name}"
            engine.add_request(predicted(msgspec.structs.replace(r, request_id=rid), prediction))
            expect[rid] = (plain[r.request_id], prediction)
    tokens, last = run_all(engine)
    for rid, (answer, prediction) in expect.items():
        assert tokens[rid] == answer, rid
        lead = next(
            (j for j, (a, b) in enumerate(zip(prediction, answer, strict=False)) if a != b), None
        )
        lead = min(len(prediction), len(answer) - 1) if lead is None else lead
        out = last[rid]
        # The matching lead is kept, in drafts of 8 then 16 tokens (14-token answers): a lead
        # longer than the first draft loses one token to the model's own after it, as each
        # check adds one. Later drafts (the answer re-joining the prediction) may keep more.
        least = lead if lead <= FIRST_DRAFT_TOKENS else lead - 1
        assert least <= out.num_accepted_prediction_tokens <= len(answer) - 1, rid
        if rid.endswith("-wrong"):
            assert out.num_accepted_prediction_tokens == 0 < out.num_rejected_prediction_tokens
    assert all(c == 0 for c in engine.block_manager.ref_counts())


def test_a_kept_prediction_saves_decode_steps(make_engine, req, run_all, prompts):
    r = req("a", prompts(1, seed=22, lo=20, hi=21)[0], max_tokens=24)
    answer = plain_answers(make_engine, run_all, [r])["a"]
    steps = {}
    for name, prediction in (("none", []), ("right", answer), ("wrong", garbage(24))):
        engine = make_engine(max_tokens_per_step=4096)
        engine.add_request(predicted(r, prediction))
        tokens, _ = run_all(engine)
        assert tokens["a"] == answer
        steps[name] = engine.stats().num_steps
    assert steps["none"] == 24  # one prefill step that samples the first token, 23 decodes
    assert steps["right"] == 2  # drafts of 8, then 16 tokens (the 15 left)
    assert steps["wrong"] == 24  # the first token is the model's own; then as without


def test_the_answer_rejoining_the_prediction_is_drafted_again(make_engine, req, run_all, prompts):
    r = req("a", prompts(1, seed=26, lo=12, hi=13)[0], max_tokens=30)
    answer = plain_answers(make_engine, run_all, [r])["a"]
    steps = {}
    kept = {}
    # Wrong at first, then the answer from its fourth token: once the answer's last two tokens
    # (its 4th and 5th) are in the prediction, the rest is drafted from there.
    for name, prediction in (("none", []), ("rejoins", garbage(5) + answer[3:])):
        engine = make_engine(max_tokens_per_step=4096)
        engine.add_request(predicted(r, prediction))
        tokens, last = run_all(engine)
        assert tokens["a"] == answer
        steps[name], kept[name] = engine.stats().num_steps, last["a"].num_accepted_prediction_tokens
    assert kept["rejoins"] >= len(answer) - 6
    assert steps["rejoins"] <= 7 < steps["none"] == 30


def test_chunked_batched_and_preempted_agree(make_engine, req, run_all, prompts):
    base = [req(str(i), p, max_tokens=20) for i, p in enumerate(prompts(8, seed=23, lo=8, hi=30))]
    plain = plain_answers(make_engine, run_all, base)
    reqs = [
        predicted(r, plain[r.request_id][: 3 + 2 * i] + garbage(6, offset=i))
        for i, r in enumerate(base)
    ]
    for cfg in (
        {"max_tokens_per_step": 7, "max_batch_size": 3},
        {"num_blocks": 20},  # 80 token slots: preemption by recompute
        {"num_blocks": 20, "enable_prefix_caching": False},
    ):
        engine = make_engine(**cfg)
        for r in reqs:
            engine.add_request(r)
        assert run_all(engine)[0] == plain, cfg
        assert all(c == 0 for c in engine.block_manager.ref_counts())
        if "num_blocks" in cfg:
            assert engine.stats().num_preemptions > 0


def test_the_prompt_cache_is_used_but_never_the_predictions(make_engine, req, run_all, prompts):
    r = req("a", prompts(1, seed=24, lo=30, hi=31)[0], max_tokens=12)
    answer = plain_answers(make_engine, run_all, [r])["a"]
    engine = make_engine()
    for i in range(3):  # the second and third run find prompt and prediction blocks cached
        again = msgspec.structs.replace(r, request_id=f"a{i}")
        engine.add_request(predicted(again, answer[:6] + garbage(6)))
        tokens, last = run_all(engine)
        assert tokens[f"a{i}"] == answer
        assert last[f"a{i}"].num_accepted_prediction_tokens == 6
        if i:
            assert last[f"a{i}"].num_cached_tokens == 28  # the prompt's full blocks, no more


def test_stop_and_eos_inside_a_kept_prediction_end_the_answer(make_engine, req, run_all, prompts):
    p = prompts(1, seed=25, lo=10, hi=11)[0]
    free = req("a", p, max_tokens=16)
    answer = plain_answers(make_engine, run_all, [free])["a"]
    engine = make_engine()
    eos = next(iter(engine._eos), None)
    if eos is None:
        pytest.skip("the tiny model has no eos token")
    stops = msgspec.structs.replace(free.sampling, ignore_eos=False)
    first_eos = answer.index(eos) if eos in answer else None
    engine.add_request(predicted(msgspec.structs.replace(free, sampling=stops), answer))
    tokens, last = run_all(engine)
    plain = plain_answers(make_engine, run_all, [msgspec.structs.replace(free, sampling=stops)])
    assert tokens["a"] == plain["a"]
    if first_eos is not None:
        assert last["a"].finish_reason == "stop"


def test_sampling_with_a_prediction_keeps_the_distribution(make_engine, req, run_all):
    """With temperature > 0, the first token's law with a prediction equals the law without."""
    prompt = [5, 9, 17, 33, 2, 8]
    n = 400
    engine = make_engine(num_blocks=512, max_batch_size=64)
    for i in range(n):
        engine.add_request(req(f"plain{i}", prompt, max_tokens=3, temperature=2.0, seed=i))
    plain = run_all(engine)[0]
    firsts = [plain[f"plain{i}"][0] for i in range(n)]
    guess = max(set(firsts), key=firsts.count)  # the likeliest first token
    engine = make_engine(num_blocks=512, max_batch_size=64)
    for i in range(n):
        r = req(f"pred{i}", prompt, max_tokens=3, temperature=2.0, seed=10_000 + i)
        engine.add_request(predicted(r, [guess, guess]))
    tokens, last = run_all(engine)
    share_plain = firsts.count(guess) / n
    share_pred = sum(tokens[f"pred{i}"][0] == guess for i in range(n)) / n
    kept = sum(last[f"pred{i}"].num_accepted_prediction_tokens >= 1 for i in range(n)) / n
    spread = 4 * (share_plain * (1 - share_plain) / n * 2) ** 0.5 + 1e-9
    assert 0.05 < share_plain < 0.95  # the test has something to tell apart
    assert abs(share_pred - share_plain) < spread
    assert kept == share_pred  # kept exactly when the draw is the predicted token


def test_a_stop_string_inside_a_kept_prediction_ends_where_it_would(make_engine, req, prompts):
    """Kept tokens go through the stop-string check one by one: the same text and the same
    token count as without a prediction."""
    p = prompts(1, seed=28, lo=10, hi=11)[0]

    def answer(stop: tuple[str, ...], prediction: list[int], accepted: bool = False):
        engine = make_engine()
        if engine.tokenizer is None:
            pytest.skip("the tiny model has no tokenizer")
        r = req("a", p, max_tokens=16, stop=stop)
        engine.add_request(predicted(r, prediction))
        text, last = "", None
        while engine.has_work():
            for out in engine.step():
                text += out.text_delta
                last = out
        if accepted:
            return last.num_accepted_prediction_tokens
        return text, last.num_output_tokens, engine.block_manager.ref_counts()

    free, _, _ = answer((), [])
    engine = make_engine()
    engine.add_request(req("ids", p, max_tokens=16))
    ids = []
    while engine.has_work():
        for out in engine.step():
            ids += out.new_token_ids
    # A character of the answer that first appears past its start (the tiny model writes bytes).
    stop = next((c for i, c in enumerate(free) if i >= 1 and c.isalnum() and c not in free[:i]), "")
    if not stop:
        pytest.skip("no usable stop character in the tiny model's text")
    plain_text, plain_count, _ = answer((stop,), [])
    text, count, refs = answer((stop,), ids)
    assert (text, count) == (plain_text, plain_count)
    assert count < FIRST_DRAFT_TOKENS and all(c == 0 for c in refs)  # inside the first draft
    assert answer((stop,), ids, accepted=True) <= count  # kept, and part of the answer


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_mixed_predictions_under_pressure_and_aborts(
    make_engine, req, run_all, prompts, preemption
):
    """Many requests at once with right, partly right, wrong or no predictions, greedy and
    seeded-sampled, in a tiny pool (preemption either way), small steps, and aborts: every
    greedy answer equals its plain one, every request finishes once, no block is left held."""
    ps = prompts(16, seed=28, lo=4, hi=28)
    base = [req(f"g{i}", p, max_tokens=6 + i % 9) for i, p in enumerate(ps)]
    plain = plain_answers(make_engine, run_all, base)
    reqs = []
    for i, r in enumerate(base):
        answer = plain[r.request_id]
        choice = [
            [],
            answer,
            answer[: i % 5] + garbage(7, offset=i),
            garbage(10, offset=i),
            garbage(3, offset=i) + answer[2:],
        ][i % 5]
        reqs.append(predicted(r, choice))
        if i % 4 == 0:  # a sampled twin with the same prediction
            twin = req(f"s{i}", r.prompt_token_ids, max_tokens=8, temperature=0.8, seed=i)
            reqs.append(predicted(twin, choice))
    swap = {"num_swap_blocks": 64} if preemption == "swap" else {}
    engine = make_engine(
        num_blocks=24, max_batch_size=6, max_tokens_per_step=16, preemption=preemption, **swap
    )
    finished: dict[str, object] = {}
    tokens: dict[str, list[int]] = {}
    aborted = set()
    for k, r in enumerate(reqs):
        engine.add_request(r)
        if k % 6 == 5:
            victim = reqs[k - 3].request_id
            engine.abort(victim)
            aborted.add(victim)
        for out in engine.step():
            assert out.request_id not in finished
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
            if out.finished:
                finished[out.request_id] = out
    rest, last = run_all(engine)
    for rid, more in rest.items():
        assert rid not in finished
        tokens.setdefault(rid, []).extend(more)
    finished |= last
    assert set(finished) == {r.request_id for r in reqs}
    for r in base:
        if r.request_id not in aborted and finished[r.request_id].finish_reason != "abort":
            assert tokens[r.request_id] == plain[r.request_id], r.request_id
    assert engine.stats().num_preemptions > 0
    assert (engine.scheduler.num_swap_outs > 0) == (preemption == "swap")
    assert all(c == 0 for c in engine.block_manager.ref_counts())
