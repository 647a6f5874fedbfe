"""`kvgate` — one console script for the whole project.

kvgate up [--config FILE]                  the local stack: workers + gateway, Ctrl-C stops
kvgate gateway --config FILE [--host H] [--port P] [--worker URL ...]
kvgate sim-worker [--port P] [...]         a simulated worker (see `kvgate sim-worker -h`)
kvgate worker [...]                        a worker running our engine
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import msgspec

from config.kvgate import KvgateConfig, RemoteWorker
from config.loader import ConfigError, load

log = logging.getLogger("kvgate")
WORKER_COMMANDS = ("sim-worker", "worker")
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "kvgate.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvgate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start workers and gateway from one config; Ctrl-C stops all")
    up.add_argument("--config", type=Path, help=f"YAML config (default {DEFAULT_CONFIG.name})")
    up.add_argument("--host", help="override gateway.host")
    up.add_argument("--port", type=int, help="override gateway.port (0 = any free port)")
    gw = sub.add_parser("gateway", help="run only the gateway, over running workers")
    gw.add_argument("--config", type=Path, help="YAML config (its `remote` workers are used)")
    gw.add_argument("--host", help="override gateway.host")
    gw.add_argument("--port", type=int, help="override gateway.port (0 = any free port)")
    gw.add_argument(
        "--worker", action="append", default=[], metavar="URL", help="a worker base URL (repeat)"
    )
    for name in WORKER_COMMANDS:
        sub.add_parser(name, help=f"run a worker (all flags: kvgate {name} -h)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in WORKER_COMMANDS:
        return _worker(args_list)
    args = _parser().parse_args(args_list)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = _load_config(args.config, default=args.command == "up")
    except ConfigError as exc:
        print(f"kvgate: {exc}", file=sys.stderr)
        return 2
    if args.command == "up":
        return _run(_up(cfg, args.host, args.port))
    if args.config is None:  # no file: only the --worker URLs, not the default sim workers
        cfg = msgspec.structs.replace(cfg, workers=[])
    return _run(_gateway(cfg, args.host, args.port, args.worker))


def _load_config(path: Path | None, default: bool) -> KvgateConfig:
    if path is None and default:
        path = DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None
    return load(path, KvgateConfig)


def _worker(argv: list[str]) -> int:
    """Hand `sim-worker ...` / `worker ...` to the worker's own CLI."""
    try:
        from gpu_worker import cli as worker_cli
    except ImportError as exc:
        print(f"kvgate {argv[0]}: not available yet ({exc})", file=sys.stderr)
        return 2
    return int(worker_cli.main(argv) or 0)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # Windows: the default loop serves, a little slower
        return asyncio.run(coro)
    return uvloop.run(coro)


def _stop_event() -> asyncio.Event:
    """An event set by the first SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _until(stop: asyncio.Event, coro: Coroutine[Any, Any, Any]) -> bool:
    """Run `coro` unless `stop` is set first (then cancel it); True when it finished."""
    task = asyncio.ensure_future(coro)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        task.result()  # raises what it raised
        return True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return False


async def _serve(
    cfg: KvgateConfig, urls: list[str], host: str | None, port: int | None, stop: asyncio.Event
) -> None:
    from gateway.server import start_gateway

    gateway = await start_gateway(cfg.gateway, urls, host, port)
    # What starting made (modules, the embedding model, config) lives as long as the process:
    # move it out of the cyclic GC's reach, or every full collection walks it again and stalls
    # the event loop (50k objects: ~25 ms under load; 400k with the semantic cache's model:
    # 0.3–1.6 s). Objects made later are collected as usual.
    gc.freeze()
    try:
        print(
            f"kvgate gateway listening on {gateway.url} (OpenAI base_url {gateway.url}/v1)",
            flush=True,
        )
        print(f"workers: {', '.join(urls)}; Ctrl-C stops", flush=True)
        await stop.wait()
        print("kvgate: stopping", flush=True)
    finally:
        await gateway.stop()


async def _up(cfg: KvgateConfig, host: str | None, port: int | None) -> int:
    from kvgate.launcher import Fleet, LaunchError

    stop = _stop_event()
    fleet = Fleet()
    try:
        if not await _until(stop, fleet.start(cfg)):
            return 130
        await _serve(cfg, fleet.urls, host, port, stop)
    except LaunchError as exc:
        print(f"kvgate up: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the gateway's port is taken
        print(f"kvgate up: {exc}", file=sys.stderr)
        return 1
    finally:
        await fleet.stop()
    return 0


async def _gateway(cfg: KvgateConfig, host: str | None, port: int | None, extra: list[str]) -> int:
    skipped = [w for w in cfg.workers if not isinstance(w, RemoteWorker)]
    if skipped:
        log.warning(
            "`kvgate gateway` launches nothing: %d sim/engine worker entries skipped "
            "(use `kvgate up`)",
            len(skipped),
        )
    urls = [w.url.rstrip("/") for w in cfg.workers if isinstance(w, RemoteWorker)]
    urls += [u.rstrip("/") for u in extra]
    if not urls:
        print(
            "kvgate gateway: no worker URL (give --worker URL or `remote` entries)", file=sys.stderr
        )
        return 2
    try:
        await _serve(cfg, urls, host, port, _stop_event())
    except OSError as exc:
        print(f"kvgate gateway: {exc}", file=sys.stderr)
        return 1
    return 0
