"""What the gateway adds: the same load sent straight to one simulated worker and through the
gateway to that worker, in one run, alternating rounds (so machine noise hits both alike).

    python benchmarks/gateway_overhead.py --requests 2000 --concurrency 32 --max-tokens 64 \
        --out /tmp/gateway_overhead.json

Worker and gateway run as their own processes (`kvgate sim-worker`, `kvgate gateway`); the load
generator is this process (aiohttp client). Reports p50/p99 of TTFT (first SSE data line) and of
total time for both paths, the difference (added latency) and throughput through/direct.

In the rounds the sim worker's step counters (`/stats`) are read around every round: the
closed-loop clients all get identical replies, so they finish and come back in cohorts, and how
many engine steps carry prefill depends on how tightly each cohort's requests arrive. A relay
that takes each request in turn spreads a cohort a little, more steps carry prefill, and every
stream in the batch pays for it; the table shows that part separately ("longer steps add").
`--interleaved` sends both paths' requests in the same cohorts, which leaves only the hop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")

ROOT = Path(__file__).resolve().parents[1]
URL = re.compile(r"(http://[\w.\-]+:\d+)")


@dataclass
class Samples:
    ttft_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    errors: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)  # process name -> CPU seconds
    engine: dict[str, float] = field(default_factory=dict)  # the worker's /stats step counters

    @property
    def count(self) -> int:
        return len(self.total_s)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


ENGINE_COUNTERS = ("num_steps", "num_prefill_steps", "busy_s")
# (table label, summary key) of the worker's step figures per path.
STEP_ROWS = (
    ("prefill steps/req", "worker_prefill_steps_per_request"),
    ("step ms, model", "worker_mean_step_ms"),
    ("step ms, wall", "worker_wall_per_step_ms"),
)


async def _engine_counters(session: aiohttp.ClientSession, worker: str) -> dict[str, float]:
    async with session.get(worker + "/stats") as r:
        stats = await r.json()
    return {key: stats[key] for key in ENGINE_COUNTERS}


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` onto `cpus` (affinity is per thread; threads made later inherit)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


def _spawn(
    argv: list[str],
    marker: str,
    timeout_s: float = 120.0,
    env: dict[str, str] | None = None,
    root: Path = ROOT,
) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=root, env=env)
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{argv[3]} exited with {proc.wait()}")
        match = URL.search(line)
        if match and marker in line:
            # Keep reading its output, or a chatty child blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, match.group(1)
    proc.kill()
    raise RuntimeError(f"{argv[3]} printed no URL")


def spawn_gateway(
    worker_url: str, env: dict[str, str], root: Path = ROOT
) -> tuple[subprocess.Popen, str]:
    """`kvgate gateway` over one worker on a free loopback port, config overrides in `env`;
    `root`: the checkout whose code runs (another one is a baseline gateway)."""
    argv = [sys.executable, "-m", "kvgate", "--log-level", "WARNING", "gateway", "--port", "0"]
    return _spawn([*argv, "--worker", worker_url], "listening", env=os.environ | env, root=root)


def stop(procs: list[subprocess.Popen]) -> None:
    """Terminate the benchmark's children, the last started first (gateways before workers)."""
    for proc in reversed(procs):
        proc.terminate()
        proc.wait(10)


def spawn_sim_worker(model: str, time_scale: float, *extra: str) -> tuple[subprocess.Popen, str]:
    """`kvgate sim-worker` on a free loopback port (more flags in `extra`); (process, URL)."""
    argv = [sys.executable, "-m", "kvgate", "sim-worker", "--host", "127.0.0.1", "--port", "0"]
    return _spawn([*argv, "--model", model, "--time-scale", str(time_scale), *extra], "http")


async def _one(session: aiohttp.ClientSession, url: str, body: bytes, out: Samples) -> None:
    start = time.perf_counter()
    ttft = None
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        if r.status != 200:
            out.errors += 1
            await r.read()
            return
        total = None
        async for line in r.content:
            if line.startswith(b"data:"):
                if ttft is None:
                    ttft = time.perf_counter() - start
                if line.startswith(b"data: [DONE]"):
                    # The reply's end for an OpenAI client (the SDK stops here); the loop still
                    # reads to the body's end so the connection goes back to the pool.
                    total = time.perf_counter() - start
    if total is None or ttft is None:
        out.errors += 1
        return
    out.ttft_s.append(ttft)
    out.total_s.append(total)


