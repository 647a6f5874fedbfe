"""Command line of a worker process: `sim-worker` (the cost-model engine) and `worker` (the
torch engine; wired in by the engine integration). `kvgate sim-worker …` calls `main`.

Precedence: defaults < `--config FILE` (a `SimWorkerFile`) < env overrides (`KVGATE__…`)
< command-line flags.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from config.loader import ConfigError, apply_env_overrides, build, load_yaml
from config.worker import SimWorkerFile
from gpu_worker.byte_tokenizer import ByteTokenizer
from gpu_worker.server import start_worker
from gpu_worker.sim_engine import SimEngine

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvgate", description="kvgate worker processes")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("sim-worker", help="a simulated worker: cost model, no model")
    sim.add_argument("--config", help="YAML file with `worker:` and `sim_engine:` sections")
    sim.add_argument("--host")
    sim.add_argument("--port", type=int)
    sim.add_argument("--model", help="model id served")
    sim.add_argument("--num-blocks", type=int)
    sim.add_argument("--block-size", type=int)
    sim.add_argument("--max-batch-size", type=int)
    sim.add_argument("--max-tokens-per-step", type=int)
    sim.add_argument("--max-model-len", type=int)
    sim.add_argument("--max-pending-requests", type=int)
    sim.add_argument("--time-scale", type=float, help="multiplies every modelled step time")
    sim.add_argument("--log-level", default="INFO")
    real = sub.add_parser("worker", help="the torch engine worker")
    real.add_argument("--config")
    real.add_argument("--host")
    real.add_argument("--port", type=int)
    return parser


_WORKER_FLAGS = ("host", "port", "model", "max_pending_requests")
_ENGINE_FLAGS = (
    "num_blocks",
    "block_size",
    "max_batch_size",
    "max_tokens_per_step",
    "max_model_len",
)


def _sim_config(args: argparse.Namespace) -> SimWorkerFile:
    """File, then env overrides, then flags; validated once, so a bad flag fails like bad YAML."""
    data = load_yaml(args.config) if args.config else {}
    data = apply_env_overrides(data, os.environ)
    worker = data.setdefault("worker", {})
    engine = data.setdefault("sim_engine", {})
    if not isinstance(worker, dict) or not isinstance(engine, dict):
        raise ConfigError("`worker` and `sim_engine` must be mappings")
    worker.update({k: getattr(args, k) for k in _WORKER_FLAGS if getattr(args, k) is not None})
    engine.update({k: getattr(args, k) for k in _ENGINE_FLAGS if getattr(args, k) is not None})
    if args.time_scale is not None:
        cost = engine.setdefault("cost_model", {})
        if not isinstance(cost, dict):
            raise ConfigError("`sim_engine.cost_model` must be a mapping")
        cost["time_scale"] = args.time_scale
    return build(data, SimWorkerFile, source=args.config or "flags")


async def _serve_sim(cfg: SimWorkerFile) -> None:
    tokenizer = ByteTokenizer(cfg.worker.default_system_prompt)
    engine = SimEngine(cfg.sim_engine, model_id=cfg.worker.model, tokenizer=tokenizer)
    handle = await start_worker(engine, cfg.worker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"kvgate sim-worker listening on {handle.url} (model {engine.model_id})", flush=True)
    try:
        await stop.wait()
    finally:
        await handle.close()
        log.info("sim-worker stopped")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "worker":
        print("kvgate worker: the torch engine is not wired in yet", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = _sim_config(args)
    except ConfigError as exc:
        print(f"kvgate sim-worker: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve_sim(cfg))
    except OSError as exc:
        print(f"kvgate sim-worker: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
