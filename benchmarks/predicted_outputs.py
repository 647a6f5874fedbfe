"""Predicted Outputs in the engine: what a prediction saves when it is right, and what it costs
when it is wrong, on SmolLM2 (CPU, float32, greedy).

    python benchmarks/predicted_outputs.py [--data ../shared/semantic/dev_prompts.jsonl]
        [--prompts 24] [--max-tokens 64] [--seed 0] [--threads 1] [--out FILE]

For each of `--prompts` chat prompts (a seeded sample of the set) the engine first writes its
answer; then the same request runs, interleaved in a rotating order, with no prediction
(baseline), with the answer itself as the prediction (the best case: an unchanged file sent
back, a repeated question), with its first half followed by other text (an edit half way), and
with an unrelated text of the same length (the worst case). Each timed run is checked to give
the baseline's answer. Reported: per case, the median and mean of per-prompt time ratios to
the baseline, engine steps, and kept prediction tokens. Prefix caching is off, so every run
computes its prompt.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.semantic_quality import load_rows  # noqa: E402
from config.engine import EngineConfig  # noqa: E402
from gpu_worker.engine import TorchEngine  # noqa: E402
from gpu_worker.engine_api import EngineRequest, RequestOutput, SamplingParams  # noqa: E402

CASES = ("none", "right", "half", "wrong")


def smollm2_engine() -> TorchEngine:
    """SmolLM2 on the CPU, float32, prefix caching off: every run computes its own prompt."""
    return TorchEngine(
        EngineConfig(model="smollm2", device="cpu", num_blocks=256, enable_prefix_caching=False)
    )


@dataclass
class Alone:
    """One greedy request run alone on an idle engine."""

    tokens: list[int]
    text: str
    last: RequestOutput
    seconds: float
    steps: int


def run(
    engine: TorchEngine, rid: str, prompt: list[int], max_tokens: int, prediction: list[int]
) -> Alone:
    steps_before = engine.stats().num_steps
    request = EngineRequest(
        request_id=rid,
        prompt_token_ids=prompt,
        sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0),
        prediction_token_ids=prediction,
    )
    started = time.perf_counter()
    engine.add_request(request)
    tokens: list[int] = []
    parts: list[str] = []
    last: RequestOutput | None = None
    while engine.has_work():
        for out in engine.step():
            tokens += out.new_token_ids
            parts.append(out.text_delta)
            last = out
    elapsed = time.perf_counter() - started
    assert last is not None and last.finished
    steps = engine.stats().num_steps - steps_before
    return Alone(tokens, "".join(parts), last, elapsed, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/semantic/dev_prompts.jsonl")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = random.Random(args.seed).sample(load_rows(args.data), args.prompts)
    engine = smollm2_engine()
    tok = engine.tokenizer
    run(engine, "warm", tok.apply_chat_template([{"role": "user", "content": "Hi."}]), 8, [])
    filler = tok.encode(" ".join(r["prompt"] for r in rows))  # unrelated text to draw from
    results: list[dict[str, object]] = []
    for k, row in enumerate(rows):
        prompt = tok.apply_chat_template([{"role": "user", "content": row["prompt"]}])
        answer = run(engine, f"{k}-answer", prompt, args.max_tokens, []).tokens
        body = [t for t in answer if t not in tok.eos_token_ids]
        half = len(body) // 2
        other = filler[k * 7 : k * 7 + len(body)]
        predictions = {
            "none": [],
            "right": body,
            "half": body[:half] + other[: len(body) - half],
            "wrong": other,
        }
        row_out: dict[str, object] = {"id": row["id"], "answer_tokens": len(answer)}
        for j in range(len(CASES)):
            name = CASES[(j + k) % len(CASES)]  # rotate which case runs first
            alone = run(engine, f"{k}-{name}", prompt, args.max_tokens, predictions[name])
            if alone.tokens != answer:
                raise AssertionError(f"prompt {row['id']}: case {name} changed the answer")
            row_out[name] = {
                "s": alone.seconds,
                "steps": alone.steps,
                "kept": alone.last.num_accepted_prediction_tokens,
            }
        results.append(row_out)
    summary: dict[str, dict[str, float]] = {}
    for name in CASES:
        ratios = [r[name]["s"] / r["none"]["s"] for r in results]  # type: ignore[index]
        summary[name] = {
            "time_ratio_median": statistics.median(ratios),
            "time_ratio_mean": statistics.fmean(ratios),
            "steps_mean": statistics.fmean(r[name]["steps"] for r in results),  # type: ignore[index]
            "kept_mean": statistics.fmean(r[name]["kept"] for r in results),  # type: ignore[index]
        }
    answer_tokens = statistics.fmean(int(r["answer_tokens"]) for r in results)  # type: ignore[arg-type]
    print(
        f"{args.prompts} prompts of {args.data}, answers of {answer_tokens:.1f} tokens on average"
    )
    print(f"{'prediction':10} {'t/base med':>10} {'mean':>6} {'steps':>6} {'kept':>6}")
    for name, s in summary.items():
        print(
            f"{name:10} {s['time_ratio_median']:10.3f} {s['time_ratio_mean']:6.3f} "
            f"{s['steps_mean']:6.1f} {s['kept_mean']:6.1f}"
        )
    if args.out:
        report = {"data": args.data, "seed": args.seed, "max_tokens": args.max_tokens}
        report |= {"summary": summary, "prompts": results}
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
