"""Config: the example file loads, every typo fails at start with its path."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from config.kvgate import EngineWorkers, KvgateConfig, RemoteWorker
from config.loader import ConfigError, build, load
from config.worker import SimWorkerFile

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_one_smollm2_worker():
    cfg = load(ROOT / "config" / "kvgate.yaml", KvgateConfig, environ={})
    assert [type(w) for w in cfg.workers] == [EngineWorkers]
    assert (cfg.workers[0].count, cfg.workers[0].model) == (1, "smollm2")


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"gateway": {"routng": {"type": "round_robin"}}}, "$.gateway"),
        ({"gateway": {"upstream": {"read_timout_s": 3}}}, "$.gateway.upstream"),
        ({"gateway": {"routing": {"type": "round_robbin"}}}, "$.gateway.routing.type"),
        ({"gateway": {"port": "eighty"}}, "$.gateway.port"),
        ({"gateway": {"health": {"interval_s": 0}}}, "$.gateway.health.interval_s"),
        ({"workers": [{"type": "sim", "cuont": 2}]}, "$.workers[0]"),
        ({"workers": [{"type": "remote"}]}, "$.workers[0]"),
    ],
)
def test_bad_key_or_value_names_its_path(data, path):
    with pytest.raises(ConfigError) as info:
        build(data, KvgateConfig)
    assert f"at `{path}`" in str(info.value)


def test_env_override_reaches_nested_keys():
    cfg = load(
        None,
        KvgateConfig,
        environ={
            "KVGATE__GATEWAY__API_KEYS": "{sk-a: team-a}",
            "KVGATE__WORKERS": "[{type: remote, url: 'http://x:1'}]",
        },
    )
    assert cfg.gateway.api_keys == {"sk-a": "team-a"}
    assert cfg.workers == [RemoteWorker(url="http://x:1")]


def test_kvgate_up_refuses_a_typo_before_starting_anything(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway:\n  port: 0\n  helth: {interval_s: 1}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kvgate", "up", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown field `helth`" in proc.stderr and "$.gateway" in proc.stderr


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"workers": [{"type": "sim", "time_scale": math.inf}]}, "$.workers[0].time_scale"),
        ({"worker_startup_timeout_s": math.inf}, "$.worker_startup_timeout_s"),
    ],
)
def test_an_infinite_number_in_the_stack_names_its_path(data: dict, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(data, KvgateConfig)
    assert path in str(info.value)


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"worker": {"kv_heartbeat_s": math.inf}}, "$.worker.kv_heartbeat_s"),
        ({"worker": {"body_read_timeout_s": math.nan}}, "$.worker.body_read_timeout_s"),
        ({"sim_engine": {"cost_model": {"time_scale": math.nan}}}, "$.sim_engine.cost_model"),
        ({"sim_engine": {"cost_model": {"prefill_s_per_token": -1.0}}}, "prefill_s_per_token"),
        (
            {"sim_engine": {"eviction": {"type": "workload_aware", "prior_weight": math.inf}}},
            "prior_weight",
        ),
    ],
)
def test_a_worker_number_out_of_range_names_its_path(data: dict, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(data, SimWorkerFile)
    assert path in str(info.value)
