"""Command line of a worker process: `sim-worker` (the cost-model engine) and `worker` (the
torch engine). `kvgate sim-worker …` and `kvgate worker …` call `main`.

Precedence: defaults < `--config FILE` (a `SimWorkerFile` / `EngineWorkerFile`) < env overrides
(`KVGATE__…`) < command-line flags. torch is imported only by `worker`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from typing import Any

from config.loader import ConfigError, apply_env_overrides, build, load_yaml
from config.worker import EngineWorkerFile, SimWorkerFile, WorkerConfig
from gpu_worker.byte_tokenizer import ByteTokenizer
from gpu_worker.engine_api import Engine
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
    real = sub.add_parser("worker", help="a worker on our torch paged-attention engine")
    real.add_argument("--config", help="YAML file with `worker:` and `engine:` sections")
    real.add_argument("--host")
    real.add_argument("--port", type=int)
    real.add_argument("--model", help="tiny | smollm2 | path to a Llama GGUF (default smollm2)")
    real.add_argument("--device", choices=["auto", "cpu", "cuda"])
    real.add_argument("--dtype", choices=["float32", "bfloat16"])
    real.add_argument("--num-blocks", type=int)
    real.add_argument("--block-size", type=int)
    real.add_argument("--max-batch-size", type=int)
    real.add_argument("--max-tokens-per-step", type=int)
    real.add_argument("--max-pending-requests", type=int)
    real.add_argument("--log-level", default="INFO")
    return parser


_WORKER_FLAGS = ("host", "port", "model", "max_pending_requests")
_ENGINE_FLAGS = (
    "num_blocks",
    "block_size",
    "max_batch_size",
    "max_tokens_per_step",
    "max_model_len",
)


def _sections(
    args: argparse.Namespace,
    engine_key: str,
    worker_flags: tuple[str, ...],
    engine_flags: tuple[str, ...],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """File, then env overrides, then flags (applied by the caller's `build`, validated once, so
    a bad flag fails like bad YAML). Returns (whole, `worker` section, engine section)."""
    data = load_yaml(args.config) if args.config else {}
    data = apply_env_overrides(data, os.environ, sections=("worker", engine_key))
    worker = data.setdefault("worker", {})
    engine = data.setdefault(engine_key, {})
    if not isinstance(worker, dict) or not isinstance(engine, dict):
        raise ConfigError(f"`worker` and `{engine_key}` must be mappings")
    worker.update({k: getattr(args, k) for k in worker_flags if getattr(args, k) is not None})
    engine.update({k: getattr(args, k) for k in engine_flags if getattr(args, k) is not None})
    return data, worker, engine


def _sim_config(args: argparse.Namespace) -> SimWorkerFile:
    data, _, engine = _sections(args, "sim_engine", _WORKER_FLAGS, _ENGINE_FLAGS)
    if args.time_scale is not None:
        cost = engine.setdefault("cost_model", {})
        if not isinstance(cost, dict):
            raise ConfigError("`sim_engine.cost_model` must be a mapping")
        cost["time_scale"] = args.time_scale
    return build(data, SimWorkerFile, source=args.config or "flags")


_REAL_WORKER_FLAGS = ("host", "port", "max_pending_requests")
_REAL_ENGINE_FLAGS = (
    "model",
    "device",
    "dtype",
    "num_blocks",
    "block_size",
    "max_batch_size",
    "max_tokens_per_step",
)


def _engine_config(args: argparse.Namespace) -> EngineWorkerFile:
    data, _, engine = _sections(args, "engine", _REAL_WORKER_FLAGS, _REAL_ENGINE_FLAGS)
    if args.model is None:
        engine.setdefault("model", "smollm2")  # a worker process serves the embedded model
    return build(data, EngineWorkerFile, source=args.config or "flags")


def _build(args: argparse.Namespace) -> tuple[Engine, WorkerConfig]:
    if args.command == "worker":
        from gpu_worker.engine import TorchEngine  # torch: only the real worker pays for it

        cfg = _engine_config(args)
        return TorchEngine(cfg.engine), cfg.worker
    sim = _sim_config(args)
    tokenizer = ByteTokenizer(sim.worker.default_system_prompt)
    return SimEngine(sim.sim_engine, model_id=sim.worker.model, tokenizer=tokenizer), sim.worker


async def _serve(engine: Engine, cfg: WorkerConfig, kind: str) -> None:
    handle = await start_worker(engine, cfg)
    # The model, tokenizer and modules live as long as the process: keep the cyclic GC from
    # walking them on every full collection (a stall of the loop that streams tokens).
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"kvgate {kind} listening on {handle.url} (model {engine.model_id})", flush=True)
    try:
        await stop.wait()
    finally:
        await handle.close()
        log.info("%s stopped", kind)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    kind = args.command
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        engine, worker_cfg = _build(args)
    except (ConfigError, ValueError, OSError) as exc:  # bad config, model file, weights
        print(f"kvgate {kind}: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(engine, worker_cfg, kind))
    except OSError as exc:
        print(f"kvgate {kind}: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
