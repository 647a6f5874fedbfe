"""What a verified hit costs a worker, under the engine cost model (the simulated engine).

A verified hit (docs/semantic_cache.md, "Verified hits") sends the request to a worker with the
cached answer as its `prediction`. The worker prefills prompt + prediction, keeps the
prediction's longest prefix that its own answer repeats, and decodes the rest. This script runs
request shapes taken from a trace (prompt and output lengths) through `SimEngine`, one request
at a time on an empty cache, in these variants:

- `miss`: no prediction (a plain miss; the baseline of every ratio);
- `verify@F`: a prediction whose first F of the answer's tokens are right and whose rest is
  wrong (F = 1.0: a true paraphrase with the same answer, an exact repeat; F = 0: a false hit
  caught, the whole prediction rejected).

Per variant: modelled time to the first token and to the last, each as a ratio to the miss of
the same request (median over requests, and total / total). A cache hit served by the gateway
costs the worker nothing (ratio 0) and is not run. The times are the cost model's (default: an
8B model on an A100, `config/cost_model.py`), not wall time, so the figures do not depend on
the machine or its load. Limits: one request at a time (in a batch, decode steps are shared and
a saved step saves less; a longer prefill delays the batch's other sequences); the sim's answer
always runs to max_tokens (no eos), so a request's output length is the trace's.

    python -m benchmarks.verify_cost ../shared/traces/mooncake_conversation.jsonl \
        --requests 300 --out verify_cost.json
    python -m benchmarks.verify_cost ../shared/traces/mooncake_conversation.jsonl \
        --prompt-tokens 64 --requests 300 --out verify_cost_short.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

from config.cost_model import CostModelConfig
from config.worker import SimEngineConfig
from gpu_worker.engine_api import EngineRequest, SamplingParams
from gpu_worker.sim_engine import SimEngine

FRACTIONS = (1.0, 0.75, 0.5, 0.25, 0.0)
MAX_MODEL_LEN = 131_072
BLOCK_SIZE = 16


class _ModelledClock:
    """The engine's clock and sleep: time passes only by the modelled step durations."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, duration_s: float) -> None:
        self.now += duration_s


def _run(
    prompt: list[int], max_tokens: int, prediction: list[int]
) -> tuple[float, float, list[int]]:
    """(time to first token, time to last token, the answer's tokens) of one request alone."""
    clock = _ModelledClock()
    cfg = SimEngineConfig(
        num_blocks=MAX_MODEL_LEN // BLOCK_SIZE + 8,
        block_size=BLOCK_SIZE,
        max_model_len=MAX_MODEL_LEN,
        cost_model=CostModelConfig(),
    )
    engine = SimEngine(cfg, model_id="verify-cost", clock=clock, sleep=clock.sleep)
    engine.add_request(
        EngineRequest(
            request_id="r",
            prompt_token_ids=prompt,
            sampling=SamplingParams(max_tokens=max_tokens),
            prediction_token_ids=prediction,
        )
    )
    first_s: float | None = None
    tokens: list[int] = []
    while engine.has_work():
        for out in engine.step():
            if out.new_token_ids and first_s is None:
                first_s = clock.now
            tokens += out.new_token_ids
    assert first_s is not None
    return first_s, clock.now, tokens


def _wrong_from(answer: list[int], right: int) -> list[int]:
    """The answer's first `right` tokens, then tokens that differ from the answer's."""
    return answer[:right] + [(t + 1) % 256 for t in answer[right:]]


def shapes(
    trace: Path, requests: int, seed: int, prompt_tokens: int | None
) -> list[tuple[int, int]]:
    """(prompt tokens, output tokens) of `requests` trace requests drawn with `seed`."""
    rows = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["output_length"] >= 1]
    picked = random.Random(seed).sample(rows, min(requests, len(rows)))
    out = []
    for r in picked:
        prompt = prompt_tokens or max(1, r["input_length"])
        output = min(r["output_length"], MAX_MODEL_LEN - prompt - 1)
        if output >= 1:
            out.append((prompt, output))
    return out


