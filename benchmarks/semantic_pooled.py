"""The guard fitted on pooled prompt sets, judged leave-one-set-out (LOSO).

    python benchmarks/semantic_pooled.py \
        --sets dev=../shared/semantic/dev_prompts.jsonl,h1=benchmarks/data/holdout_prompts.jsonl,\
h2=benchmarks/data/holdout2_prompts.jsonl,h3=benchmarks/data/holdout3_prompts.jsonl,\
h4=benchmarks/data/holdout4_prompts.jsonl \
        [--candidates pooled,pooled+chosen,pooled+idf,pooled+near,...] [--leave-out dev,h1,...]
        [--orders 5] [--inner-folds 3] [--memo /tmp/kvgate_pooled_memo.pkl] [--out FILE]
        [--joint-memo /tmp/kvgate_joint_memo.pkl] [--ft-loso /tmp/kvgate_ft_loso.pkl]
        [--write-weights FILE --final CANDIDATE] [--kfold dev --seeds 0,1]

For each set in turn, every candidate (semantic_pooled_fit.py) is fitted on the other sets, and
anything it chooses (L2 shrinkage; with `+chosen` the threshold and probability cut) is chosen
inside those sets by cross-validation by cluster group (a cluster and its hard-negative
siblings always in one fold). The left-out set is then replayed through the real SemanticCache
in `--orders` seeded orders (the `holdout` mode's orders: seeds 0, 1, ...), tallies summed. The
shipped guard (its weights file, 0.75 / 0.5) is scored the same way on each set; its dev-set
figure is in-sample (its weights were fitted on the dev set). Nothing is chosen by looking at a
left-out set. `--write-weights`: the `--final` candidate fitted (and its setting chosen) on all
the sets, written as a guard weights file (its setting is printed and put in the JSON report).
`--kfold dev`: instead, the dev set cross-validated as `quality` mode does it (5 folds by
group, seeds' orders, the shipped setting), each candidate fitted on the other sets plus the
dev training folds, next to the shipped recipe fitted on the dev training folds only.
Embeddings of prompts and spans are memoised on disk (`--memo`) between runs, and so are the
joint passes of the cross-feature candidates (`--joint-memo`, by wording pair). `+ftveto`
candidates read the fine-tuned cross-encoder's probabilities of the left-out set's pairs from
`--ft-loso` (semantic_pair_train.py --loso: that model trained on the other sets only); the
replay asks the table, and a pair missing from it is an error, never a silent default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.semantic_contrast import contrast_checks  # noqa: E402
from benchmarks.semantic_guard_fit import fit_guard  # noqa: E402
from benchmarks.semantic_pooled_fit import Candidate, PooledData, fit_candidate  # noqa: E402
from benchmarks.semantic_quality import (  # noqa: E402
    CUTS,
    EMBED_KWARGS,
    TRAIN_THRESHOLDS,
    Evaluator,
    MemoModel,
    Tallies,
    choose_global,
    cluster_groups,
    load_rows,
    merge,
    shipped_categorizer,
    total,
)
from config.semantic import IndexConfig, SemanticCacheConfig  # noqa: E402
from gateway.semantic.cache import shipped_guard_weights  # noqa: E402
from gateway.semantic.embedder import load_model  # noqa: E402
from policies.semantic.guard import Guard, GuardModel, span_similarity_from  # noqa: E402
from policies.semantic.pair_features import prompt_terms  # noqa: E402
from policies.semantic.token_alignment import TokenStateCache  # noqa: E402
from policies.semantic.word_alignment import WordVectors  # noqa: E402

Setting = tuple[float, float]  # (threshold, probability cut)


class Pooled:
    """The pooled sets, the real cache replayer over them, and the shipped guard."""

    def __init__(self, sets: list[tuple[str, str]], memo: MemoModel, checks: tuple[str, ...]):
        self.rows: list[dict[str, str]] = []
        set_of: list[str] = []
        for name, path in sets:
            found = load_rows(path)
            self.rows += found
            set_of += [name] * len(found)
        self.names = [name for name, _ in sets]
        base = SemanticCacheConfig()
        self.shipped = GuardModel.from_json(shipped_guard_weights())
        self.setting: Setting = (base.categories["chat"].threshold, base.guard.min_probability)
        known = memo.model.whole_words() if base.guard.typo_vocabulary else frozenset()  # type: ignore[attr-defined]
        vectors = memo.encode([r["prompt"] for r in self.rows], **EMBED_KWARGS)
        groups = cluster_groups(self.rows)
        self.data = PooledData(
            similarity=vectors @ vectors.T,
            terms=[prompt_terms(r["prompt"]) for r in self.rows],
            clusters=[r["cluster"] for r in self.rows],
            groups=[groups[r["cluster"]] for r in self.rows],
            sets=set_of,
            spans=span_similarity_from(lambda texts: memo.encode(texts, **EMBED_KWARGS)),
            known_words=known,
            vectors=vectors,
            word_vectors=WordVectors(lambda texts: memo.encode(texts, **EMBED_KWARGS)),
            token_states=TokenStateCache(memo.token_states, 10**6),
            joint=memo.joint_states,
            veto_guard=Guard(
                "learned",
                self.shipped,
                self.setting[1],
                base.guard.min_span_similarity,
                known,
                checks,
            ),
        )
        self.ev = Evaluator(self.rows, memo, shipped_categorizer(memo, base), known, checks)

    def indices(self, name: str) -> list[int]:
        return [i for i, s in enumerate(self.data.sets) if s == name]

    def order(self, name: str, seed: int) -> list[int]:
        """The `holdout` mode's replay order of set `name` for `seed`, as pooled indices."""
        own = self.indices(name)
        perm = list(range(len(own)))
        random.Random(seed).shuffle(perm)
        return [own[p] for p in perm]

    async def score(self, name: str, orders: int, model: GuardModel, setting: Setting) -> Tallies:
        out: Tallies = {}
        for seed in range(orders):
            order = self.order(name, seed)
            merge(out, (await self.ev.replay(order, setting[0], "learned", setting[1], model))[0])
        return out

    async def kfold(self, name: str, seed: int, folds: int, cand: Candidate | None) -> Tallies:
        """Set `name` cross-validated as `quality` mode does (`folds` folds by cluster group and
        the replay order of `seed`; the shipped 0.75 / 0.5): per fold, `cand` fitted on the
        other sets and the other folds of `name`; `None`: the shipped recipe, `fit_guard` on
        the other folds of `name` only (quality mode's "learned" row at 0.75)."""
        order = self.order(name, seed)
        group_ids = sorted({self.data.groups[i] for i in order})
        random.Random(seed).shuffle(group_ids)
        fold_of = {g: k % folds for k, g in enumerate(group_ids)}
        others = [i for i in range(len(self.rows)) if self.data.sets[i] != name]
        out: Tallies = {}
        for k in range(folds):
            inside = [i for i in order if fold_of[self.data.groups[i]] != k]
            test = [i for i in order if fold_of[self.data.groups[i]] == k]
            if cand is None:
                d = self.data
                model = fit_guard(
                    inside, d.similarity, d.terms, d.clusters, d.spans, known_words=d.known_words
                )
            else:
                model, _ = fit_candidate(others + inside, self.data, cand)
            merge(
                out,
                (await self.ev.replay(test, *self.setting[:1], "learned", self.setting[1], model))[
                    0
                ],
            )
        return out

    async def choose(self, train: list[str], cand: Candidate, folds: int) -> Setting:
        """Threshold and cut by cross-validation by cluster group inside the `train` sets: per
        inner fold, the model fitted on the other folds, each set's fold replayed on its own."""
        if not cand.chosen:
            return self.setting
        everything = [i for name in train for i in self.indices(name)]
        group_ids = sorted({self.data.groups[i] for i in everything})
        random.Random(0).shuffle(group_ids)
        fold_of = {g: k % folds for k, g in enumerate(group_ids)}
        grid: dict[Setting, Tallies] = {}
        for k in range(folds):
            inside = [i for i in everything if fold_of[self.data.groups[i]] != k]
            model, _ = fit_candidate(inside, self.data, cand)
            for name in train:
                order = [i for i in self.order(name, 0) if fold_of[self.data.groups[i]] == k]
                for t in TRAIN_THRESHOLDS:
                    for c in CUTS:
                        res = (await self.ev.replay(order, t, "learned", c, model))[0]
                        merge(grid.setdefault((t, c), {}), res)
        return choose_global(grid)


