"""`sim-worker` as a real process: prints its URL, serves, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from gpu_worker.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_sim_worker_process_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    cfg = tmp_path / "sim.yaml"
    cfg.write_text("worker: {model: from-yaml}\nsim_engine: {num_blocks: 64}\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpu_worker.cli",
            "sim-worker",
            "--port",
            "0",
            "--config",
            str(cfg),
            "--time-scale",
            "0.01",
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        line = proc.stdout.readline()  # blocks until the server listens
        assert "listening on http://127.0.0.1:" in line
        url = line.split("listening on ")[1].split()[0]
        stats = httpx.get(url + "/stats", timeout=5).json()
        assert stats["model"] == "from-yaml" and stats["total_blocks"] == 64
        resp = httpx.post(
            url + "/v1/completions",
            json={"model": "from-yaml", "prompt": "hi", "max_tokens": 3},
            timeout=5,
        )
        assert resp.json()["usage"]["completion_tokens"] == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_config_is_a_clear_error(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("sim_engine: {num_blockz: 3}\n")
    assert main(["sim-worker", "--config", str(cfg)]) == 2
    assert "num_blockz" in capsys.readouterr().err


def test_worker_bad_model_or_config_is_a_clear_error(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing.gguf"
    assert main(["worker", "--model", str(missing)]) == 2
    assert "missing.gguf" in capsys.readouterr().err
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("engine: {num_blockz: 3}\n")
    assert main(["worker", "--config", str(cfg)]) == 2
    assert "num_blockz" in capsys.readouterr().err


def test_bad_flag_value_is_a_clear_error(capsys) -> None:
    assert main(["sim-worker", "--num-blocks", "0"]) == 2
    assert "num_blocks" in capsys.readouterr().err


def test_worker_takes_only_its_own_env_overrides(monkeypatch, capsys) -> None:
    # `kvgate up` hands its environment to the workers it starts: a gateway override must not
    # make them fail, while a bad override of their own still does.
    monkeypatch.setenv("KVGATE__GATEWAY__PORT", "9000")
    monkeypatch.setenv("KVGATE__SIM_ENGINE__NUM_BLOCKZ", "3")
    assert main(["sim-worker"]) == 2
    err = capsys.readouterr().err
    assert "num_blockz" in err and "gateway" not in err
