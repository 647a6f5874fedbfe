"""A simulated worker as a subprocess (`kvgate sim-worker`), so a test can kill it: shared by the
gateway and cancellation tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
URL = re.compile(r"(http://[\w.\-]+:\d+)")
START_TIMEOUT_S = 60.0


class SimWorker:
    """One `kvgate sim-worker` subprocess; `kill()` is a crash, `restart()` comes back on the same
    port."""

    def __init__(
        self, time_scale: float = 0.01, port: int = 0, *extra_args: str, model: str = "sim-llama"
    ) -> None:
        self.time_scale = time_scale
        self.model = model
        self.extra_args = extra_args  # more `kvgate sim-worker` flags
        self.proc = self._spawn(port)

    def _spawn(self, port: int) -> subprocess.Popen[str]:
        argv = [
            sys.executable,
            "-m",
            "kvgate",
            "sim-worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model",
            self.model,
            "--time-scale",
            str(self.time_scale),
            *self.extra_args,
        ]
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"sim-worker exited with {proc.wait()}")
            match = URL.search(line)
            if match:
                self.url = match.group(1)
                threading.Thread(target=proc.stdout.read, daemon=True).start()
                return proc
        proc.kill()
        raise RuntimeError("sim-worker printed no URL")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def restart(self) -> None:
        self.proc = self._spawn(self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