async def loso(args: argparse.Namespace, memo: MemoModel) -> dict[str, object]:
    sets = [tuple(s.split("=", 1)) for s in args.sets.split(",")]
    pooled = Pooled(sets, memo, contrast_checks(args))  # type: ignore[arg-type]
    if args.index_candidates:
        pooled.ev.index = IndexConfig(candidates=args.index_candidates)
    cands = [Candidate.parse(c) for c in args.candidates.split(",") if c]
    left_out = args.leave_out.split(",") if args.leave_out else pooled.names
    results: dict[str, dict[str, object]] = {}
    if args.kfold:
        for seed in (int(s) for s in args.seeds.split(",")):
            row = {
                "dev only": _cell(await pooled.kfold(args.kfold, seed, 5, None), pooled.setting, {})
            }
            for cand in cands:
                tallies = await pooled.kfold(args.kfold, seed, 5, cand)
                row[cand.name] = _cell(tallies, pooled.setting, {})
            print(f"{args.kfold} seed {seed}: {row}", flush=True)
            results[f"{args.kfold} 5-fold seed {seed}"] = row
        left_out = []
    tables: dict[str, dict[tuple[str, str], float]] = args.ft_tables
    for name in left_out:
        train = [n for n in pooled.names if n != name]
        if name in tables:
            memo.pair_probability = _table_lookup(tables[name])  # type: ignore[attr-defined]
        shipped = await pooled.score(name, args.orders, pooled.shipped, pooled.setting)
        row: dict[str, object] = {"shipped": _cell(shipped, pooled.setting, {})}
        for cand in cands:
            start = time.monotonic()
            everything = [i for n in train for i in pooled.indices(n)]
            model, info = fit_candidate(everything, pooled.data, cand)
            setting = await pooled.choose(train, cand, args.inner_folds)
            tallies = await pooled.score(name, args.orders, model, setting)
            info["seconds"] = round(time.monotonic() - start, 1)
            row[cand.name] = _cell(tallies, setting, info)
            print(f"{name} {cand.name}: {row[cand.name]}", flush=True)
        results[name] = row
    final: dict[str, object] = {}
    if args.write_weights:
        cand = Candidate.parse(args.final)
        model, info = fit_candidate(list(range(len(pooled.rows))), pooled.data, cand)
        setting = await pooled.choose(pooled.names, cand, args.inner_folds)
        final = {"candidate": cand.name, "setting": setting, "info": info}
        final["weights"] = model.to_dict()
        print(f"final {cand.name}: setting {setting}, {info}", flush=True)
    return {"sets": dict(sets), "orders": args.orders, "results": results, "final": final}


