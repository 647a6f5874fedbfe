"""The simulated engine with Predicted Outputs: the answer never changes, the counts are the
prediction's longest prefix that the answer repeats, and accepted tokens skip their decode steps."""

from __future__ import annotations

import openai
import pytest

from config.cost_model import CostModelConfig
from config.worker import SimEngineConfig, WorkerConfig
from gpu_worker.engine_api import EngineRequest, RequestOutput, SamplingParams
from gpu_worker.server import start_worker
from gpu_worker.sim_engine import SimEngine

PROMPTS = ([5, 6, 7] * 7, list(range(40, 90)), [9] * 33)


def _engine(max_model_len: int = 8192) -> tuple[SimEngine, list[float]]:
    slept: list[float] = []
    cfg = SimEngineConfig(
        num_blocks=64, max_model_len=max_model_len, cost_model=CostModelConfig(time_scale=1.0)
    )
    return SimEngine(cfg, model_id="m", sleep=slept.append), slept


def _answer(
    engine: SimEngine,
    prompt: list[int],
    max_tokens: int,
    prediction: list[int] | None = None,
    stop: tuple[str, ...] = (),
) -> tuple[list[int], str, RequestOutput, list[RequestOutput]]:
    """Token ids, text and final output of one request run alone, and every output it gave."""
    engine.add_request(
        EngineRequest(
            request_id="r",
            prompt_token_ids=prompt,
            sampling=SamplingParams(max_tokens=max_tokens, stop=stop),
            prediction_token_ids=prediction or [],
        )
    )
    outs: list[RequestOutput] = []
    while engine.has_work():
        outs.extend(engine.step())
    ids = [t for o in outs for t in o.new_token_ids]
    return ids, "".join(o.text_delta for o in outs), outs[-1], outs


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _predictions(own: list[int], stream: list[int], max_tokens: int) -> dict[str, list[int]]:
    """Predictions of every kind for an answer whose tokens are `own` (`stream`: the same
    request's tokens without its stop strings, which go on past a stop)."""
    half = len(own) // 2
    return {
        "whole_stream": list(stream),
        "right": list(own),
        "partly_right": own[:half] + [(own[half] + 1) % 256] + own[half + 1 :],
        "wrong_first": [(own[0] + 1) % 256, *own[1:]],
        "longer_than_max_tokens": own + [ord("x")] * (max_tokens + 7),
        "right_then_more": own[: len(own) - 2],
        "empty": [],
    }


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("stop", [(), (" ",), ("e",)])
def test_answer_with_any_prediction_equals_answer_without(prompt, stop):
    max_tokens = 24
    base_ids, base_text, base_final, _ = _answer(_engine()[0], prompt, max_tokens, stop=stop)
    assert (
        base_final.num_accepted_prediction_tokens == 0 == base_final.num_rejected_prediction_tokens
    )
    stream = _answer(_engine()[0], prompt, max_tokens)[0]
    if stop:
        assert len(stream) > len(base_ids)  # the stop string cut this answer
    for name, prediction in _predictions(base_ids, stream, max_tokens).items():
        ids, text, final, outs = _answer(_engine()[0], prompt, max_tokens, prediction, stop)
        assert (ids, text) == (base_ids, base_text), name
        assert final.finish_reason == base_final.finish_reason, name
        assert final.num_output_tokens == base_final.num_output_tokens, name
        checked = prediction[:max_tokens]  # never more than the answer could hold
        accepted = _common_prefix(checked, ids)
        assert final.num_accepted_prediction_tokens == accepted, name
        assert final.num_rejected_prediction_tokens == len(checked) - accepted, name
        # Known from the first output on, and the same on every one.
        counts = {
            (o.num_accepted_prediction_tokens, o.num_rejected_prediction_tokens) for o in outs
        }
        assert counts == {(accepted, len(checked) - accepted)}, name
        if name == "right" and not stop:
            assert accepted == len(ids) == max_tokens
        if name == "wrong_first":
            assert accepted == 0


def test_prediction_cut_by_model_length():
    prompt = list(range(1, 21))
    engine = _engine(max_model_len=28)[0]
    base_ids, base_text, base_final, _ = _answer(engine, prompt, 16)
    assert len(base_ids) == 8 and base_final.finish_reason == "length"
    ids, text, final, _ = _answer(_engine(max_model_len=28)[0], prompt, 16, base_ids + [1] * 20)
    assert (ids, text) == (base_ids, base_text)
    assert (final.num_accepted_prediction_tokens, final.num_rejected_prediction_tokens) == (8, 0)


def test_accepted_tokens_skip_decode_steps_and_prediction_is_prefilled():
    prompt = list(range(30, 70))
    max_tokens = 20
    plain, plain_slept = _engine()
    base_ids, *_ = _answer(plain, prompt, max_tokens)
    right, right_slept = _engine()
    _answer(right, prompt, max_tokens, base_ids[:12])
    wrong, wrong_slept = _engine()
    _answer(wrong, prompt, max_tokens, [(t + 1) % 256 for t in base_ids[:12]])
    # 12 accepted tokens plus the model's next one arrive with the first output: 12 decode steps
    # fewer; a wrong prediction saves none.
    assert plain.stats().num_steps - right.stats().num_steps == 12
    assert wrong.stats().num_steps == plain.stats().num_steps
    # The prediction's tokens are computed in the prefill step: it costs more than without.
    assert right_slept[0] > plain_slept[0] and wrong_slept[0] == right_slept[0]
    assert sum(right_slept) < sum(plain_slept) < sum(wrong_slept)
    for engine in (plain, right, wrong):
        stats = engine.stats()
        assert stats.running == stats.waiting == 0
        assert engine._pool.num_private == 0 and engine._pool.num_referenced() == 0


async def test_worker_reports_counts_in_usage_streamed_and_not():
    """Through the worker's HTTP server and the real openai client."""
    engine = SimEngine(
        SimEngineConfig(num_blocks=128, cost_model=CostModelConfig(time_scale=0.001)),
        model_id="sim-verify",
    )
    handle = await start_worker(engine, WorkerConfig(host="127.0.0.1", port=0, model="sim-verify"))
    try:
        async with openai.AsyncOpenAI(
            base_url=handle.url + "/v1", api_key="none", max_retries=0
        ) as c:
            ask = {"model": "sim-verify", "prompt": "the sky is", "max_tokens": 12}
            plain = await c.completions.create(**ask, temperature=0)
            assert plain.usage.completion_tokens_details is None  # no prediction, no details
            answer = plain.choices[0].text
            exact = await c.completions.create(
                **ask, temperature=0, extra_body={"prediction": _content(answer)}
            )
            assert exact.choices[0].text == answer
            details = exact.usage.completion_tokens_details
            assert details.accepted_prediction_tokens == len(answer.encode()) == 12
            assert details.rejected_prediction_tokens == 0
            stream = await c.completions.create(
                **ask,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"prediction": _content("z" + answer[1:])},
            )
            text, usage = "", None
            async for chunk in stream:
                text += "".join(ch.text for ch in chunk.choices)
                usage = chunk.usage or usage
            assert text == answer
            assert usage.completion_tokens_details.accepted_prediction_tokens == 0
            assert usage.completion_tokens_details.rejected_prediction_tokens == 12
    finally:
        await handle.close()


def _content(text: str) -> dict[str, str]:
    return {"type": "content", "content": text}
