"""What any extra hop costs, next to what the gateway costs: the same streamed load sent straight
to one simulated worker, through a bare TCP pipe (bytes in, bytes out, no HTTP) and through the
gateway, in alternating rounds in one run (the rounds design of gateway_overhead.py).

    python benchmarks/hop_cost.py --requests 1800 --concurrency 32 --max-tokens 64 --rounds 6

The pipe is the floor of any proxy on this box: what it adds is the hop itself (one more
process to wake and two more loopback writes per chunk), so "gateway − pipe" is what the
gateway's own work adds on top. Each path's figures are medians over all its requests; the
order of the three paths rotates round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.gateway_overhead import (  # noqa: E402
    STEP_ROWS,
    Samples,
    _batch,
    _spawn,
    _summary,
    spawn_gateway,
    spawn_sim_worker,
    stop,
    stream_body,
)

PATHS = ("direct", "pipe", "gateway")
KEYS = ("ttft_p50_ms", "ttft_p99_ms", "total_p50_ms", "total_p99_ms")


class _Pipe(asyncio.Protocol):
    """One side of a byte pipe; bytes that arrive before the other side exists wait."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def _serve_pipe(target: str) -> None:
    host, port = target.rsplit(":", 1)
    loop = asyncio.get_running_loop()

    def accept() -> _Pipe:
        client = _Pipe()

        async def connect() -> None:
            _, upstream = await loop.create_connection(_Pipe, host, int(port))
            upstream.peer, client.peer = client, upstream
            for data in client.pending:
                upstream.transport.write(data)  # type: ignore[union-attr]
            client.pending.clear()

        loop.create_task(connect())
        return client

    server = await loop.create_server(accept, "127.0.0.1", 0)
    print(f"pipe listening http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


async def _measure(args: argparse.Namespace, bases: dict[str, str]) -> dict[str, object]:
    body = stream_body(args.model, args.max_tokens)
    samples = {name: Samples() for name in PATHS}
    for name in PATHS:  # warm every path's connections
        await _batch(bases[name], 2 * args.concurrency, args, body, Samples(), {})
    per_round = args.requests // args.rounds
    for i in range(args.rounds):
        order = PATHS[i % 3 :] + PATHS[: i % 3]
        for name in order:
            await _batch(bases[name], per_round, args, body, samples[name], {}, bases["direct"])
    summary = {name: _summary(s) for name, s in samples.items()}
    direct = summary["direct"]

    def added(name: str) -> dict[str, float]:
        return {k: summary[name][k] - direct[k] for k in KEYS}

    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "paths": summary,
        "pipe_added_ms": added("pipe"),
        "gateway_added_ms": added("gateway"),
        "gateway_over_pipe_ms": {k: summary["gateway"][k] - summary["pipe"][k] for k in KEYS},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1800, help="per path")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=6, help="a multiple of 3: each path in each slot")
    p.add_argument("--think-ms", type=float, default=20.0, help="uniform 0..N ms before a request")
    p.add_argument("--model", default="sim-llama")
    p.add_argument("--serve-pipe", metavar="HOST:PORT", help=argparse.SUPPRESS)  # the child
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.serve_pipe:
        uvloop.run(_serve_pipe(args.serve_pipe))
        return 0
    procs = []
    try:
        worker, worker_url = spawn_sim_worker(args.model, 1.0)
        procs.append(worker)
        gateway, gateway_url = spawn_gateway(
            worker_url, {"KVGATE__GATEWAY__SEMANTIC_CACHE__ENABLED": "false"}
        )
        procs.append(gateway)
        argv = [sys.executable, __file__, "--serve-pipe", worker_url.removeprefix("http://")]
        pipe, pipe_url = _spawn(argv, "pipe listening")
        procs.append(pipe)
        bases = {"direct": worker_url, "pipe": pipe_url, "gateway": gateway_url}
        result = asyncio.run(_measure(args, bases))
    finally:
        stop(procs)
    print(f"{'metric':<16}" + "".join(f"{name:>12}" for name in PATHS) + f"{'gw - pipe':>12}")
    for key in KEYS:
        row = "".join(f"{result['paths'][name][key]:>12.2f}" for name in PATHS)
        print(f"{key:<16}{row}{result['gateway_over_pipe_ms'][key]:>+12.2f}")
    for label, key in STEP_ROWS:
        print(f"{label:<16}" + "".join(f"{result['paths'][n][key]:>12.3f}" for n in PATHS))
    print("added vs direct: " + ", ".join(KEYS))
    for name in ("pipe", "gateway"):
        added = result[f"{name}_added_ms"]
        print(f"{name:<16}" + "".join(f"{added[k]:>+12.2f}" for k in KEYS))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