def _table_lookup(table: dict[tuple[str, str], float]) -> object:
    def pair_probability(pairs: list[tuple[str, str]]) -> list[float]:
        return [table[p] for p in pairs]

    return pair_probability


def _cell(tallies: Tallies, setting: Setting, info: dict[str, object]) -> dict[str, object]:
    t = total(tallies)
    return {
        "correct": t.hits - t.false_hits,
        "false": t.false_hits,
        "hit_rate": round(t.hit_rate, 4),
        "false_rate": round(t.false_rate, 4),
        "setting": list(setting),
        "fit": info,
    }


def print_loso(report: dict[str, object]) -> None:
    results: dict[str, dict[str, dict[str, object]]] = report["results"]  # type: ignore[assignment]
    names = list(next(iter(results.values()))) if results else []
    print("\nleft-out set | " + " | ".join(names) + "   (correct, false; hit %, false %)")
    for held, row in results.items():
        cells = [
            f"{c['correct']}, {c['false']}; {c['hit_rate']:.1%} / {c['false_rate']:.1%}"
            + (f" @{c['setting'][0]}/{c['setting'][1]}" if n != "shipped" else "")  # type: ignore[index]
            for n, c in row.items()
        ]
        print(f"{held:4s} | " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", required=True, help="name=path,... (at least two)")
    parser.add_argument("--candidates", default="pooled,pooled+chosen")
    parser.add_argument("--leave-out", default="", help="sets to leave out (default: each)")
    parser.add_argument("--orders", type=int, default=5)
    parser.add_argument("--kfold", default="", help="instead: this set 5-fold, pooled fit")
    parser.add_argument("--seeds", default="0,1", help="with --kfold: replay-order seeds")
    parser.add_argument("--inner-folds", type=int, default=3)
    parser.add_argument(
        "--index-candidates", type=int, default=0, help="nearest entries a lookup weighs (0: 4)"
    )
    parser.add_argument("--checks", default=None, help="contrast checks (default: shipped)")
    parser.add_argument("--memo", default="/tmp/kvgate_pooled_memo.pkl")
    parser.add_argument("--joint-memo", default="/tmp/kvgate_joint_memo.pkl")
    parser.add_argument("--ft-loso", default="", help="fine-tuned probabilities per left-out set")
    parser.add_argument("--write-weights", default="")
    parser.add_argument("--final", default="pooled")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    memo = MemoModel(load_model(SemanticCacheConfig().embedder)).load(args.memo)
    # Joint passes (cross features) by wording pair; written back only when some were made.
    joint_path = Path(args.joint_memo)
    joint: dict[tuple[str, str], object] = memo.__dict__.setdefault("_joint_memo", {})
    if joint_path.exists():
        joint.update(pickle.loads(joint_path.read_bytes()))
    known = len(joint)
    args.ft_tables = pickle.loads(Path(args.ft_loso).read_bytes()) if args.ft_loso else {}
    try:
        report = asyncio.run(loso(args, memo))
    finally:
        memo.save(args.memo)
        if len(joint) > known:
            joint_path.write_bytes(pickle.dumps(joint))
    print_loso(report)
    final = report["final"]
    if args.write_weights and isinstance(final, dict):
        Path(args.write_weights).write_text(json.dumps(final["weights"], indent=1) + "\n")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
