"""Our Llama model against Hugging Face's: same state_dict names, same logits (so a loader that
produces HF tensors, with HF's rotate-half RoPE, fills our model correctly)."""

import pytest
import torch

from gpu_worker.llama_config import TINY
from gpu_worker.model import LlamaForCausalLM, RMSNorm
from gpu_worker.paged_attention import build_metadata

transformers = pytest.importorskip("transformers")


def hf_names(num_layers):
    names = {"model.embed_tokens.weight", "model.norm.weight"}
    for i in range(num_layers):
        p = f"model.layers.{i}."
        names |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight"}
        names |= {p + f"self_attn.{x}_proj.weight" for x in "qkvo"}
        names |= {p + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")}
    return names


def test_state_dict_has_hf_names_even_after_fuse():
    model = LlamaForCausalLM(TINY)
    assert set(model.state_dict()) == hf_names(TINY.num_layers)
    model.init_random(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.fuse()
    after = model.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    # loading new weights after fusing lands in the fused matrices too
    model.load_state_dict({k: torch.zeros_like(v) for k, v in before.items()})
    assert model.model.layers[0].self_attn.qkv_weight.abs().sum() == 0


@pytest.mark.parametrize("input_major", [False, True])
def test_logits_equal_hugging_face(input_major):
    torch.manual_seed(0)
    ours = LlamaForCausalLM(TINY)
    ours.init_random(3)
    hf_cfg = transformers.LlamaConfig(
        vocab_size=TINY.vocab_size,
        hidden_size=TINY.hidden_size,
        intermediate_size=TINY.intermediate_size,
        num_hidden_layers=TINY.num_layers,
        num_attention_heads=TINY.num_heads,
        num_key_value_heads=TINY.num_kv_heads,
        head_dim=TINY.head_dim,
        rope_theta=TINY.rope_theta,
        rms_norm_eps=TINY.rms_norm_eps,
        max_position_embeddings=TINY.max_position_embeddings,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    missing, unexpected = hf.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    hf.tie_weights()
    if input_major:
        assert ours.store_input_major()
        assert ours.model.layers[0].mlp.down_proj.weight.t().is_contiguous()
    else:
        ours.fuse()
    assert set(ours.state_dict()) == hf_names(TINY.num_layers)
    ids = torch.randint(0, TINY.vocab_size, (1, 37), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits[0]
    block_size, n = 8, ids.shape[1]
    num_blocks = -(-n // block_size)
    shape = (num_blocks, block_size, TINY.num_kv_heads, TINY.head_dim)
    kv = [(torch.zeros(shape), torch.zeros(shape)) for _ in range(TINY.num_layers)]
    table = list(reversed(range(num_blocks)))
    # prefill the first 30 tokens in one go, then the rest as single-token decodes
    got = []
    with torch.inference_mode():
        meta = build_metadata([30], [30], [table], block_size, 0, torch.device("cpu"))
        got.append(ours(ids[0, :30], torch.arange(30), kv, meta, torch.arange(30)))
        for pos in range(30, n):
            meta = build_metadata([1], [pos + 1], [table], block_size, 1, torch.device("cpu"))
            got.append(
                ours(ids[0, pos : pos + 1], torch.tensor([pos]), kv, meta, torch.tensor([0]))
            )
    torch.testing.assert_close(torch.cat(got), expected, atol=1e-4, rtol=1e-4)


def test_bfloat16_rms_norm_rounds_as_hugging_face():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 96, generator=gen) * 3 + torch.randn(96, generator=gen) * 20).bfloat16()
    weight = torch.rand(96, generator=gen) + 0.5
    ours, hf = RMSNorm(96, 1e-5), LlamaRMSNorm(96, eps=1e-5)
    ours.weight.data.copy_(weight)
    hf.weight.data.copy_(weight)
    with torch.no_grad():
        torch.testing.assert_close(ours.bfloat16()(x), hf.bfloat16()(x), atol=0, rtol=0)
