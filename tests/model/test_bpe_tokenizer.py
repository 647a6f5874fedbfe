"""The GGUF-built BPE tokenizer: pre-tokenization rules on a toy vocabulary (always runs), and
the embedded SmolLM2 vocabulary against transformers' tokenizer for the same file."""

from __future__ import annotations

import pytest

from gpu_worker.bpe_tokenizer import BpeTokenizer, default_system_prompt
from gpu_worker.engine_api import Tokenizer

SAMPLES = [
    "The capital of France is",
    "  leading spaces\n\n\ttabs  and trailing  ",
    "Ünïcödé → 東京 🙂 emoji",
    "def f(x):\n    return x**2  # it's fine\n",
    "I'm sure they'll've done it; don't.",
    "In 2024 there were 12345 cats and 3.14159 pies.",
    "",
]


def toy_tokenizer(split_digits: bool) -> BpeTokenizer:
    # A byte-level vocabulary of ASCII letters/digits/space plus a few merges, among them "12".
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens += [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ"]
    merges = ["1 2", "Ġ a", "Ġ 1", "a b"]
    tokens += ["12", "Ġa", "Ġ1", "ab"]
    types = [3, 3, 3] + [1] * (len(tokens) - 3)
    return BpeTokenizer(tokens, merges, types, split_digits=split_digits)


def test_digits_are_split_one_by_one_when_the_model_was_trained_so():
    split, joined = toy_tokenizer(True), toy_tokenizer(False)
    ids_of = split._ids  # noqa: SLF001 - the toy vocabulary's ids, to name expected tokens
    assert split.encode("12") == [ids_of["1"], ids_of["2"]]
    assert joined.encode("12") == [ids_of["12"]]
    assert split.encode(" 12") == [ids_of["Ġ"], ids_of["1"], ids_of["2"]]
    assert joined.encode(" 12") == [ids_of["Ġ"], ids_of["12"]]  # "1 2" outranks "Ġ 1"
    assert split.encode(" ab") == joined.encode(" ab") == [ids_of["Ġa"], ids_of["b"]]
    for tok in (split, joined):
        assert tok.decode(tok.encode("x 12 ab\n")) == "x 12 ab\n"


def test_toy_tokenizer_keeps_the_protocol_and_control_tokens():
    tok = toy_tokenizer(True)
    for name in ("eos_token_ids", "encode", "decode", "apply_chat_template"):
        assert hasattr(Tokenizer, name) and hasattr(tok, name), name
    assert tok.eos_token_ids == frozenset({0, 2})
    assert tok.encode("<|im_start|>ab") == [1, tok._ids["ab"]]  # noqa: SLF001
    assert tok.decode([1, tok._ids["ab"], 2]) == "ab"  # noqa: SLF001


def test_default_system_prompt_read_from_template():
    jinja_escaped = "{{ '<|im_start|>system\\nBe brief.<|im_end|>\\n' }}"
    real_newline = "{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}"
    assert default_system_prompt(jinja_escaped) == "Be brief."
    assert default_system_prompt(real_newline) == "Be brief."
    assert default_system_prompt("{{ messages }}") is None


# ---- the embedded SmolLM2 vocabulary ---------------------------------------------------------


@pytest.mark.smollm2
def test_special_tokens_and_eos(tokenizer):
    assert tokenizer.vocab_size == 49152
    assert tokenizer.im_start_id == 1 and tokenizer.im_end_id == 2
    assert 2 in tokenizer.eos_token_ids
    assert tokenizer.default_system_prompt == (
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    )


@pytest.mark.smollm2
@pytest.mark.parametrize("text", SAMPLES)
def test_encode_matches_transformers_and_round_trips(tokenizer, hf_tokenizer, text):
    ids = tokenizer.encode(text)
    assert ids == hf_tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text


@pytest.mark.smollm2
def test_digits_are_single_tokens(tokenizer):
    ids = tokenizer.encode("x 9876543210")
    assert len(ids) == 12  # "x", " ", then one token per digit
    assert [tokenizer.decode([i]) for i in ids[2:]] == list("9876543210")


@pytest.mark.smollm2
@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "What is 2+2?"}],
        [
            {"role": "system", "content": "You answer in French."},
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Bonjour !"},
            {"role": "user", "content": "How are you?\nFine?"},
        ],
    ],
)
def test_chat_template_matches_transformers(tokenizer, hf_tokenizer, messages):
    ids = tokenizer.apply_chat_template(messages)
    rendered = hf_tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    assert tokenizer.render_chat(messages) == rendered
    assert ids == hf_tokenizer(rendered, add_special_tokens=False).input_ids
    assert ids[-4:] == [1, *tokenizer.encode("assistant\n")]
    has_system = messages[0]["role"] == "system"
    assert ("SmolLM" in tokenizer.decode(ids)) is not has_system


@pytest.mark.smollm2
def test_control_tokens_in_message_content_stay_text(tokenizer):
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi<|im_end|>"}])
    assert ids.count(tokenizer.im_end_id) == 2  # the default system turn's and the user turn's
    assert tokenizer.encode("hi<|im_end|>")[-1] == tokenizer.im_end_id  # raw prompts do match


@pytest.mark.smollm2
def test_malformed_message_is_refused(tokenizer):
    with pytest.raises(ValueError):
        tokenizer.apply_chat_template([{"role": "user"}])
