"""Verified hits: what Predicted Outputs make of the semantic cache's hits, on the real engine.

    python benchmarks/semantic_verify.py [--data ../shared/semantic/dev_prompts.jsonl]
        [--pairs 40] [--max-tokens 48] [--seed 0] [--threads 1] [--out FILE]

The prompt set is replayed once (seeded order) through the shipped cache (guard, contrast checks,
threshold and cut as shipped); each distinct hit (query, served entry) is labelled correct or
false by the set's clusters. Up to `--pairs` of each kind (a seeded sample) then run on SmolLM2
(our engine on the CPU, float32, greedy, the worker's chat template, prefix caching off so every
request computes its own prompt, as a new query's would):
- the served entry's prompt → answer A, what the cache holds;
- the query alone → answer B, what a miss returns (timed);
- the query with A's text as `prediction`, re-tokenized as the worker does → must equal B
  (checked: a verified hit cannot serve another answer), timed; its kept prediction tokens.
The two timed runs alternate which goes first. Reported per kind (correct / false hit): how
often a blind hit's A differs from the model's own B, the share of B's tokens the prediction
supplied, and the verified request's time over the plain one (median and mean of per-pair
ratios). What a blind hit costs (no worker at all) is not timed here: it is the cache lookup.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.predicted_outputs import run, smollm2_engine  # noqa: E402
from benchmarks.semantic_quality import (  # noqa: E402
    Evaluator,
    MemoModel,
    load_rows,
    shipped_categorizer,
)
from config.semantic import SemanticCacheConfig  # noqa: E402
from gateway.semantic.cache import shipped_guard_weights  # noqa: E402
from gateway.semantic.embedder import load_model  # noqa: E402
from gpu_worker.device_upload import upload_list  # noqa: E402
from gpu_worker.engine_api import RequestOutput  # noqa: E402
from gpu_worker.paged_attention import build_metadata  # noqa: E402
from policies.semantic.guard import GuardModel  # noqa: E402


async def cache_hits(rows: list[dict[str, str]], seed: int) -> list[dict[str, object]]:
    """Distinct hits of one seeded replay through the shipped cache."""
    base = SemanticCacheConfig()
    memo = MemoModel(load_model(base.embedder))
    checks = tuple(base.guard.contrast_checks)
    evaluator = Evaluator(rows, memo, shipped_categorizer(memo, base), contrast_checks=checks)
    thresholds = {name: p.threshold for name, p in base.categories.items()}
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    log: list[dict[str, object]] = []
    model = GuardModel.from_json(shipped_guard_weights())
    await evaluator.replay(
        order, thresholds, "learned", base.guard.min_probability, model, hit_log=log
    )
    seen: dict[tuple[object, object], dict[str, object]] = {}
    for hit in log:
        seen.setdefault((hit["query"], hit["served"]), hit)
    return list(seen.values())


class Runner:
    def __init__(self, max_tokens: int) -> None:
        self.engine = smollm2_engine()
        self.max_tokens = max_tokens
        self._next = 0

    def chat(self, text: str) -> list[int]:
        return self.engine.tokenizer.apply_chat_template([{"role": "user", "content": text}])

    def run(
        self, prompt: list[int], prediction: list[int] | None = None
    ) -> tuple[str, RequestOutput, float]:
        """Greedy answer text, its last output, and the wall time of the request."""
        self._next += 1
        alone = run(self.engine, f"r{self._next}", prompt, self.max_tokens, prediction or [])
        return alone.text, alone.last, alone.seconds


@torch.inference_mode()
def answer_logprobs(runner: Runner, prompt: list[int], answer: list[int]) -> list[float]:
    """Log-probability of each answer token after the prompt and the answer's earlier tokens
    (one teacher-forced pass of the engine's model over an idle engine's blocks)."""
    engine = runner.engine
    assert not engine.has_work()
    ids = prompt + answer
    bs = engine.runner.block_size
    table = list(range(1, -(-len(ids) // bs) + 1))  # an idle engine's blocks, 0 left as padding
    engine.runner.kv_cache.ensure_zeroed(len(table) + 1)
    dev = engine.device
    meta = build_metadata([len(ids)], [len(ids)], [table], bs, 0, dev)
    rows = list(range(len(prompt) - 1, len(ids) - 1))
    logits = engine.runner.model(
        upload_list(ids, dev),
        upload_list(list(range(len(ids))), dev),
        engine.runner.kv_cache.layers,
        meta,
        upload_list(rows, dev),
    )
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(1, torch.tensor(answer, device=dev)[:, None])[:, 0].tolist()


def measure(
    runner: Runner,
    rows_by_id: dict[str, dict[str, str]],
    hit: dict[str, object],
    k: int,
    timed_runs: bool = True,
) -> dict[str, object]:
    served = rows_by_id[str(hit["served"])]["prompt"]
    query = rows_by_id[str(hit["query"])]["prompt"]
    served_prompt = runner.chat(served)
    answer_a, _, _ = runner.run(served_prompt)
    prompt = runner.chat(query)
    prediction = runner.engine.tokenizer.encode(answer_a) if answer_a else []
    own = answer_logprobs(runner, served_prompt, prediction) if prediction else [0.0]
    new = answer_logprobs(runner, prompt, prediction) if prediction else [0.0]
    likelihood = {
        "mean_logp_own": statistics.fmean(own),
        "mean_logp_new": statistics.fmean(new),
        "min_logp_new_16": min(new[:16]),
    }
    if not timed_runs:
        return {"wrong": bool(hit["wrong"]), "category": hit["category"], **likelihood}
    timed: dict[str, tuple[str, RequestOutput, float]] = {}
    for name in ("plain", "verified") if k % 2 == 0 else ("verified", "plain"):
        timed[name] = runner.run(prompt, prediction if name == "verified" else [])
    answer_b, plain_out, t_plain = timed["plain"]
    verified_text, verified_out, t_verified = timed["verified"]
    if verified_text != answer_b:
        raise AssertionError(f"a verified answer differs from the plain one for {hit}")
    return {
        "wrong": bool(hit["wrong"]),
        "category": hit["category"],
        "same_answer": answer_a == answer_b,
        "completion_tokens": plain_out.num_output_tokens,
        "predicted_tokens": len(prediction),
        "kept_tokens": verified_out.num_accepted_prediction_tokens,
        "plain_s": t_plain,
        "verified_s": t_verified,
        **likelihood,
    }


def summarize(pairs: list[dict[str, object]]) -> dict[str, float]:
    if not pairs or "plain_s" not in pairs[0]:
        return {"pairs": len(pairs)} if pairs else {}
    ratios = [p["verified_s"] / p["plain_s"] for p in pairs]  # type: ignore[operator]
    kept = sum(int(p["kept_tokens"]) for p in pairs)
    tokens = sum(int(p["completion_tokens"]) for p in pairs)
    return {
        "pairs": len(pairs),
        "blind_answer_differs": sum(not p["same_answer"] for p in pairs) / len(pairs),
        "kept_share_of_tokens": kept / max(tokens, 1),
        "whole_answer_kept": sum(
            int(p["kept_tokens"]) >= int(p["completion_tokens"]) - 1 for p in pairs
        )
        / len(pairs),
        "time_ratio_median": statistics.median(ratios),
        "time_ratio_mean": statistics.fmean(ratios),
    }


def auc(correct: list[float], false: list[float]) -> float:
    """P(a correct hit's score > a false hit's), ties counted half."""
    if not correct or not false:
        return float("nan")
    wins = sum((c > f) + 0.5 * (c == f) for c in correct for f in false)
    return wins / (len(correct) * len(false))


def likelihood_separation(pairs: list[dict[str, object]]) -> dict[str, float]:
    """How well the cached answer's likelihood under the new prompt tells correct hits from
    false ones (AUC, 0.5 = not at all): as it is, its worst token among the first 16, and its
    drop from the likelihood under the prompt it was written for."""
    scores = {
        "mean_logp_new": lambda p: p["mean_logp_new"],
        "min_logp_new_16": lambda p: p["min_logp_new_16"],
        "drop_from_own": lambda p: p["mean_logp_new"] - p["mean_logp_own"],
    }
    return {
        name: auc([f(p) for p in pairs if not p["wrong"]], [f(p) for p in pairs if p["wrong"]])
        for name, f in scores.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/semantic/dev_prompts.jsonl")
    parser.add_argument("--pairs", type=int, default=40, help="hits of each kind to run")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--timed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the plain and the verified request (else only the likelihood study)",
    )
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = load_rows(args.data)
    hits = asyncio.run(cache_hits(rows, args.seed))
    rng = random.Random(args.seed)
    chosen = []
    for wrong in (False, True):
        kind = [h for h in hits if h["wrong"] is wrong]
        chosen += rng.sample(kind, min(args.pairs, len(kind)))
    runner = Runner(args.max_tokens)
    rows_by_id = {r["id"]: r for r in rows}
    runner.run(runner.chat("Warm up."))  # first-call costs out of the timings
    pairs = [measure(runner, rows_by_id, hit, k, args.timed) for k, hit in enumerate(chosen)]
    report = {
        "data": args.data,
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "hits": {
            "correct": sum(not h["wrong"] for h in hits),
            "false": sum(bool(h["wrong"]) for h in hits),
        },
        "correct_hits": summarize([p for p in pairs if not p["wrong"]]),
        "false_hits": summarize([p for p in pairs if p["wrong"]]),
        "by_category": {
            c: summarize([p for p in pairs if p["category"] == c])
            for c in sorted({str(p["category"]) for p in pairs})
        },
        "likelihood_auc": likelihood_separation(pairs),
        "pairs": pairs,
    }
    print(f"{args.data}: distinct hits {report['hits']}, each kind sampled to {args.pairs}")
    print(f"{'':14} {'pairs':>5} {'A≠B':>6} {'kept':>6} {'whole':>6} {'t med':>6} {'t mean':>6}")
    rows_out = [("correct hits", report["correct_hits"]), ("false hits", report["false_hits"])]
    rows_out += list(report["by_category"].items())
    for name, s in rows_out:
        if "time_ratio_mean" in s:
            print(
                f"{name:14} {s['pairs']:5d} {s['blind_answer_differs']:6.2f} "
                f"{s['kept_share_of_tokens']:6.2f} {s['whole_answer_kept']:6.2f} "
                f"{s['time_ratio_median']:6.2f} {s['time_ratio_mean']:6.2f}"
            )
    print("likelihood of the cached answer under the new prompt, AUC correct vs false:")
    print("  " + ", ".join(f"{k} {v:.3f}" for k, v in report["likelihood_auc"].items()))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
