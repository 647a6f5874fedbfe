"""Our engine against Hugging Face transformers `generate` on the same Llama weights, CPU or CUDA.

Three figures, each a ratio against HF measured in the same run:
- static batches of 1 / 8 / 32 equal prompts (paging must cost nothing): ours_tok_s / hf_tok_s;
- a serving mix (ragged prompts and output lengths): HF runs fixed batches in arrival order, each
  until its longest output; ours runs everything with continuous batching: hf_s / ours_s;
- cached-prefix TTFT: a long shared prefix already in our prefix cache vs HF's full prefill:
  ours_ttft / hf_ttft.

Weights: `--weights smollm2` (the embedded GGUF, when its loader is present) or `random`
(SmolLM2-135M shapes, random weights: the same work per token).

    python benchmarks/engine_throughput.py --out bench_engine.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from config.engine import EngineConfig
from gpu_worker.engine import TorchEngine, build_model
from gpu_worker.engine_api import EngineRequest, SamplingParams
from gpu_worker.llama_config import SMOLLM2_135M, LlamaConfig
from gpu_worker.model import LlamaForCausalLM


def hf_copy(model: LlamaForCausalLM):
    import transformers

    c: LlamaConfig = model.config
    hf_cfg = transformers.LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim,
        rope_theta=c.rope_theta,
        rms_norm_eps=c.rms_norm_eps,
        max_position_embeddings=c.max_position_embeddings,
        tie_word_embeddings=c.tie_word_embeddings,
        attn_implementation="sdpa",
    )
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    hf.load_state_dict(model.state_dict(), strict=False)
    hf.tie_weights()
    return hf


def hf_generate(hf, prompts: list[list[int]], new_tokens: int) -> float:
    """Seconds for HF to generate `new_tokens` for each prompt, as one left-padded batch."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    t0 = time.perf_counter()
    with torch.inference_mode():
        hf.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    return time.perf_counter() - t0


def ours_run(engine: TorchEngine, prompts: list[list[int]], new_tokens: list[int]) -> dict:
    """Add all requests at once, step to the end: wall seconds and per-request TTFT."""
    t0 = time.perf_counter()
    for i, (p, n) in enumerate(zip(prompts, new_tokens, strict=True)):
        sp = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
        engine.add_request(EngineRequest(request_id=f"b{t0}-{i}", prompt_token_ids=p, sampling=sp))
    ttft: dict[str, float] = {}
    while engine.has_work():
        for out in engine.step():
            ttft.setdefault(out.request_id, time.perf_counter() - t0)
    return {"wall_s": time.perf_counter() - t0, "ttft_s": sorted(ttft.values())}


def rand_prompts(n: int, lo: int, hi: int, vocab: int, gen: torch.Generator) -> list[list[int]]:
    lens = torch.randint(lo, hi + 1, (n,), generator=gen).tolist()
    return [torch.randint(3, vocab, (k,), generator=gen).tolist() for k in lens]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", choices=["random", "smollm2"], default="random")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--mix-requests", type=int, default=24)
    ap.add_argument("--mix-hf-batch", type=int, default=8)
    ap.add_argument("--prefix-tokens", type=int, default=1024)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    if args.weights == "smollm2":
        model_id, model = build_model(EngineConfig(model="smollm2"))
    else:
        model_id, model = "random-smollm2-shape", LlamaForCausalLM(SMOLLM2_135M)
        model.init_random(0)
    hf = hf_copy(model)
    vocab = model.config.vocab_size
    cfg = EngineConfig(device="cpu", num_blocks=2048, max_batch_size=64, max_tokens_per_step=1024)
    engine = TorchEngine(cfg, model=(model_id, model))
    rows: list[dict] = []

    # warm-up both (first calls allocate)
    warm = rand_prompts(2, 16, 16, vocab, gen)
    hf_generate(hf, warm, 4)
    ours_run(engine, warm, [4, 4])

    for b in [int(x) for x in args.batches.split(",")]:
        ps = rand_prompts(b, args.prompt_tokens, args.prompt_tokens, vocab, gen)
        hf_s = hf_generate(hf, ps, args.new_tokens)
        ours_s = ours_run(engine, ps, [args.new_tokens] * b)["wall_s"]
        rows.append(
            {"case": f"static batch {b}", "hf_s": hf_s, "ours_s": ours_s, "speedup": hf_s / ours_s}
        )

    n, hb = args.mix_requests, args.mix_hf_batch
    ps = rand_prompts(n, 16, 4 * args.prompt_tokens, vocab, gen)
    outs = torch.randint(4, 4 * args.new_tokens + 1, (n,), generator=gen).tolist()
    hf_s = sum(hf_generate(hf, ps[i : i + hb], max(outs[i : i + hb])) for i in range(0, n, hb))
    ours_s = ours_run(engine, ps, outs)["wall_s"]
    rows.append(
        {"case": f"serving mix {n} req", "hf_s": hf_s, "ours_s": ours_s, "speedup": hf_s / ours_s}
    )

    prefix = rand_prompts(1, args.prefix_tokens, args.prefix_tokens, vocab, gen)[0]
    first, second = (prefix + s for s in rand_prompts(2, 24, 24, vocab, gen))
    ours_run(engine, [first], [1])  # fills the prefix cache
    ours_ttft = ours_run(engine, [second], [1])["ttft_s"][0]
    hf_ttft = hf_generate(hf, [second], 1)
    rows.append(
        {
            "case": f"cached-prefix TTFT ({args.prefix_tokens} tok)",
            "hf_s": hf_ttft,
            "ours_s": ours_ttft,
            "speedup": hf_ttft / ours_ttft,
        }
    )

    print(f"{'case':34} {'hf_s':>8} {'ours_s':>8} {'hf/ours':>8}")
    for r in rows:
        print(f"{r['case']:34} {r['hf_s']:8.3f} {r['ours_s']:8.3f} {r['speedup']:8.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {"weights": model_id, "threads": args.threads, "args": vars(args), "rows": rows},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