async def _batch(
    base: str,
    n: int,
    args: argparse.Namespace,
    body: bytes,
    out: Samples,
    pids: dict[str, int],
    worker: str | None = None,
) -> None:
    """`n` requests to `base` from `args.concurrency` closed-loop clients; the CPU time of
    `pids` and (with `worker`, the sim worker's URL) its step counters over the batch go to
    `out`."""
    url = base + "/v1/chat/completions"
    concurrency = args.concurrency
    queue = iter(range(n))
    rng = random.Random(n)  # the same think times on both paths
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            for _ in queue:
                # Think time: without it, closed-loop clients send their next request the
                # instant the worker's step ends, in lockstep with its schedule; any delay then
                # costs a whole engine step, which no real traffic pattern does.
                await asyncio.sleep(rng.uniform(0.0, args.think_ms / 1e3))
                await _one(session, url, body, out)

        counters = await _engine_counters(session, worker) if worker else {}
        cpu_before = {name: _cpu_s(pid) for name, pid in pids.items()}
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        out.wall_s += time.perf_counter() - start
        for name, pid in pids.items():
            out.cpu_s[name] = out.cpu_s.get(name, 0.0) + _cpu_s(pid) - cpu_before[name]
        if worker:
            after = await _engine_counters(session, worker)
            for key, value in after.items():
                out.engine[key] = out.engine.get(key, 0.0) + value - counters[key]


def _summary(s: Samples) -> dict[str, float]:
    return (
        {
            "requests": s.count,
            "errors": s.errors,
            "ttft_p50_ms": 1e3 * _pct(s.ttft_s, 0.50),
            "ttft_p99_ms": 1e3 * _pct(s.ttft_s, 0.99),
            "total_p50_ms": 1e3 * _pct(s.total_s, 0.50),
            "total_p99_ms": 1e3 * _pct(s.total_s, 0.99),
            "total_mean_ms": 1e3 * statistics.fmean(s.total_s),
            "throughput_rps": s.count / s.wall_s if s.wall_s else float("nan"),
        }
        | {f"{name}_cpu_ms_per_request": 1e3 * cpu / s.count for name, cpu in s.cpu_s.items()}
        | (
            {
                "worker_steps_per_request": s.engine["num_steps"] / s.count,
                "worker_prefill_steps_per_request": s.engine["num_prefill_steps"] / s.count,
                # Modelled step time, and wall time per step (the worker never idles in a round):
                # the gap is the engine's own overhead per step (Python, sleep overshoot, waiting
                # for a core).
                "worker_mean_step_ms": 1e3 * s.engine["busy_s"] / max(1, s.engine["num_steps"]),
                "worker_wall_per_step_ms": 1e3 * s.wall_s / max(1, s.engine["num_steps"]),
            }
            if s.engine
            else {}
        )
    )


def stream_body(model: str, max_tokens: int) -> bytes:
    """The benchmarks' streamed chat request: one short user turn, `max_tokens` tokens back."""
    message = {"role": "user", "content": "Say something about paged attention."}
    return json.dumps(
        {"model": model, "messages": [message], "max_tokens": max_tokens, "stream": True}
    ).encode()


async def _measure(
    args: argparse.Namespace,
    worker: str,
    gateway: str,
    pids: dict[str, int],
    baseline: str | None = None,
) -> dict[str, object]:
    body = stream_body(args.model, args.max_tokens)
    direct, through = Samples(), Samples()
    warm_up = args.concurrency * 2
    await _batch(worker, warm_up, args, body, Samples(), {})
    await _batch(gateway, warm_up, args, body, Samples(), {})
    per_round = args.requests // args.rounds
    for i in range(args.rounds):
        order = [(worker, direct), (gateway, through)]
        for base, samples in order if i % 2 == 0 else order[::-1]:
            await _batch(base, per_round, args, body, samples, pids, worker)
    d, g = _summary(direct), _summary(through)
    result: dict[str, object] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "direct": d,
        "gateway": g,
        "added_ms": _added(d, g),
        "throughput_ratio": g["throughput_rps"] / d["throughput_rps"],
        # What longer worker steps alone add to a reply of `max_tokens` tokens (one step each):
        # modelled (more steps carry prefill) and in wall time (plus the engine's overhead).
        "longer_steps_ms": {
            key: (g[key] - d[key]) * (args.max_tokens - 1)
            for key in ("worker_mean_step_ms", "worker_wall_per_step_ms")
        },
    }
    if args.interleaved:
        paths = [(worker, Samples()), (gateway, Samples())]
        if baseline is not None:
            paths.append((baseline, Samples()))
        await _mixed(paths, args.interleaved, args, body)
        md, mg = _summary(paths[0][1]), _summary(paths[1][1])
        mixed = {"direct": md, "gateway": mg, "added_ms": _added(md, mg)}
        if baseline is not None:
            mb = _summary(paths[2][1])
            mixed |= {"baseline": mb, "baseline_added_ms": _added(md, mb)}
        result["interleaved"] = mixed
    result["gateway_own_ms"] = await _own_time(gateway)
    return result


