"""What metrics=True and tracing=True cost: calls/s and instructions per call, one run.

    python bench/observability.py [--seconds 2] [--rounds 3] [--no-callgrind]
        [--no-remote] [--modes 'metrics;1%;0%']

Each mode runs a gateway and a client in this process, over a real loopback socket,
with the option on both sides (so the figure is what a call costs its client and its
server together), 100 calls in flight, payload 10 bytes, the bench service's echo:

- ``off``: no option (the default);
- ``metrics``: ``metrics=True`` (a registry of its own);
- ``tracing``: ``tracing=`` an OpenTelemetry SDK TracerProvider recording every span,
  exported by a SimpleSpanProcessor to an exporter that drops them (the SDK's cost
  without a backend's);
- ``tracing, 1% sampled``: the same provider with the SDK's standard
  ``ParentBased(TraceIdRatioBased(0.01))`` sampler;
- ``tracing, 1% sampled, batch``: the same with a BatchSpanProcessor (the SDK's
  production default: spans queued, exported in batches by a thread of its own, whose
  CPU time counts in calls per CPU second);
- ``tracing, 0% sampled``: the same provider with the ALWAYS_OFF sampler (no span is
  made, the context still travels);
- ``metrics + tracing``.

Then calls/s with the server in its own process (``serve``, with ``--metrics-port 0``
for metrics), the client here: off against metrics on both sides.

calls/s: the modes take turns, ``--rounds`` times, and the median of each is printed
with its ratio to ``off`` (the machine is shared and noisy: compare rows of one run),
beside the calls per CPU second of this process (client and server are both here, so
that is what a call costs them; being descheduled by other work moves it least).
Instructions per call: ``valgrind --tool=callgrind`` counts the instructions of the
whole process for N and for 3N calls; the difference over 2N is the cost of one call
(start-up and warm-up cancel out).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pomelo_rpc  # noqa: E402
from pomelo_rpc import callgrind, client, server  # noqa: E402
from pomelo_rpc.bench import REMOTE, make_calls, measure  # noqa: E402

MODES = ("off", "metrics", "tracing", "tracing, 1% sampled", "tracing, 1% sampled, batch",
         "tracing, 0% sampled", "metrics + tracing")
CONCURRENCY = 100


def options(mode: str) -> dict[str, Any]:
    """The options a mode gives both the gateway and the client."""
    opts: dict[str, Any] = {}
    if "metrics" in mode:
        from prometheus_client import CollectorRegistry
        opts.update(metrics=True, metrics_registry=CollectorRegistry())
    if "tracing" in mode:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (BatchSpanProcessor, SimpleSpanProcessor,
                                                    SpanExporter, SpanExportResult)
        from opentelemetry.sdk.trace.sampling import (ALWAYS_OFF, ALWAYS_ON, ParentBased,
                                                      TraceIdRatioBased)

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        sampler = (ALWAYS_OFF if "0%" in mode else ParentBased(TraceIdRatioBased(0.01))
                   if "1%" in mode else ALWAYS_ON)
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(BatchSpanProcessor(Drop()) if "batch" in mode
                                    else SimpleSpanProcessor(Drop()))
        opts["tracing"] = provider
    return opts


async def run_mode(mode: str, seconds: float = 0.0, calls: int = 0) -> dict[str, float]:
    """One gateway + client in ``mode``: measure for ``seconds``, or make exactly
    ``calls`` calls (after a warm-up) for the instruction count."""
    opts = options(mode)
    gw = server.create(paths=[{"namespace": "user", "path": REMOTE}],
                       context={"server_id": "bench-1"}, **opts)
    await gw.start()
    cli = client.create(timeout=30, **opts)
    cli.add_proxies([{"namespace": "user", "server_type": "bench", "path": REMOTE}])
    cli.add_servers([{"id": "bench-1", "server_type": "bench", "port": gw.port}])
    await cli.start()
    echo = cli.proxies.user.bench.bench.echo

    def call(payload: Any) -> Any:
        return echo.to_server("bench-1", payload)
    try:
        if seconds:
            await measure(call, CONCURRENCY, min(0.3, seconds), 10)
            cpu = time.process_time()
            result = await measure(call, CONCURRENCY, seconds, 10)
            result["calls_per_cpu_s"] = result["calls"] / (time.process_time() - cpu)
            return result
        await make_calls(call, 300, CONCURRENCY)           # warm-up, then the counted calls
        await make_calls(call, calls, CONCURRENCY)
        return {"calls": calls}
    finally:
        await cli.stop()
        await gw.stop()
        if "tracing" in opts:
            opts["tracing"].shutdown()      # a BatchSpanProcessor's thread with it


async def run_remote(port: int, metrics: bool, seconds: float) -> dict[str, float]:
    """A client (``metrics`` on or off) in this process against a server process."""
    opts = options("metrics") if metrics else {}
    cli = client.create(timeout=30, **opts)
    cli.add_proxies([{"namespace": "user", "server_type": "bench", "path": REMOTE}])
    cli.add_servers([{"id": "bench-1", "server_type": "bench", "port": port}])
    await cli.start()
    echo = cli.proxies.user.bench.bench.echo

    def call(payload: Any) -> Any:
        return echo.to_server("bench-1", payload)
    try:
        await measure(call, CONCURRENCY, min(0.3, seconds), 10)
        return await measure(call, CONCURRENCY, seconds, 10)
    finally:
        await cli.stop()


def throughput_two_processes(seconds: float, rounds: int) -> dict[str, float]:
    """Median calls/s, client here and server in its own process: both off, or metrics
    on both (the server with ``serve --metrics-port 0``)."""
    from pomelo_rpc import processes
    plain, plain_port = processes.start_server("plain", "bench", REMOTE)
    metered, metered_port = processes.start([
        sys.executable, "-m", "pomelo_rpc", "serve", "--server-id", "metered",
        "--server-type", "bench", "--remote", f"user={REMOTE}", "--metrics-port", "0"])
    runs: dict[str, list[float]] = {"off": [], "metrics": []}
    try:
        for _ in range(rounds):
            for mode, port in (("off", plain_port), ("metrics", metered_port)):
                r = pomelo_rpc.run(run_remote(port, mode == "metrics", seconds))
                runs[mode].append(r["calls_per_s"])
    finally:
        processes.stop_all([plain, metered])
    return {mode: statistics.median(values) for mode, values in runs.items()}


def throughput(seconds: float, rounds: int,
               modes: Sequence[str] = MODES) -> dict[str, tuple[float, float]]:
    """Median calls/s and calls per CPU second (this process's: the figure that being
    descheduled on a busy machine moves least) of each mode, the modes taking turns
    ``rounds`` times."""
    runs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode in modes:
            r = pomelo_rpc.run(run_mode(mode, seconds=seconds))
            runs[mode].append((r["calls_per_s"], r["calls_per_cpu_s"]))
    return {mode: (statistics.median(v[0] for v in values),
                   statistics.median(v[1] for v in values))
            for mode, values in runs.items()}


def per_call(mode: str, calls: int) -> float:
    """Instructions of one call in ``mode`` (client and server together; runs of
    ``calls`` and ``3 * calls`` subtracted by pomelo_rpc.callgrind)."""
    return callgrind.per_op(
        lambda n: [sys.executable, os.path.abspath(__file__), "--count", mode, str(n)], calls)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table (and run one counted mode when called with ``--count``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each cell")
    parser.add_argument("--rounds", type=int, default=3, help="turns of every mode")
    parser.add_argument("--calls", type=int, default=2000,
                        help="N of the instruction count (N and 3N calls)")
    parser.add_argument("--no-callgrind", action="store_true")
    parser.add_argument("--no-remote", action="store_true",
                        help="skip the two-process rows")
    parser.add_argument("--modes", default="",
                        help="';'-separated: modes named, or containing, each (default: "
                             f"all of {'; '.join(MODES)})")
    parser.add_argument("--count", nargs=2, metavar=("MODE", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count:
        pomelo_rpc.run(run_mode(args.count[0], calls=int(args.count[1])))
        return 0
    print(f"pomelo_rpc {pomelo_rpc.__version__}, {pomelo_rpc.IMPLEMENTATION} core, "
          f"client and server in one process, {CONCURRENCY} in flight, payload 10 B")
    wanted = [w.strip() for w in args.modes.split(";") if w.strip()]
    modes = [m for m in MODES if any(w == m if w in MODES else w in m for w in wanted)
             ] if wanted else list(MODES)
    if "off" not in modes:
        modes.insert(0, "off")
    rates = throughput(args.seconds, args.rounds, modes)
    counted = not args.no_callgrind and callgrind.available()
    cost = {mode: per_call(mode, args.calls) for mode in modes} if counted else {}
    print(f"{'mode':<27} {'calls/s':>9} {'vs off':>7} {'per CPU-s':>10} {'vs off':>7} "
          f"{'instr/call':>11} {'vs off':>7}")
    off, off_cpu = rates["off"]
    for mode in modes:
        rate, cpu = rates[mode]
        line = f"{mode:<27} {rate:>9,.0f} {rate / off:>7.3f} {cpu:>10,.0f} {cpu / off_cpu:>7.3f}"
        if cost:
            line += f" {cost[mode]:>11,.0f} {cost[mode] / cost['off']:>7.3f}"
        print(line)
    if not counted:
        print("(instructions per call: needs valgrind)")
    if args.no_remote:
        return 0
    remote = throughput_two_processes(args.seconds, args.rounds)
    print(f"\nclient here, server in its own process (metrics on both sides, or off):")
    for mode, rate in remote.items():
        print(f"{mode:<27} {rate:>9,.0f} {rate / remote['off']:>7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
