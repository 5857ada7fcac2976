"""``python -m pomelo_rpc bench``: end-to-end figures, beside a raw uvloop echo run in the same invocation.

Client and servers are separate processes on loopback. Every cell runs for a fixed
time; ratios compare cells of the same run only (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import msgpack

import pomelo_rpc
from pomelo_rpc import client, processes
from pomelo_rpc import core as _core

if TYPE_CHECKING:
    #: ``(call(payload) -> awaitable answer, close() -> None or an awaitable)`` of one cell
    Caller = tuple[Callable[[Any], Awaitable[Any]], Callable[[], "Awaitable[None] | None"]]

HERE = os.path.dirname(os.path.abspath(__file__))
REMOTE = os.path.join(HERE, "bench_remote")
_HDR = struct.Struct(">I")


def payload_of(size: int) -> dict[str, Any]:
    """The benchmark payload: ``{"a": "run", "b": "x" * size, "time": t}``."""
    return {"a": "run", "b": "x" * size, "time": time.time()}


# the raw baseline ------------------------------------------------------------

def _raw_messages(buf: bytes) -> tuple[list[Any], bytes]:
    """The whole length-prefixed ``[id, payload]`` messages at the front of ``buf``,
    and the bytes after them."""
    msgs = []
    off = 0
    n = len(buf)
    while n - off >= 4:
        (size,) = _HDR.unpack_from(buf, off)
        if n - off - 4 < size:
            break
        msgs.append(msgpack.unpackb(buf[off + 4:off + 4 + size]))
        off += 4 + size
    return msgs, buf[off:]


class _RawEchoServer(asyncio.Protocol):
    """Length-prefixed msgpack ``[id, payload]``: decode, re-encode, one write per call."""

    # asyncio gives a stream protocol an asyncio.Transport (typeshed: BaseTransport)
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        msgs, self.buf = _raw_messages(self.buf + data)
        for rid, body in msgs:
            out = msgpack.packb([rid, body])
            self.transport.write(_HDR.pack(len(out)) + out)


class _RawEchoClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.next_id = 0

    # asyncio gives a stream protocol an asyncio.Transport (typeshed: BaseTransport)
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        msgs, self.buf = _raw_messages(self.buf + data)
        for rid, body in msgs:
            self.waiting.pop(rid).set_result(body)

    def call(self, payload: Any) -> asyncio.Future[Any]:
        rid = self.next_id
        self.next_id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[rid] = fut
        out = msgpack.packb([rid, payload])
        self.transport.write(_HDR.pack(len(out)) + out)
        return fut


async def _raw_server_main(port_out: TextIO) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_RawEchoServer, "127.0.0.1", 0)
    print(json.dumps({"event": "listening", "port": server.sockets[0].getsockname()[1]}),
          file=port_out, flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


# processes -------------------------------------------------------------------

def start_raw_server() -> tuple[subprocess.Popen[str], int]:
    """Start the raw uvloop echo server process; return (process, port)."""
    return processes.start([sys.executable, "-m", "pomelo_rpc.bench", "raw-server"])


def start_rpc_server(server_id: str, transport: str = "native",
                     pure: bool = False) -> tuple[subprocess.Popen[str], int]:
    """Start a ``python -m pomelo_rpc serve`` process with the bench service
    (``pure``: with the pure-Python core)."""
    return processes.start_server(server_id, "bench", REMOTE, transport, pure)


stop_all = processes.stop_all


# measuring -------------------------------------------------------------------

async def measure(call: Callable[[Any], Awaitable[Any]], concurrency: int, seconds: float,
                  size: int) -> dict[str, float]:
    """Keep ``concurrency`` calls in flight for ``seconds``; return calls/s, p50, p99 (µs)."""
    latencies: list[float] = []
    payload = payload_of(size)
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds
    clock = time.perf_counter

    async def worker() -> None:
        while loop.time() < stop_at:
            t0 = clock()
            await call(payload)
            latencies.append(clock() - t0)

    t0 = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = clock() - t0
    latencies.sort()
    return {"calls_per_s": len(latencies) / elapsed,
            "p50_us": statistics.median(latencies) * 1e6,
            "p99_us": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e6,
            "calls": len(latencies)}


async def _raw_caller(port: int) -> Caller:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(_RawEchoClient, "127.0.0.1", port)
    return proto.call, proto.transport.close


async def _rpc_caller(ports: Sequence[int], transport: str, core: str | None = None,
                      routed: bool = False, timeout: float = 10.0) -> Caller:
    cli = client.create(transport=transport, timeout=timeout, core=core)
    cli.add_proxies([{"namespace": "user", "server_type": "bench", "path": REMOTE}])
    cli.add_servers([{"id": f"bench-{i}", "server_type": "bench", "port": port}
                     for i, port in enumerate(ports)])
    await cli.start()
    echo = cli.proxies.user.bench.bench.echo
    for i in range(len(ports)):
        await echo.to_server(f"bench-{i}", "warm")
    if routed:
        uid = iter(range(1 << 62))
        call = lambda payload: echo({"uid": next(uid)}, payload)  # noqa: E731
    else:
        call = lambda payload: echo.to_server("bench-0", payload)  # noqa: E731

    def close() -> asyncio.Future[None]:
        return asyncio.ensure_future(cli.stop())
    return call, close


async def run_cell(kind: str, ports: Sequence[int], concurrency: int, size: int, seconds: float,
                   transport: str = "native", core: str | None = None) -> dict[str, float]:
    """One measurement: ``kind`` is "raw", "rpc" or "rpc-routed". The calls' timeout is a
    third of the cell, so that deadlines pass (and their timer runs) while it measures."""
    if kind == "raw":
        call, close = await _raw_caller(ports[0])
    else:
        call, close = await _rpc_caller(ports, transport, core, routed=kind == "rpc-routed",
                                        timeout=max(0.2, seconds / 3))
    await measure(call, concurrency, min(0.3, seconds), size)          # warm-up
    result = await measure(call, concurrency, seconds, size)
    done = close()
    if done is not None:
        await done
    return result


def _client_process(args: list[Any]) -> None:
    """Run one cell in a child process (for the several-clients row); print its JSON."""
    kind, ports, conc, size, seconds, transport = args
    result = pomelo_rpc.run(run_cell(kind, ports, conc, size, seconds, transport))
    print(json.dumps(result), flush=True)


def multi_client(kind: str, ports: list[int], clients: int, concurrency: int, size: int,
                 seconds: float, transport: str = "native") -> dict[str, float]:
    """``clients`` client processes at once against ``ports``; summed calls/s, worst p50/p99."""
    spec = json.dumps([kind, ports, concurrency, size, seconds, transport])
    procs = [subprocess.Popen([sys.executable, "-m", "pomelo_rpc.bench", "client", spec],
                              stdout=subprocess.PIPE, text=True, env=processes.child_env())
             for _ in range(clients)]
    results = [json.loads(p.communicate(timeout=seconds + 60)[0]) for p in procs]
    return {"calls_per_s": sum(r["calls_per_s"] for r in results),
            "p50_us": max(r["p50_us"] for r in results),
            "p99_us": max(r["p99_us"] for r in results),
            "calls": sum(r["calls"] for r in results)}


# the matrix --------------------------------------------------------------------

async def run_matrix(seconds: float, transports: list[str], clients: int,
                     routed_servers: int) -> list[dict[str, Any]]:
    """Every row of the benchmark; returns a list of dicts."""
    rows: list[dict[str, Any]] = []
    procs: list[subprocess.Popen[str]] = []
    try:
        raw_proc, raw_port = start_raw_server()
        procs.append(raw_proc)
        servers: dict[str, int] = {}
        for transport in transports:
            proc, port = start_rpc_server(f"bench-{transport}", transport)
            procs.append(proc)
            servers[transport] = port
        for conc, size in ((1, 10), (100, 10), (100, 1000)):
            r = await run_cell("raw", [raw_port], conc, size, seconds)
            rows.append({"system": "raw uvloop echo", "transport": "raw", "concurrency": conc,
                         "size": size, **r})
            for transport in transports:
                r = await run_cell("rpc", [servers[transport]], conc, size, seconds, transport)
                rows.append({"system": f"pomelo_rpc {transport}", "transport": transport,
                             "concurrency": conc, "size": size, **r})
        if clients > 1:
            loop = asyncio.get_running_loop()
            r = await loop.run_in_executor(None, multi_client, "raw", [raw_port], clients, 100,
                                           10, seconds)
            rows.append({"system": f"raw uvloop echo, {clients} client processes",
                         "transport": "raw", "concurrency": 100 * clients, "size": 10, **r})
            r = await loop.run_in_executor(None, multi_client, "rpc", [servers["native"]],
                                           clients, 100, 10, seconds)
            rows.append({"system": f"pomelo_rpc native, {clients} client processes",
                         "transport": "native", "concurrency": 100 * clients, "size": 10, **r})
        if routed_servers > 1:
            ports: list[int] = []
            for i in range(routed_servers):
                proc, port = start_rpc_server(f"routed-{i}")
                procs.append(proc)
                ports.append(port)
            r = await run_cell("rpc-routed", ports, 100, 10, seconds)
            rows.append({"system": f"pomelo_rpc native, routed over {routed_servers} servers",
                         "transport": "native", "concurrency": 100, "size": 10, **r})
        if "python" in _core.available() and pomelo_rpc.IMPLEMENTATION == "cython":
            proc, port = start_rpc_server("pure", pure=True)
            procs.append(proc)
            r = await run_cell("rpc", [port], 100, 10, seconds, core="python")
            rows.append({"system": "pomelo_rpc native, pure-Python core", "transport": "pure",
                         "concurrency": 100, "size": 10, **r})
    finally:
        stop_all(procs)
    return rows


def core_ratio(requests: int = 1000, repeat: int = 15) -> dict[str, float]:
    """The server's core path (decode, dispatch, encode ``requests`` frames) timed in this
    process for each core; best of ``repeat``. Empty if only one core is available."""
    names = _core.available()
    if len(names) < 2:
        return {}
    best: dict[str, float] = {}
    for name in names:
        c = _core.select(name)
        frames, dispatch = c.frames, c.dispatch
        d = dispatch.Dispatcher([("user", "bench", "echo", lambda x: x, 1, 1, False)])
        data = b"".join(frames.encode_request(i, 0, [payload_of(10)]) for i in range(requests))
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for msg in frames.FrameDecoder().feed(data):
                rid, _state, result = d.dispatch(msg)
                frames.encode_response(rid, result)
            times.append(time.perf_counter() - t0)
        best[name] = min(times)
    return {"core path (decode + dispatch + encode), Cython / pure-Python":
            best["python"] / best["cython"]}


async def memory_in_flight(port: int, calls: int = 10_000,
                           core: str | None = None) -> dict[str, float]:
    """Client RSS growth (MB) with ``calls`` held in flight by the server at ``port``."""
    import gc
    cli = client.create(timeout=60, pending_size=calls, core=core)
    cli.add_proxies([{"namespace": "user", "server_type": "bench", "path": REMOTE}])
    cli.add_servers([{"id": "mem", "server_type": "bench", "port": port}])
    await cli.start()
    hold = cli.proxies.user.bench.bench.hold
    await hold.to_server("mem", "warm", 0)
    gc.collect()
    idle = processes.rss_kb() / 1024
    pending = [asyncio.ensure_future(hold.to_server("mem", payload_of(10), 2.0))
               for _ in range(calls)]
    while cli.in_flight("mem") < calls:
        await asyncio.sleep(0.02)
    gc.collect()
    busy = processes.rss_kb() / 1024
    await asyncio.gather(*pending)
    await cli.stop()
    return {f"memory: {calls:,} calls in flight, MB over idle (target < 20)": busy - idle}


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The ratios the targets are stated in, from rows of one run."""
    def find(system: str, conc: int, size: int) -> dict[str, Any] | None:
        for r in rows:
            if r["system"] == system and r["concurrency"] == conc and r["size"] == size:
                return r
        return None

    out: dict[str, float] = {}
    pure, compiled = (find("pomelo_rpc native, pure-Python core", 100, 10),
                      find("pomelo_rpc native", 100, 10))
    if pure and compiled:
        out["native throughput, Cython core / pure-Python core, conc=100 size=10"] = (
            compiled["calls_per_s"] / pure["calls_per_s"])
    for transport in sorted({r["transport"] for r in rows} - {"raw", "pure"}):
        name = f"pomelo_rpc {transport}"
        for conc, size in ((100, 10), (100, 1000)):
            ours, raw = find(name, conc, size), find("raw uvloop echo", conc, size)
            if ours and raw:
                out[f"{transport} throughput / raw, conc={conc} size={size}"] = (
                    ours["calls_per_s"] / raw["calls_per_s"])
        ours, raw = find(name, 1, 10), find("raw uvloop echo", 1, 10)
        if ours and raw:
            out[f"{transport} p50 latency / raw, conc=1 size=10"] = ours["p50_us"] / raw["p50_us"]
    return out


