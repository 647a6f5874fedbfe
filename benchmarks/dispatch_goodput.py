"""Goodput with and without the gateway's deadline-aware dispatch, in one run.

    python benchmarks/dispatch_goodput.py --out dispatch_goodput.json

One simulated worker (its own process) and two gateways in front of it: `off` sends every
request straight on (the worker queues first come, first served), `on` holds at most
`--in-flight` requests on the worker and queues the rest in the gateway, earliest deadline
first, refusing at once what cannot make it (docs/dispatch.md). The same closed-loop load goes
to each gateway in alternating rounds (off, on, on, off, ...; same seeds), the worker drained
between rounds: `--clients` clients, more than the worker's batch, so requests queue. Each
request carries `x-kvgate-deadline-ms` for its first token: a share `--tight-share` gets
`--tight-ms`, the rest `--loose-ms`.

Reports per mode and deadline class: requests, first token within the deadline (goodput),
refused early (504) and how long a refusal took, TTFT p50/p99 of the served; and the goodput
ratio on/off. Traffic goes to 127.0.0.1 only, bounded by `--rounds` × `--round-s` × clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.gateway_overhead import _pct, spawn_gateway, spawn_sim_worker, stop  # noqa: E402

CHAT = "/v1/chat/completions"


@dataclass
class Outcome:
    cls: str
    deadline_s: float
    status: int = 0
    ttft_s: float | None = None
    answered_s: float = 0.0  # when the status line came back (a refusal's latency)


@dataclass
class Mode:
    outcomes: list[Outcome] = field(default_factory=list)


def _body(args: argparse.Namespace, rng: random.Random) -> bytes:
    # A few distinct prompts so the worker's prefix cache does not make every prefill free.
    words = " ".join(
        rng.choice(("paged", "attention", "cache", "block", "token")) for _ in range(40)
    )
    return json.dumps(
        {
            "model": args.model,
            "messages": [{"role": "user", "content": words}],
            "max_tokens": args.max_tokens,
            "stream": True,
        }
    ).encode()


async def _one(session: aiohttp.ClientSession, url: str, body: bytes, out: Outcome) -> None:
    start = time.perf_counter()
    headers = {
        "Content-Type": "application/json",
        "x-kvgate-deadline-ms": str(int(out.deadline_s * 1000)),
    }
    try:
        async with session.post(url + CHAT, data=body, headers=headers) as r:
            out.status = r.status
            out.answered_s = time.perf_counter() - start
            if r.status != 200:
                await r.read()
                return
            async for line in r.content:
                if out.ttft_s is None and line.startswith(b"data:"):
                    out.ttft_s = time.perf_counter() - start
    except (TimeoutError, aiohttp.ClientError):
        out.status = -1


async def _drain(session: aiohttp.ClientSession, worker: str, timeout_s: float = 120.0) -> None:
    """Wait until the worker holds no request (between rounds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with session.get(worker + "/stats") as r:
            stats = await r.json()
        if stats["running"] + stats["waiting"] == 0:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the worker did not drain")


async def _round(
    session: aiohttp.ClientSession, url: str, seed: int, args: argparse.Namespace
) -> list[Outcome]:
    """`--clients` closed-loop clients for `--round-s` seconds, each sending its next request a
    random think time after its last one ended (the same seeds for both modes)."""
    outcomes: list[Outcome] = []
    stop = time.perf_counter() + args.round_s

    async def client(rng: random.Random) -> None:
        while True:
            await asyncio.sleep(rng.uniform(0.0, args.think_ms / 1000.0))
            if time.perf_counter() >= stop:
                return
            tight = rng.random() < args.tight_share
            out = Outcome(
                cls="tight" if tight else "loose",
                deadline_s=(args.tight_ms if tight else args.loose_ms) / 1000.0,
            )
            outcomes.append(out)
            await _one(session, url, _body(args, rng), out)

    rngs = [random.Random(seed * 100_003 + i) for i in range(args.clients)]
    await asyncio.wait_for(
        asyncio.gather(*(client(rng) for rng in rngs)),
        timeout=args.round_s + args.loose_ms / 1000.0 + 120.0,
    )
    return outcomes


def _summary(outcomes: list[Outcome], wall_s: float) -> dict[str, object]:
    table: dict[str, object] = {}
    for cls in ("tight", "loose", "all"):
        group = [o for o in outcomes if cls in ("all", o.cls)]
        if not group:
            continue
        served = [o.ttft_s for o in group if o.status == 200 and o.ttft_s is not None]
        good = [o for o in group if o.ttft_s is not None and o.ttft_s <= o.deadline_s]
        refused = [o.answered_s for o in group if o.status == 504]
        table[cls] = {
            "requests": len(group),
            "within_deadline": len(good),
            "goodput_share": len(good) / len(group),
            "goodput_rps": len(good) / wall_s,
            "refused_early": len(refused),
            "refusal_p50_ms": 1e3 * _pct(refused, 0.5) if refused else None,
            "other_errors": sum(1 for o in group if o.status not in (200, 504)),
            "served_ttft_p50_ms": 1e3 * _pct(served, 0.5) if served else None,
            "served_ttft_p99_ms": 1e3 * _pct(served, 0.99) if served else None,
        }
    return table


async def _measure(args: argparse.Namespace, worker: str, gateways: dict[str, str]) -> dict:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=args.loose_ms / 1000.0 + 120.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        modes = {name: Mode() for name in gateways}
        for i in range(args.rounds):
            order = ["off", "on"] if i % 2 == 0 else ["on", "off"]
            for name in order:
                outcomes = await _round(session, gateways[name], seed=i, args=args)
                modes[name].outcomes.extend(outcomes)
                await _drain(session, worker)
                print(f"round {i} {name}: {len(outcomes)} requests", flush=True)
    wall_s = args.rounds * args.round_s
    result: dict[str, object] = {
        "config": vars(args) | {"out": str(args.out) if args.out else None},
    }
    for name, mode in modes.items():
        result[name] = _summary(mode.outcomes, wall_s)
    on, off = result["on"]["all"], result["off"]["all"]  # type: ignore[index]
    result["goodput_ratio_on_off"] = on["within_deadline"] / max(1, off["within_deadline"])
    return result


def _table(result: dict) -> str:
    rows = [
        f"{result['config']['clients']} clients, worker batch {result['config']['max_batch']}, "
        f"gateway bound {result['config']['in_flight']}",
        f"{'mode':<5}{'class':<7}{'requests':>9}{'in SLO':>8}{'share':>8}{'refused':>8}"
        f"{'refuse p50':>11}{'errors':>7}{'ttft p50':>10}{'ttft p99':>10}",
    ]
    for name in ("off", "on"):
        for cls, s in result[name].items():
            fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
            rows.append(
                f"{name:<5}{cls:<7}{s['requests']:>9}{s['within_deadline']:>8}"
                f"{s['goodput_share']:>8.1%}{s['refused_early']:>8}{fmt(s['refusal_p50_ms']):>11}"
                f"{s['other_errors']:>7}"
                f"{fmt(s['served_ttft_p50_ms']):>10}{fmt(s['served_ttft_p99_ms']):>10}"
            )
    rows.append(f"goodput on / off: x{result['goodput_ratio_on_off']:.2f}")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--time-scale", type=float, default=4.0, help="sim worker slowness (1 = A100)")
    p.add_argument("--max-batch", type=int, default=32, help="the sim worker's batch size")
    p.add_argument("--in-flight", type=int, default=32, help="the `on` gateway's bound per worker")
    p.add_argument("--clients", type=int, default=96, help="closed-loop clients (> batch)")
    p.add_argument("--think-ms", type=float, default=200.0, help="uniform 0..N ms between requests")
    p.add_argument("--round-s", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=2, help="pairs of rounds (off+on)")
    p.add_argument("--tight-share", type=float, default=0.3)
    p.add_argument("--tight-ms", type=float, default=1500.0)
    p.add_argument("--loose-ms", type=float, default=20000.0)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--model", default="sim-llama")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    procs: list[subprocess.Popen] = []
    try:
        worker, worker_url = spawn_sim_worker(
            args.model, args.time_scale, "--max-batch-size", str(args.max_batch)
        )
        procs.append(worker)
        gateways = {}
        for name, bound in (("off", 0), ("on", args.in_flight)):
            env = {
                "KVGATE__GATEWAY__SEMANTIC_CACHE__ENABLED": "false",
                "KVGATE__GATEWAY__DISPATCH__MAX_IN_FLIGHT_PER_WORKER": str(bound),
            }
            proc, gateways[name] = spawn_gateway(worker_url, env)
            procs.append(proc)
        result = asyncio.run(_measure(args, worker_url, gateways))
    finally:
        stop(procs)
    print(_table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
