"""Launch workers as subprocesses and stop them again (`kvgate up`).

Each worker is `python -m kvgate sim-worker|worker --port 0 ...` in its own session (so a Ctrl-C
in the terminal reaches only `kvgate up`, which then stops everything in order). A worker
announces itself by printing its base URL on stdout; it is ready once that URL answers /health.
Its later stdout lines are forwarded to ours with a `[w<i>]` prefix (which also keeps its pipe
from filling up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import time

import httpx

from config.kvgate import EngineWorkers, KvgateConfig, RemoteWorker, SimWorkers, WorkerSpec

log = logging.getLogger(__name__)

_URL = re.compile(rb"(https?://[\w.\-]+:\d+|https?://\[[0-9a-fA-F:]+\]:\d+)")
STOP_TIMEOUT_S = 10.0


class LaunchError(RuntimeError):
    """A worker did not start (exited, printed no URL, or never answered /health)."""


def worker_argv(spec: SimWorkers | EngineWorkers) -> list[str]:
    """The command line of one launched worker of `spec`."""
    base = [sys.executable, "-m", "kvgate"]
    if isinstance(spec, SimWorkers):
        return [
            *base,
            "sim-worker",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--model",
            spec.model,
            "--time-scale",
            str(spec.time_scale),
            *spec.args,
        ]
    return [
        *base,
        "worker",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--model",
        spec.model,
        "--device",
        spec.device,
        *spec.args,
    ]


class WorkerProcess:
    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.url = ""
        self._pump: asyncio.Task[None] | None = None

    async def read_url(self, deadline: float) -> str:
        assert self.proc.stdout is not None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LaunchError(f"{self.name} printed no URL in time")
            line = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            if not line:
                code = await self.proc.wait()
                raise LaunchError(f"{self.name} exited (code {code}) before printing its URL")
            sys.stdout.buffer.write(b"[" + self.name.encode() + b"] " + line)
            sys.stdout.flush()
            match = _URL.search(line)
            if match:
                self.url = match.group(1).decode()
                self._pump = asyncio.create_task(self._forward_output())
                return self.url

    async def _forward_output(self) -> None:
        assert self.proc.stdout is not None
        prefix = b"[" + self.name.encode() + b"] "
        async for line in self.proc.stdout:
            sys.stdout.buffer.write(prefix + line)
            sys.stdout.flush()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("%s ignored SIGTERM for %.0f s; killing it", self.name, STOP_TIMEOUT_S)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump


async def _wait_healthy(url: str, proc: asyncio.subprocess.Process, deadline: float) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
        delay_s = 0.02
        while True:
            try:
                if (await client.get(url + "/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if proc.returncode is not None:
                raise LaunchError(f"worker at {url} exited (code {proc.returncode})")
            if time.monotonic() > deadline:
                raise LaunchError(f"worker at {url} never answered /health")
            await asyncio.sleep(delay_s)  # polling *is* the readiness check here
            delay_s = min(delay_s * 2, 0.5)


class Fleet:
    """The launched workers plus the remote ones; `urls` in config order."""

    def __init__(self) -> None:
        self.processes: list[WorkerProcess] = []
        self.urls: list[str] = []

    async def start(self, cfg: KvgateConfig) -> None:
        """Launch every sim/engine entry and wait until all answer /health. On failure or
        cancellation, the caller still owns what was launched: always `await stop()` after."""
        deadline = time.monotonic() + cfg.worker_startup_timeout_s
        jobs: list[asyncio.Task[WorkerProcess] | str] = []
        for spec in cfg.workers:
            jobs.extend(self._jobs(spec, len(jobs), deadline))
        tasks = [j for j in jobs if not isinstance(j, str)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise LaunchError("; ".join(str(f) for f in failures))
        self.urls = [j if isinstance(j, str) else j.result().url for j in jobs]

    def _jobs(
        self, spec: WorkerSpec, first: int, deadline: float
    ) -> list[asyncio.Task[WorkerProcess] | str]:
        if isinstance(spec, RemoteWorker):
            return [spec.url.rstrip("/")]
        return [
            asyncio.create_task(self._launch(f"w{first + i}", spec, deadline))
            for i in range(spec.count)
        ]

    async def _launch(
        self, name: str, spec: SimWorkers | EngineWorkers, deadline: float
    ) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            *worker_argv(spec), stdout=asyncio.subprocess.PIPE, start_new_session=True
        )
        worker = WorkerProcess(name, proc)
        self.processes.append(worker)  # registered at once, so `stop()` reaches it whatever
        url = await worker.read_url(deadline)
        await _wait_healthy(url, proc, deadline)
        return worker

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.processes))
        self.processes = []
