"""Two workers running the real torch engine (tiny random model, CPU) behind the gateway: a
request that shares a long prefix with an earlier one goes to the worker that holds it."""

from __future__ import annotations

import orjson
import torch

from config.engine import EngineConfig
from gateway.request_tokens import RequestTokens, load_tokenizer
from gpu_worker.engine import TorchEngine
from gpu_worker.server import start_worker

MODEL = "tiny"


async def test_shared_prefix_follows_its_worker_on_the_real_engine(stack) -> None:
    torch.set_num_threads(1)
    for _ in range(2):
        engine = TorchEngine(EngineConfig(model=MODEL, device="cpu", num_blocks=256, num_threads=1))
        stack.workers.append(await start_worker(engine))
    gw = await stack.gateway([w.url for w in stack.workers])  # lmetric: the default
    await stack.synced(gw)
    caches = stack.caches(gw)
    profile = caches[0].profile
    assert profile is not None and profile.tokenizer == "byte"  # the tiny model's tokenizer
    tokenizer = load_tokenizer(profile.tokenizer, profile.system_prompt)
    assert tokenizer is not None
    tokens = RequestTokens(profile, tokenizer)
    client = stack.client(gw)
    for i in range(3):
        doc = " ".join(f"talk {i} shares line {j} of its context" for j in range(12))
        messages = [{"role": "user", "content": doc}]
        ids = tokens.token_ids("chat", orjson.dumps({"model": MODEL, "messages": messages}))
        hashes = tokens.hashes(ids, None)
        reply = await client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=2, temperature=0
        )
        assert reply.usage.prompt_tokens == len(ids)
        await stack.held(caches, hashes)
        messages += [
            {"role": "assistant", "content": reply.choices[0].message.content or ""},
            {"role": "user", "content": "Go on."},
        ]
        again = await client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=2, temperature=0
        )
        assert again.usage.prompt_tokens_details.cached_tokens >= 16 * len(hashes)