def print_table(rows: list[dict[str, Any]], ratio_map: dict[str, float],
                out: TextIO = sys.stdout) -> None:
    """Human-readable table of rows and ratios."""
    print(f"pomelo_rpc {pomelo_rpc.__version__} bench: {pomelo_rpc.IMPLEMENTATION} core, "
          f"{os.cpu_count()} cores, python {sys.version.split()[0]}", file=out)
    print(f"{'system':<46} {'conc':>5} {'size':>5} {'calls/s':>10} {'p50 µs':>8} {'p99 µs':>8}",
          file=out)
    for r in rows:
        print(f"{r['system']:<46} {r['concurrency']:>5} {r['size']:>5} {r['calls_per_s']:>10,.0f} "
              f"{r['p50_us']:>8.0f} {r['p99_us']:>8.0f}", file=out)
    print("\nratios (same run):", file=out)
    for name, value in ratio_map.items():
        unit = " MB" if name.startswith("memory") else "x"
        print(f"  {name:<66} {value:6.2f}{unit}", file=out)
    print("\nmqtt against Node pomelo-rpc 1.0.7 (needs Node.js): python bench/mqtt_vs_node.py",
          file=out)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """Write a bar chart of calls/s per row to ``path`` (needs matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'pomelo-rpc[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [f"{r['system']}\nconc={r['concurrency']} size={r['size']}" for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
    ax.barh(range(len(rows)), [r["calls_per_s"] for r in rows],
            color=["#999" if r["transport"] == "raw" else "#3a7" for r in rows])
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("calls/s")
    ax.set_title("pomelo_rpc bench (one run)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(args: argparse.Namespace) -> int:
    """Run the benchmark matrix and print it (``--json`` for machines, ``--plot`` for a PNG)."""
    from pomelo_rpc.station import _MAILBOXES
    transports = [t for t in args.transports.split(",") if t]
    unknown = [t for t in transports if t not in _MAILBOXES]
    if unknown:
        raise SystemExit(f"unknown transport(s): {', '.join(unknown)}")
    if args.sustained:
        from pomelo_rpc import sustained
        return sustained.run_all(args.sustained, transports, _core.available(), args.every,
                                 sys.stdout)
    rows = pomelo_rpc.run(run_matrix(args.seconds, transports, args.clients, args.servers))
    ratio_map = ratios(rows)
    ratio_map.update(core_ratio())
    proc, port = start_rpc_server("mem")
    try:
        ratio_map.update(pomelo_rpc.run(memory_in_flight(port)))
    finally:
        stop_all([proc])
    if args.json:
        print(json.dumps({"implementation": pomelo_rpc.IMPLEMENTATION, "rows": rows,
                          "ratios": ratio_map}, indent=2))
    else:
        print_table(rows, ratio_map)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["raw-server"]:
        pomelo_rpc.run(_raw_server_main(sys.stdout))
    elif sys.argv[1:2] == ["client"]:
        _client_process(json.loads(sys.argv[2]))
    else:
        raise SystemExit("internal entry point of python -m pomelo_rpc bench")