async def _own_time(gateway: str) -> dict[str, dict[str, float]]:
    """The gateway's own time per phase over the whole run (its `kvgate_gateway_own_seconds`
    histogram): mean, and p50 / p99 read off the buckets (linear within a bucket)."""
    async with aiohttp.ClientSession() as session, session.get(gateway + "/metrics") as r:
        text = await r.text()
    buckets: dict[str, list[tuple[float, float]]] = {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "kvgate_gateway_own_seconds":
            continue
        for s in family.samples:
            phase = s.labels.get("phase", "")
            if s.name.endswith("_bucket"):
                buckets.setdefault(phase, []).append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_sum"):
                sums[phase] = s.value
    out = {}
    for phase, cumulative in buckets.items():
        cumulative.sort()
        count = cumulative[-1][1]
        if count:
            out[phase] = {
                "requests": count,
                "mean_ms": 1e3 * sums[phase] / count,
                "p50_ms": 1e3 * _bucket_quantile(cumulative, 0.50),
                "p99_ms": 1e3 * _bucket_quantile(cumulative, 0.99),
            }
    return out


def _bucket_quantile(cumulative: list[tuple[float, float]], q: float) -> float:
    target = q * cumulative[-1][1]
    lower_edge, below = 0.0, 0.0
    for edge, count in cumulative:
        if count >= target:
            if edge == float("inf"):
                return lower_edge
            return lower_edge + (edge - lower_edge) * (target - below) / max(count - below, 1e-9)
        lower_edge, below = edge, count
    return lower_edge


def _added(d: dict[str, float], g: dict[str, float]) -> dict[str, float]:
    return {k: g[k] - d[k] for k in ("ttft_p50_ms", "ttft_p99_ms", "total_p50_ms", "total_p99_ms")}


async def _mixed(
    paths: list[tuple[str, Samples]], n: int, args: argparse.Namespace, body: bytes
) -> None:
    """`n` requests per path at once: each client takes the paths in turn, request by request
    (the clients start on different paths), so every path shares the worker's batch, the
    machine's load and the clients' phase against the engine steps at every moment. Latency
    only: the paths' throughputs are not separable here."""
    urls = [base + "/v1/chat/completions" for base, _ in paths]
    rng = random.Random(n)
    remaining = [n] * len(paths)
    connector = aiohttp.TCPConnector(limit=len(paths) * args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(turn: int) -> None:
            while any(remaining):
                while not remaining[turn]:
                    turn = (turn + 1) % len(paths)
                remaining[turn] -= 1
                await asyncio.sleep(rng.uniform(0.0, args.think_ms / 1e3))
                await _one(session, urls[turn], body, paths[turn][1])
                turn = (turn + 1) % len(paths)

        await asyncio.gather(*(client(i % len(paths)) for i in range(args.concurrency)))


def _table(result: dict[str, object]) -> str:
    d, g, a = result["direct"], result["gateway"], result["added_ms"]
    rows = [f"{'metric':<16}{'direct':>12}{'gateway':>12}{'added':>12}"]
    for key in ("ttft_p50_ms", "ttft_p99_ms", "total_p50_ms", "total_p99_ms"):
        rows.append(f"{key:<16}{d[key]:>12.2f}{g[key]:>12.2f}{a[key]:>+12.2f}")
    rows.append(
        f"{'throughput_rps':<16}{d['throughput_rps']:>12.1f}{g['throughput_rps']:>12.1f}"
        f"{'x' + format(result['throughput_ratio'], '.3f'):>12}"
    )
    rows.append(f"{'errors':<16}{d['errors']:>12}{g['errors']:>12}")
    for name in ("worker", "gateway", "client"):
        key = f"{name}_cpu_ms_per_request"
        rows.append(f"{name + ' cpu ms/req':<16}{d[key]:>12.3f}{g[key]:>12.3f}")
    for label, key in STEP_ROWS:
        rows.append(f"{label:<16}{d[key]:>12.3f}{g[key]:>12.3f}")
    longer = result["longer_steps_ms"]
    rows.append(
        f"longer steps add to a reply: {longer['worker_mean_step_ms']:+.2f} ms modelled, "
        f"{longer['worker_wall_per_step_ms']:+.2f} ms in wall time"
    )
    for phase, own in result.get("gateway_own_ms", {}).items():
        rows.append(
            f"gateway own time, {phase}: mean {own['mean_ms']:.3f} ms, "
            f"p50 ~{own['p50_ms']:.3f}, p99 ~{own['p99_ms']:.3f} ({own['requests']:.0f} requests)"
        )
    mixed = result.get("interleaved")
    if mixed:
        md, mg, ma = mixed["direct"], mixed["gateway"], mixed["added_ms"]
        rows.append(f"interleaved by request ({md['requests']} + {mg['requests']} requests):")
        for key in ("ttft_p50_ms", "ttft_p99_ms", "total_p50_ms", "total_p99_ms"):
            rows.append(f"{key:<16}{md[key]:>12.2f}{mg[key]:>12.2f}{ma[key]:>+12.2f}")
        rows.append(f"{'errors':<16}{md['errors']:>12}{mg['errors']:>12}")
        if "baseline" in mixed:
            mb, ba = mixed["baseline"], mixed["baseline_added_ms"]
            rows.append(f"baseline gateway, same interleaving ({mb['requests']} requests):")
            for key in ("ttft_p50_ms", "ttft_p99_ms", "total_p50_ms", "total_p99_ms"):
                rows.append(f"{key:<16}{md[key]:>12.2f}{mb[key]:>12.2f}{ba[key]:>+12.2f}")
            rows.append(f"{'errors':<16}{md['errors']:>12}{mb['errors']:>12}")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="per path (direct, gateway)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=4, help="alternations of direct/gateway")
    p.add_argument("--time-scale", type=float, default=1.0, help="sim worker speed (1 = A100)")
    p.add_argument("--think-ms", type=float, default=20.0, help="uniform 0..N ms before a request")
    p.add_argument("--model", default="sim-llama")
    p.add_argument(
        "--pin",
        action="store_true",
        help="worker on CPU 0, gateway and load generator on the others (as when the worker is "
        "another machine: the gateway's CPU then cannot slow the worker's steps)",
    )
    p.add_argument("--routing", default="", help="the gateway's routing type (default: its own)")
    p.add_argument(
        "--semantic-cache",
        choices=("off", "on"),
        default="off",
        help="the gateway's semantic cache (off: measure the relay alone; on: add its lookup)",
    )
    p.add_argument(
        "--interleaved",
        type=int,
        default=0,
        help="after the rounds, N more requests per path with every client alternating direct / "
        "gateway request by request (latency under identical conditions; 0 = skip)",
    )
    p.add_argument(
        "--baseline-root",
        type=Path,
        help="another checkout of kvgate (e.g. a git worktree of an older commit): its gateway, "
        "over the same worker, joins the interleaved requests as a third path",
    )
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    procs: list[subprocess.Popen] = []
    try:
        worker, worker_url = spawn_sim_worker(args.model, args.time_scale)
        procs.append(worker)
        enabled = "true" if args.semantic_cache == "on" else "false"
        gateway, gateway_url = spawn_gateway(
            worker_url,
            {"KVGATE__GATEWAY__SEMANTIC_CACHE__ENABLED": enabled}
            | ({"KVGATE__GATEWAY__ROUTING__TYPE": args.routing} if args.routing else {}),
        )
        procs.append(gateway)
        baseline_url = None
        if args.baseline_root is not None:
            baseline, baseline_url = spawn_gateway(
                worker_url,
                {"KVGATE__GATEWAY__SEMANTIC_CACHE__ENABLED": enabled},
                root=args.baseline_root.resolve(),
            )
            procs.append(baseline)
        pids = {"worker": worker.pid, "gateway": gateway.pid, "client": os.getpid()}
        if args.pin:
            rest = set(range(1, os.cpu_count() or 2)) or {0}
            _pin(worker.pid, {0})
            _pin(gateway.pid, rest)
            _pin(os.getpid(), rest)
        result = asyncio.run(_measure(args, worker_url, gateway_url, pids, baseline_url))
    finally:
        stop(procs)
    print(_table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
