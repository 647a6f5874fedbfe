"""Engine test helpers. The device the engine tests run on is `KVGATE_TEST_DEVICE` (`cpu` by
default, or `cuda`): `KVGATE_TEST_DEVICE=cuda pytest tests/engine` runs the same tests on the GPU
(benchmarks/cuda_check.sh does). Tests that only make sense on the CPU pin `device="cpu"`; tests
marked `gpu` need CUDA and skip without it."""

import os

import pytest
import torch

from config.engine import EngineConfig
from gpu_worker.engine import TorchEngine
from gpu_worker.engine_api import EngineRequest, RequestMeta, SamplingParams

DEVICE_ENV = "KVGATE_TEST_DEVICE"


def engine_device() -> str:
    return os.environ.get(DEVICE_ENV, "cpu")


def pytest_configure(config: pytest.Config) -> None:
    device = engine_device()
    if device not in ("cpu", "cuda"):
        raise pytest.UsageError(f"{DEVICE_ENV}={device!r}: use cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"{DEVICE_ENV}=cuda but torch sees no CUDA device")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)


def make_engine(**overrides) -> TorchEngine:
    cfg = {
        "model": "tiny",
        "device": engine_device(),
        "num_blocks": 128,
        "block_size": 4,
        **overrides,
    }
    return TorchEngine(EngineConfig(**cfg))


def request(rid, prompt, max_tokens=12, meta=None, **sampling) -> EngineRequest:
    sampling.setdefault("temperature", 0.0)
    return EngineRequest(
        request_id=rid,
        prompt_token_ids=list(prompt),
        sampling=SamplingParams(max_tokens=max_tokens, ignore_eos=True, **sampling),
        meta=meta or RequestMeta(),
    )


def run_all(engine, max_steps=10_000):
    """Step until idle; request id → (tokens, last output). Checks the protocol as it goes."""
    tokens, last = {}, {}
    for _ in range(max_steps):
        if not engine.has_work():
            break
        for out in engine.step():
            assert not last.get(out.request_id, None) or not last[out.request_id].finished
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
            last[out.request_id] = out
    assert not engine.has_work()
    return tokens, last


def step_twice(engine, finished: set[str]) -> None:
    """Two engine steps; collects finished ids and checks none reports output after finishing."""
    for _ in range(2):
        for out in engine.step():
            assert out.request_id not in finished
            if out.finished:
                finished.add(out.request_id)


def prompts(n, seed=0, lo=5, hi=60):
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randint(
            3, 300, (int(torch.randint(lo, hi, (1,), generator=gen)),), generator=gen
        ).tolist()
        for _ in range(n)
    ]


# Test modules get these helpers as fixtures (importlib mode keeps conftest off sys.path).
@pytest.fixture(name="make_engine")
def _make_engine_fixture():
    return make_engine


@pytest.fixture(name="req")
def _request_fixture():
    return request


@pytest.fixture(name="run_all")
def _run_all_fixture():
    return run_all


@pytest.fixture(name="step_twice")
def _step_twice_fixture():
    return step_twice


@pytest.fixture(name="device")
def _device_fixture() -> torch.device:
    return torch.device(engine_device())


@pytest.fixture(name="prompts")
def _prompts_fixture():
    return prompts
