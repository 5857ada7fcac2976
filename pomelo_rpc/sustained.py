"""Sustained load: calls/s and memory interval by interval, minutes past the call timeouts.

``python -m pomelo_rpc bench --sustained SECONDS`` runs it for each core and transport;
``bench/soak.py`` prints the same columns for its mixed load. A game server runs for
weeks, so what matters is that the last interval keeps up with the best one (a cost
that grows with uptime shows as a falling ratio) and that memory stays flat once warm.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from . import client, processes
from .options import CLIENT_DEFAULTS

HERE = os.path.dirname(os.path.abspath(__file__))
REMOTE = os.path.join(HERE, "bench_remote")

#: the soak's and the bench's pass marks: last interval / best, and RSS growth after warm-up
MIN_RATIO = 0.8
MAX_GROWTH_MB = 2.0


@dataclass
class Sample:
    """One interval of a sustained run."""

    t: float                  # seconds since the start, at the end of the interval
    calls: int                # calls ended in the interval
    calls_per_s: float
    client_kb: int
    server_kb: int
    in_flight: int            # the client's request table
    slots: int                # its deadline slots
    calls_per_cpu_s: float    # calls per CPU second of client and server together: a cost
    #                           that grows shows here even when other processes share the
    #                           machine and move calls/s up and down


@dataclass
class Report:
    """A sustained run: its samples and the figures its verdict rests on."""

    samples: list[Sample] = field(default_factory=list)
    errors: int = 0

    @property
    def ratio(self) -> float:
        """calls/s of the last interval over the best one."""
        best = max(s.calls_per_s for s in self.samples)
        return self.samples[-1].calls_per_s / best if best else 0.0

    @property
    def cpu_ratio(self) -> float:
        """calls per CPU second of the last interval over the best one."""
        best = max(s.calls_per_cpu_s for s in self.samples)
        return self.samples[-1].calls_per_cpu_s / best if best else 0.0

    def span_ratio(self, span: float = 60.0) -> float | None:
        """Mean calls/s of the last ``span`` seconds over the first ``span`` seconds (None
        for a run shorter than two spans)."""
        samples = self.samples
        if not samples or samples[-1].t < 2 * span - 1:
            return None
        n = max(1, round(span / samples[0].t))      # intervals per span
        first = sum(s.calls for s in samples[:n]) / samples[n - 1].t
        last = sum(s.calls for s in samples[-n:]) / (samples[-1].t - samples[-n - 1].t)
        return last / first if first else 0.0

    def growth_mb(self, which: str) -> float:
        """RSS growth of ``which`` ("client" or "server") from the end of the first third
        of the run (after warm-up) to the end, in MB."""
        ref = self.samples[len(self.samples) // 3]
        end = self.samples[-1]
        if which == "client":
            return (end.client_kb - ref.client_kb) / 1024
        return (end.server_kb - ref.server_kb) / 1024

    def failures(self, min_ratio: float = MIN_RATIO,
                 max_growth_mb: float = MAX_GROWTH_MB) -> list[str]:
        """What failed the pass marks (empty: passed)."""
        out = []
        if self.ratio < min_ratio:
            out.append(f"last interval {self.ratio:.2f} of the best calls/s (< {min_ratio})")
        if self.cpu_ratio < min_ratio:
            out.append(f"last interval {self.cpu_ratio:.2f} of the best calls per CPU second "
                       f"(< {min_ratio})")
        if len(self.samples) >= 3:
            for which in ("client", "server"):
                growth = self.growth_mb(which)
                if growth > max_growth_mb:
                    out.append(f"{which} RSS grew {growth:+.1f} MB (> {max_growth_mb})")
        if self.errors:
            out.append(f"{self.errors} calls failed")
        return out


def header(out: TextIO) -> None:
    """Print the column names of ``print_sample``."""
    print(f"{'t(s)':>6} {'calls/s':>9} {'calls/cpu-s':>11} {'client kB':>10} {'server kB':>10} "
          f"{'in flight':>9} {'slots':>6}", file=out, flush=True)


def print_sample(s: Sample, out: TextIO) -> None:
    """Print one interval."""
    print(f"{s.t:6.0f} {s.calls_per_s:9.0f} {s.calls_per_cpu_s:11.0f} {s.client_kb:10d} "
          f"{s.server_kb:10d} {s.in_flight:9d} {s.slots:6d}", file=out, flush=True)


def summary(report: Report, out: TextIO) -> None:
    """Print the ratio, the memory growth and the verdict."""
    minute = report.span_ratio()
    if minute is not None:
        print(f"last minute / first minute calls/s: {minute:.2f}", file=out)
    print(f"last/best calls/s: {report.ratio:.2f}, calls per CPU second: "
          f"{report.cpu_ratio:.2f}; RSS growth after warm-up: client "
          f"{report.growth_mb('client'):+.1f} MB, server {report.growth_mb('server'):+.1f} MB"
          f"; {', '.join(report.failures()) or 'ok'}", file=out, flush=True)


async def sample_while(done: Callable[[], int], cli: client.RpcClient, server_id: str,
                       server_pid: int, seconds: float, every: float,
                       out: TextIO | None) -> Report:
    """Every ``every`` s for ``seconds`` s: calls ended (``done()``), calls/s, both RSS,
    and the request table of ``cli``'s mailbox to ``server_id``."""
    report = Report()
    if out is not None:
        header(out)
    loop = asyncio.get_running_loop()
    def cpu() -> float:
        return processes.cpu_seconds() + processes.cpu_seconds(server_pid)

    t0 = last_t = time.monotonic()
    start = loop.time()
    last, last_cpu = done(), cpu()
    for k in range(1, max(1, round(seconds / every)) + 1):
        # sample on a fixed grid of the loop clock, so late wake-ups do not accumulate
        await asyncio.sleep(max(0.0, start + k * every - loop.time()))
        now, calls, used = time.monotonic(), done(), cpu()
        mailbox: Any = cli._station.mailboxes.get(server_id)
        table = None if mailbox is None else mailbox.protocol.table
        s = Sample(now - t0, calls - last, (calls - last) / (now - last_t),
                   processes.rss_kb(), processes.rss_kb(server_pid),
                   len(table) if table is not None else 0,
                   table.slot_count if table is not None else 0,
                   (calls - last) / max(used - last_cpu, 1e-3))
        report.samples.append(s)
        if out is not None:
            print_sample(s, out)
        last, last_t, last_cpu = calls, now, used
    return report