def measure(shape_list: list[tuple[int, int]], seed: int) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    ratios: dict[str, dict[str, list[float]]] = {
        f"verify@{f:g}": {"ttft": [], "total": []} for f in FRACTIONS
    }
    sums: dict[str, list[float]] = {name: [0.0, 0.0] for name in ["miss", *ratios]}
    accepted = {name: 0 for name in ratios}
    predicted = {name: 0 for name in ratios}
    for prompt_len, output_len in shape_list:
        prompt = [rng.randrange(256) for _ in range(prompt_len)]
        base_first, base_total, answer = _run(prompt, output_len, [])
        sums["miss"][0] += base_first
        sums["miss"][1] += base_total
        for f in FRACTIONS:
            name = f"verify@{f:g}"
            right = round(f * len(answer))
            first, total, tokens = _run(prompt, output_len, _wrong_from(answer, right))
            assert tokens == answer, "a prediction changed the answer"
            ratios[name]["ttft"].append(first / base_first)
            ratios[name]["total"].append(total / base_total)
            sums[name][0] += first
            sums[name][1] += total
            accepted[name] += right
            predicted[name] += len(answer)
    result: dict[str, dict[str, float]] = {
        "miss": {
            "ttft_ratio_median": 1.0,
            "total_ratio_median": 1.0,
            "ttft_ratio_pooled": 1.0,
            "total_ratio_pooled": 1.0,
            "mean_ttft_s": sums["miss"][0] / len(shape_list),
            "mean_total_s": sums["miss"][1] / len(shape_list),
        }
    }
    for name, r in ratios.items():
        result[name] = {
            "ttft_ratio_median": statistics.median(r["ttft"]),
            "total_ratio_median": statistics.median(r["total"]),
            "ttft_ratio_pooled": sums[name][0] / sums["miss"][0],
            "total_ratio_pooled": sums[name][1] / sums["miss"][1],
            "mean_ttft_s": sums[name][0] / len(shape_list),
            "mean_total_s": sums[name][1] / len(shape_list),
            "accepted_fraction": accepted[name] / max(1, predicted[name]),
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "trace", type=Path, nargs="?", default=Path("../shared/traces/mooncake_conversation.jsonl")
    )
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--prompt-tokens",
        type=int,
        default=None,
        help="every prompt this long (default: the trace's)",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    shape_list = shapes(args.trace, args.requests, args.seed, args.prompt_tokens)
    result = measure(shape_list, args.seed)
    prompts = [p for p, _ in shape_list]
    outputs = [o for _, o in shape_list]
    print(
        f"{len(shape_list)} requests from {args.trace.name}: prompt tokens median "
        f"{statistics.median(prompts):.0f}, output tokens median {statistics.median(outputs):.0f}"
    )
    print(
        f"{'variant':<14}{'TTFT / miss':>14}{'total / miss':>14}"
        f"{'TTFT pooled':>13}{'total pooled':>14}{'TTFT ms':>10}{'total s':>9}"
    )
    for name, r in result.items():
        print(
            f"{name:<14}{r['ttft_ratio_median']:>14.3f}{r['total_ratio_median']:>14.3f}"
            f"{r['ttft_ratio_pooled']:>13.3f}{r['total_ratio_pooled']:>14.3f}"
            f"{1000 * r['mean_ttft_s']:>10.1f}{r['mean_total_s']:>9.2f}"
        )
    print(
        "(ratios: medians over requests of per-request ratios, pooled = total / total; "
        "TTFT ms, total s: means; all modelled time)"
    )
    if args.out is not None:
        report = {
            "trace": str(args.trace),
            "requests": len(shape_list),
            "seed": args.seed,
            "prompt_tokens": args.prompt_tokens,
            "prompt_tokens_median": statistics.median(prompts),
            "output_tokens_median": statistics.median(outputs),
            "cost_model": "config.cost_model.CostModelConfig() defaults",
            "variants": result,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
