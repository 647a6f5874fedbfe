"""`kvgate up`: one command starts workers and gateway, serves, and stops cleanly on SIGINT."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"^kvgate gateway listening on (http://[\w.\-]+:\d+)")
WORKERS = re.compile(r"workers: (\S+)")


def test_up_serves_through_openai_and_stops_on_sigint(tmp_path):
    config = tmp_path / "stack.yaml"
    config.write_text(
        "gateway: {port: 0, health: {interval_s: 0.5}}\n"
        "workers:\n  - {type: sim, count: 1, model: sim-llama, time_scale: 0.01}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvgate", "up", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        url = worker_url = None
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while url is None or worker_url is None:
            assert time.monotonic() < deadline, "kvgate up printed no URL"
            line = proc.stdout.readline()
            assert line, f"kvgate up exited with {proc.wait()}"
            if m := LISTENING.search(line):
                url = m.group(1)
            if m := WORKERS.search(line):
                worker_url = m.group(1).rstrip(",;")
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=20)
        reply = client.chat.completions.create(
            model="sim-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.choices[0].message.content
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        for dead in (url, worker_url):  # gateway and worker are both gone
            try:
                httpx.get(dead + "/health", timeout=2)
                raise AssertionError(f"{dead} still answers")
            except httpx.ConnectError:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_up_reports_a_worker_that_cannot_start(tmp_path):
    config = tmp_path / "stack.yaml"
    config.write_text(
        "gateway: {port: 0}\nworkers:\n  - {type: sim, count: 2, args: [--no-such-flag]}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "kvgate", "up", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "exited (code 2) before printing its URL" in proc.stderr
    assert "listening" not in proc.stdout