async def run(seconds: float, transport: str = "native", pure: bool = False,
              concurrency: int = 100, every: float = 10.0,
              out: TextIO | None = None) -> Report:
    """``concurrency`` calls in flight of an ``async def`` method for ``seconds``, against
    a server process, with the client's default options (so its default timeout passes
    many times over); the server and this client on the same core."""
    proc, port = processes.start_server("sustained", "bench", REMOTE, transport, pure)
    cli = client.create(transport=transport, core="python" if pure else None)
    try:
        cli.add_proxies([{"namespace": "user", "server_type": "bench", "path": REMOTE}])
        cli.add_servers([{"id": "s", "server_type": "bench", "port": port}])
        await cli.start()
        aecho = cli.proxies.user.bench.bench.aecho.to_server
        payload = {"a": "run", "b": "x" * 10}
        count = [0, 0]      # ok, failed
        stop = False

        async def worker() -> None:
            while not stop:
                try:
                    await aecho("s", payload)
                    count[0] += 1
                except Exception:
                    count[1] += 1

        workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]

        try:
            report = await sample_while(lambda: count[0] + count[1], cli, "s", proc.pid,
                                        seconds, every, out)
        finally:
            stop = True
            await asyncio.gather(*workers, return_exceptions=True)
        report.errors = count[1]
        return report
    finally:
        await cli.stop()
        processes.stop_all([proc])


def run_all(seconds: float, transports: list[str], cores: list[str], every: float,
            out: TextIO) -> int:
    """``bench --sustained``: one run per core and transport, each printed; 1 if any failed."""
    import pomelo_rpc
    status = 0
    for core in cores:
        for transport in transports:
            print(f"\nsustained: {seconds:g} s, {transport}, {core} core, 100 calls in flight, "
                  f"client defaults (timeout {CLIENT_DEFAULTS['timeout']:g} s)",
                  file=out, flush=True)
            report = pomelo_rpc.run(run(seconds, transport, core == "python", every=every,
                                        out=out))
            summary(report, out)
            status |= bool(report.failures())
    return status


__all__ = ["Report", "Sample", "run", "run_all", "sample_while", "MIN_RATIO", "MAX_GROWTH_MB"]
