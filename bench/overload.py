"""Goodput under overload: calls answered within their deadline per second, against the
offered load, with and without deadlines, admission and fairness.

    python bench/overload.py [--seconds 3] [--work-ms 1] [--timeout 1] \
        [--loads 0.5,1,2,5,10] [--max-in-flight 100] [--core cython|python] [--json] \
        [--plot overload.png]

The server (its own process, ``python -m pomelo_rpc serve``) runs ``burn``: ``--work-ms``
of CPU per call. Capacity is measured first: calls/s with 256 calls kept in flight
against a server with the default options (enough in flight that the server never
waits for this client, even when the machine is shared).
Then, per offered load (a multiple of that capacity) and per configuration, a fresh
server process is sent calls at that rate for ``--seconds`` (open loop: calls start on
schedule whether or not earlier ones were answered), each with ``--timeout`` s:

- ``with``: ``--max-in-flight N``, the callers' budgets honoured, 3 ms handler slices
  (the defaults but for max_in_flight, which is off by default);
- ``without``: what came before these features: no max_in_flight, budgets ignored
  (``--no-deadlines``), no slices (``--handler-slice 1000``).

Per cell: goodput (answered in time per second) and its ratio to capacity, p99 of the
calls answered in time, the calls refused busy or timed out, and the server's peak
RSS. This process is the client. Capacity is measured again before the cells of each
load (a shared machine's speed drifts during a run); the ratios are to the median of
those measures. With ``--rounds R`` every load is measured R times, in turn, and each
figure is the median of its rounds.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pomelo_rpc  # noqa: E402
from pomelo_rpc import bench, client, processes  # noqa: E402
from pomelo_rpc.errors import RpcTimeoutError, ServerBusyError  # noqa: E402

CONFIGS = ("with", "without")


def server_flags(config, max_in_flight):
    """``serve`` options of a configuration (None: the defaults)."""
    if config == "with":
        return ["--max-in-flight", str(max_in_flight)]
    if config == "without":
        return ["--no-deadlines", "--handler-slice", "1000"]
    return []


def start_server(config, max_in_flight, pure):
    """A fresh server process for one cell: (process, port)."""
    return processes.start(
        [sys.executable, "-m", "pomelo_rpc", "serve", "--server-id", f"ovl-{config}",
         "--server-type", "bench", "--remote", f"user={bench.REMOTE}"]
        + server_flags(config, max_in_flight), pure)


class PeakRss:
    """Samples a process's RSS every 20 ms in a thread; ``peak`` in MB."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, processes.rss_kb(self.pid) / 1024)
            except (OSError, RuntimeError):
                return
            self._stop.wait(0.02)

    def stop(self):
        """Stop sampling; return the peak in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak


async def connect(port, core, timeout):
    """A started client of the bench server at ``port`` and its ``burn`` proxy."""
    cli = client.create(core=core, timeout=timeout, pending_size=1_000_000)
    cli.add_proxies([{"namespace": "user", "server_type": "bench", "path": bench.REMOTE}])
    cli.add_servers([{"id": "b", "server_type": "bench", "port": port}])
    await cli.start()
    return cli, cli.proxies.user.bench.bench.burn


async def capacity(port, core, work_ms, seconds):
    """Calls/s of ``burn`` with 256 calls in flight (the server's capacity)."""
    cli, burn = await connect(port, core, 30.0)
    try:
        def call(_payload):
            return burn.to_server("b", work_ms)
        await bench.measure(call, 256, 1.0, 10)          # warm-up
        return (await bench.measure(call, 256, seconds, 10))["calls_per_s"]
    finally:
        await cli.stop()


async def offer(port, core, work_ms, rate, seconds, timeout):
    """Send ``rate`` calls/s for ``seconds`` (open loop); outcomes and latencies.

    The calls go straight to the server's mailbox, a future each (no task per call):
    the load generator must cost little next to the server it measures."""
    cli, burn = await connect(port, core, timeout)
    await burn.to_server("b", 0)
    mailbox = cli._station.mailbox("b")
    msg = {"namespace": "user", "server_type": "bench", "service": "bench",
           "method": "burn", "args": [work_ms]}
    ok = []
    counts = {"busy": 0, "timeout": 0, "error": 0}
    clock = time.perf_counter

    def done(fut, t0):
        exc = fut.exception()
        if exc is None:
            elapsed = clock() - t0
            if elapsed <= timeout:
                ok.append(elapsed)
            else:
                counts["timeout"] += 1
        elif isinstance(exc, ServerBusyError):
            counts["busy"] += 1
        elif isinstance(exc, RpcTimeoutError):
            counts["timeout"] += 1
        else:
            counts["error"] += 1
    futures = []
    start = clock()
    sent = 0
    while True:
        now = clock() - start
        if now >= seconds:
            break
        due = int(rate * now) - sent
        for _ in range(due):
            fut = mailbox.send(msg, timeout)
            fut.add_done_callback(lambda f, t0=clock(): done(f, t0))
            futures.append(fut)
        sent += max(due, 0)
        await asyncio.sleep(0.001)
    await asyncio.wait(futures)
    await cli.stop()
    ok.sort()
    p99 = ok[min(len(ok) - 1, int(0.99 * len(ok)))] * 1000 if ok else float("nan")
    return {"sent": sent, "ok": len(ok), "goodput": len(ok) / seconds, "p99_ms": p99, **counts}


async def cell(config, load, cap, args):
    """One offered load against a fresh server of ``config``."""
    proc, port = start_server(config, args.max_in_flight, args.core == "python")
    rss = PeakRss(proc.pid)
    try:
        row = await offer(port, args.core, args.work_ms, load * cap, args.seconds, args.timeout)
    finally:
        peak = rss.stop()
        proc.kill()
        proc.wait()
    row.update(config=config, load=load, offered=load * cap, server_peak_mb=peak)
    return row


async def run(args):
    """Capacity, then every (load, configuration) cell."""
    proc, port = start_server(None, args.max_in_flight, args.core == "python")
    try:
        cap = await capacity(port, args.core, args.work_ms, args.seconds)
    finally:
        processes.stop_all([proc])
    runs = {}
    caps = [cap]
    for _round in range(args.rounds):
        for load in args.loads:
            proc, port = start_server(None, args.max_in_flight, args.core == "python")
            try:
                now = await capacity(port, args.core, args.work_ms, min(args.seconds, 2.0))
            finally:
                processes.stop_all([proc])
            caps.append(now)
            for config in CONFIGS:
                row = await cell(config, load, cap, args)
                runs.setdefault((load, config), []).append(row)
    rows = [median_row(group) for group in runs.values()]
    cap = statistics.median(caps)
    for row in rows:
        row.update(capacity=cap, goodput_ratio=row["goodput"] / cap)
    if not args.json:
        for row in rows:
            print_row(row)
    return cap, rows


def median_row(group):
    """The median of each figure of a cell's rounds."""
    out = dict(group[0])
    for key, value in group[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in group)
    out["rounds"] = len(group)
    return out


def print_row(r):
    """One line of the table."""
    print(f"{r['load']:>5.1f}x  {r['config']:<8} goodput {r['goodput']:6.0f}/s "
          f"({r['goodput_ratio']:6.1%})  p99 {r['p99_ms']:6.1f} ms  "
          f"busy {r['busy']:6.0f}  timeout {r['timeout']:6.0f}  "
          f"server {r['server_peak_mb']:6.1f} MB",
          flush=True)


def plot(cap, rows, path):
    """Goodput against offered load, one line per configuration (needs matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'pomelo-rpc[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for config in CONFIGS:
        pts = [(r["load"], r["goodput"]) for r in rows if r["config"] == config]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=config)
    ax.axhline(cap, color="grey", linestyle="--", label=f"capacity {cap:.0f}/s")
    ax.set_xscale("log")
    ax.set_xlabel("offered load (× capacity)")
    ax.set_ylabel("goodput (answered within deadline / s)")
    ax.set_title("pomelo_rpc under overload: deadlines, max_in_flight, fairness")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    """Measure, print (or ``--json``), and ``--plot``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each cell")
    parser.add_argument("--work-ms", type=float, default=1.0, help="CPU per call, ms")
    parser.add_argument("--timeout", type=float, default=1.0, help="each call's timeout, s")
    parser.add_argument("--loads", type=lambda s: [float(x) for x in s.split(",")],
                        default=[0.5, 1, 2, 5, 10], help="offered loads, × capacity")
    parser.add_argument("--max-in-flight", type=int, default=100,
                        help="max_in_flight of the 'with' server")
    parser.add_argument("--rounds", type=int, default=1, help="measures of each cell")
    parser.add_argument("--core", default=pomelo_rpc.IMPLEMENTATION)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--plot", metavar="FILE", help="write a PNG chart (needs matplotlib)")
    args = parser.parse_args()
    if not args.json:
        print(f"burn({args.work_ms:g} ms), timeout {args.timeout:g} s, {args.seconds:g} s "
              f"per cell, {args.core} core, 'with': max_in_flight {args.max_in_flight}",
              flush=True)
    cap, rows = pomelo_rpc.run(run(args))
    if args.json:
        print(json.dumps({"capacity": cap, "rows": rows}, indent=1))
    else:
        print(f"capacity: {cap:.0f} calls/s (median of the measures)")
    if args.plot:
        plot(cap, rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
