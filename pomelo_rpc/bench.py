"""``python -m pomelo_rpc bench``: end-to-end figures, beside a raw uvloop echo run in the same invocation.

Client and servers are separate processes on loopback. Every cell runs for a fixed
time; ratios compare cells of the same run only (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TextIO, Union

import msgpack

import pomelo_rpc
from pomelo_rpc import client, processes
from pomelo_rpc import core as _core

if TYPE_CHECKING:
    #: a call function ``call(payload) -> awaitable answer``, or one per connection
    CallFuncs = Union[Callable[[Any], Awaitable[Any]],
                      Sequence[Callable[[Any], Awaitable[Any]]]]

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


class _CoalescedEchoServer(_RawEchoServer):
    """The raw echo answering all the calls of one read in a single write."""

    def data_received(self, data: bytes) -> None:
        msgs, self.buf = _raw_messages(self.buf + data)
        out = []
        for rid, body in msgs:
            frame = msgpack.packb([rid, body])
            out.append(_HDR.pack(len(frame)) + frame)
        if out:
            self.transport.write(b"".join(out))


class _CoalescedEchoClient(_RawEchoClient):
    """The raw echo client sending all the calls made in one loop turn in a single write
    (the stricter baseline: pomelo_rpc's mailbox coalesces the same way)."""

    def __init__(self) -> None:
        super().__init__()
        self.queued: list[bytes] = []

    def call(self, payload: Any) -> asyncio.Future[Any]:
        rid = self.next_id
        self.next_id += 1
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self.waiting[rid] = fut
        out = msgpack.packb([rid, payload])
        if not self.queued:
            loop.call_soon(self.flush)
        self.queued.append(_HDR.pack(len(out)) + out)
        return fut

    def flush(self) -> None:
        """Send the frames queued in this loop turn."""
        self.transport.write(b"".join(self.queued))
        self.queued.clear()


#: (server protocol, client protocol) of the raw echo, and of the coalesced one
RAW_PROTOCOLS = {False: (_RawEchoServer, _RawEchoClient),
                 True: (_CoalescedEchoServer, _CoalescedEchoClient)}


async def _raw_server_main(port_out: TextIO, coalesce: bool = False) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(RAW_PROTOCOLS[coalesce][0], "127.0.0.1", 0)
    print(json.dumps({"event": "listening", "port": server.sockets[0].getsockname()[1]}),
          file=port_out, flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


# processes -------------------------------------------------------------------

def start_raw_server(coalesce: bool = False) -> tuple[subprocess.Popen[str], int]:
    """Start the raw uvloop echo server process (``coalesce``: one write per read);
    return (process, port)."""
    return processes.start([sys.executable, "-m", "pomelo_rpc.bench", "raw-server"]
                           + (["coalesce"] if coalesce else []))


def start_rpc_server(server_id: str, transport: str = "native",
                     pure: bool = False) -> tuple[subprocess.Popen[str], int]:
    """Start a ``python -m pomelo_rpc serve`` process with the bench service
    (``pure``: with the pure-Python core)."""
    return processes.start_server(server_id, "bench", REMOTE, transport, pure)


def start_gateways(count: int) -> tuple[subprocess.Popen[str], list[int]]:
    """A server process holding ``count`` gateways of the bench service, each on a port
    of its own; return (process, ports)."""
    proc = subprocess.Popen([sys.executable, "-m", "pomelo_rpc.bench", "gateways", str(count)],
                            stdout=subprocess.PIPE, text=True, env=processes.child_env())
    line = proc.stdout.readline()  # type: ignore[union-attr]  # stdout=PIPE: not None
    if not line:
        proc.kill()
        raise RuntimeError("the gateways process failed to start")
    return proc, list(json.loads(line)["ports"])


async def _gateways_main(count: int) -> None:
    from pomelo_rpc import server
    gws = [server.create(paths=[{"namespace": "user", "path": REMOTE}],
                         context={"server_id": f"bench-{i}"}) for i in range(count)]
    for gw in gws:
        await gw.start()
    print(json.dumps({"event": "listening", "ports": [gw.port for gw in gws]}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for gw in gws:
        await gw.stop()


stop_all = processes.stop_all


# measuring -------------------------------------------------------------------

def _as_list(calls: CallFuncs) -> list[Callable[[Any], Awaitable[Any]]]:
    if isinstance(calls, (list, tuple)):
        return list(calls)
    return [calls]  # type: ignore[list-item]  # a single call function


async def measure(calls: CallFuncs, concurrency: int, seconds: float,
                  size: int) -> dict[str, float]:
    """Keep ``concurrency`` calls in flight for ``seconds``; return calls/s, p50, p99 (µs).
    ``calls``: a call function, or one per connection (worker i uses the i-th, modulo)."""
    latencies: list[float] = []
    payload = payload_of(size)
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds
    clock = time.perf_counter
    funcs = _as_list(calls)

    async def worker(call: Callable[[Any], Awaitable[Any]]) -> None:
        while loop.time() < stop_at:
            t0 = clock()
            await call(payload)
            latencies.append(clock() - t0)

    t0 = clock()
    await asyncio.gather(*(worker(funcs[i % len(funcs)]) for i in range(concurrency)))
    elapsed = clock() - t0
    latencies.sort()
    return {"calls_per_s": len(latencies) / elapsed,
            "p50_us": statistics.median(latencies) * 1e6,
            "p99_us": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e6,
            "calls": len(latencies)}


async def make_calls(calls: CallFuncs, count: int, concurrency: int = 100,
                     size: int = 10) -> None:
    """Exactly ``count`` calls, ``concurrency`` in flight (fewer at the very end);
    ``calls`` as for ``measure``."""
    payload = payload_of(size)
    left = count
    funcs = _as_list(calls)

    async def worker(call: Callable[[Any], Awaitable[Any]]) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call(payload)
    await asyncio.gather(*(worker(funcs[i % len(funcs)]) for i in range(concurrency)))


async def start_raw_listener(coalesce: bool = False) -> asyncio.Server:
    """A raw echo server on this loop (``coalesce``: one write per read), on a free port."""
    server: asyncio.Server = await asyncio.get_running_loop().create_server(
        RAW_PROTOCOLS[coalesce][0], "127.0.0.1", 0)
    return server


async def raw_clients(port: int, connections: int = 1, coalesce: bool = False,
                      ) -> tuple[list[Callable[[Any], Awaitable[Any]]],
                                 Callable[[], Awaitable[None]]]:
    """``connections`` raw echo connections to ``port``: their call functions, and a
    close of them all."""
    loop = asyncio.get_running_loop()
    protos = [(await loop.create_connection(RAW_PROTOCOLS[coalesce][1], "127.0.0.1", port))[1]
              for _ in range(connections)]

    async def close() -> None:
        for proto in protos:
            proto.transport.close()
    return [proto.call for proto in protos], close


def _spread_router(ids: list[str]) -> Callable[[Any, dict[str, Any], Any], str]:
    """A custom router sending the calls of connection i (``route_param``) to ``ids[i]``."""
    return lambda route_param, msg, route_context: ids[route_param or 0]


async def rpc_callers(ports: Sequence[int], transport: str, core: str | None = None,
                       kind: str = "rpc", timeout: float = 10.0, connections: int = 1,
                       ) -> tuple[list[Callable[[Any], Awaitable[Any]]],
                                  Callable[[], Awaitable[None]]]:
    """The client of an rpc cell: its call functions (one per connection) and its stop.

    ``connections`` > 1: that many server entries at ``ports[0]`` (each its own
    connection), call function i routed to entry i by a custom router. "rpc-rr": the
    ``rr`` router over one entry per port."""
    if connections > 1:
        ids = [f"bench-{i}" for i in range(connections)]
        servers = [{"id": sid, "server_type": "bench", "port": ports[0]} for sid in ids]
    else:
        ids = [f"bench-{i}" for i in range(len(ports))]
        servers = [{"id": sid, "server_type": "bench", "port": port}
                   for sid, port in zip(ids, ports)]
    router = _spread_router(ids) if kind == "rpc-async-router" else None
    cli = client.create(transport=transport, timeout=timeout, core=core, router=router,
                        router_type="rr" if kind == "rpc-rr" else None)
    cli.add_proxies([{"namespace": "user", "server_type": "bench", "path": REMOTE}])
    cli.add_servers(servers)
    await cli.start()
    service = cli.proxies.user.bench.bench
    echo, aecho = service.echo, service.aecho
    for sid in ids:
        await echo.to_server(sid, "warm")
    calls: list[Callable[[Any], Awaitable[Any]]]
    if kind == "rpc-async-router":
        calls = [partial(aecho, i) for i in range(len(ids))]
    elif kind == "rpc-rr":
        calls = [lambda payload: aecho(None, payload)]
    elif kind == "rpc-routed":
        uid = iter(range(1 << 62))
        calls = [lambda payload: echo({"uid": next(uid)}, payload)]
    else:
        calls = [lambda payload: echo.to_server("bench-0", payload)]
    return calls, cli.stop


async def run_cell(kind: str, ports: Sequence[int], concurrency: int, size: int, seconds: float,
                   transport: str = "native", core: str | None = None,
                   connections: int = 1) -> dict[str, float]:
    """One measurement: ``kind`` is "raw", "raw-coalesced", "rpc" (``echo.to_server``),
    "rpc-routed" (pomelo's default router over ``ports``), "rpc-async-router" (an
    ``async def`` method, a custom router) or "rpc-rr" (the ``async def`` method, the
    ``rr`` router over ``ports``); the calls spread over ``connections`` connections.
    The calls' timeout is a third of the cell, so that deadlines pass (and their timer
    runs) while it measures."""
    if kind.startswith("raw"):
        calls, close = await raw_clients(ports[0], connections, kind == "raw-coalesced")
    else:
        calls, close = await rpc_callers(ports, transport, core, kind,
                                          timeout=max(0.2, seconds / 3),
                                          connections=connections)
    await measure(calls, concurrency, min(0.3, seconds), size)          # warm-up
    result = await measure(calls, concurrency, seconds, size)
    await close()
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

#: the many-connection rows: connections, each with 2 calls in flight
CONNECTIONS = (1, 10, 100, 500)
#: the many-server rows: gateways the ``rr`` router spreads 100 calls in flight over
RR_SERVERS = (1, 8, 64)

RAW = "raw uvloop echo"
RAW_COALESCED = "raw uvloop echo, coalesced writes"
ASYNC_ROUTER = "pomelo_rpc native, async def method, router"
PURE = "pomelo_rpc native, pure-Python core"


@dataclass
class Cell:
    """One system under one workload; ``runs`` holds the result of each round."""

    system: str
    transport: str
    kind: str
    ports: list[int]
    concurrency: int
    size: int
    core: str | None = None
    clients: int = 1
    connections: int = 1
    runs: list[dict[str, float]] = field(default_factory=list)

    async def run(self, seconds: float) -> None:
        """Measure once more (``clients`` > 1: that many client processes at once)."""
        if self.clients > 1:
            r = await asyncio.get_running_loop().run_in_executor(
                None, multi_client, self.kind, self.ports, self.clients, 100, self.size,
                seconds, self.transport)
        else:
            r = await run_cell(self.kind, self.ports, self.concurrency, self.size, seconds,
                               self.transport, self.core, self.connections)
        self.runs.append(r)

    def row(self) -> dict[str, Any]:
        """Medians of the runs, with the min and max of calls/s and every run's calls/s."""
        rates = [r["calls_per_s"] for r in self.runs]
        return {"system": self.system, "transport": self.transport,
                "concurrency": self.concurrency, "size": self.size,
                "connections": self.connections,
                "calls_per_s": statistics.median(rates), "calls_per_s_min": min(rates),
                "calls_per_s_max": max(rates), "calls_per_s_runs": rates,
                "p50_us": statistics.median(r["p50_us"] for r in self.runs),
                "p99_us": statistics.median(r["p99_us"] for r in self.runs),
                "calls": sum(r["calls"] for r in self.runs)}


async def run_matrix(seconds: float, transports: list[str], clients: int,
                     routed_servers: int, rounds: int = 3,
                     connections: Sequence[int] = CONNECTIONS,
                     rr_servers: Sequence[int] = RR_SERVERS) -> list[dict[str, Any]]:
    """Every row of the benchmark; returns a list of dicts. The cells of one workload
    run in turn, ``rounds`` times, their order rotated by one each round (so that no
    system always follows the same one); each row is the median of its runs.

    ``connections``: the many-connection rows, each count of connections with 2 calls
    in flight on each, the raw echo beside pomelo_rpc; ``rr_servers``: the many-server
    rows, the ``rr`` router over that many gateways (all in one server process)."""
    procs: list[subprocess.Popen[str]] = []

    def server(started: tuple[subprocess.Popen[str], int]) -> list[int]:
        procs.append(started[0])
        return [started[1]]
    try:
        raw = server(start_raw_server())
        coalesced = server(start_raw_server(coalesce=True))
        rpc = {t: server(start_rpc_server(f"bench-{t}", t)) for t in transports}
        groups: list[list[Cell]] = []
        for conc, size in ((1, 10), (100, 10), (100, 1000)):
            group = [Cell(RAW, "raw", "raw", raw, conc, size),
                     Cell(RAW_COALESCED, "raw", "raw-coalesced", coalesced, conc, size)]
            group += [Cell(f"pomelo_rpc {t}", t, "rpc", rpc[t], conc, size) for t in transports]
            if "native" in rpc and size == 10:
                group.append(Cell(ASYNC_ROUTER, "native", "rpc-async-router", rpc["native"],
                                  conc, size))
            groups.append(group)
        if "python" in _core.available() and pomelo_rpc.IMPLEMENTATION == "cython":
            pure = server(start_rpc_server("pure", pure=True))
            groups[1].append(Cell(PURE, "native", "rpc", pure, 100, 10, core="python"))
        if routed_servers > 1:
            ports = [server(start_rpc_server(f"routed-{i}"))[0] for i in range(routed_servers)]
            groups[1].append(Cell(f"pomelo_rpc native, routed over {routed_servers} servers",
                                  "native", "rpc-routed", ports, 100, 10))
        if connections and "native" in rpc:
            for n in connections:
                groups.append([Cell(f"{RAW}, {n} connections x 2", "raw", "raw", raw, 2 * n,
                                    10, connections=n),
                               Cell(f"{ASYNC_ROUTER}, {n} connections x 2", "native",
                                    "rpc-async-router", rpc["native"], 2 * n, 10,
                                    connections=n)])
        if rr_servers and "native" in rpc:
            started = start_gateways(max(rr_servers))
            procs.append(started[0])
            groups.append([Cell(f"pomelo_rpc native, async def method, rr over {k} servers",
                                "native", "rpc-rr", started[1][:k], 100, 10)
                           for k in rr_servers])
        if clients > 1 and "native" in rpc:
            groups.append([Cell(f"{name}, {clients} client processes", "raw", kind, ports,
                                100 * clients, 10, clients=clients)
                           for name, kind, ports in ((RAW, "raw", raw),
                                                     (RAW_COALESCED, "raw-coalesced", coalesced))]
                          + [Cell(f"pomelo_rpc native, {clients} client processes", "native",
                                  "rpc", rpc["native"], 100 * clients, 10, clients=clients)])
        for i in range(rounds):
            for group in groups:
                turn = i % len(group)
                for cell in group[turn:] + group[:turn]:
                    await cell.run(seconds)
    finally:
        stop_all(procs)
    return [cell.row() for group in groups for cell in group]


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


# targets -------------------------------------------------------------------------

#: The targets of the end-to-end ratios, by the start of a ratio's name: (comparison, bound).
TARGETS: dict[str, tuple[str, float]] = {
    "native, async def + router throughput / raw, conc=100 size=10": (">=", 1.5),
    "native p50 latency / raw, conc=1 size=10": ("<=", 1.0),
    "native, async def + router p50 latency / raw, conc=1 size=10": ("<=", 1.0),
    "native throughput / raw, 2 client processes": (">=", 2.5),
    "native, 100 connections x 2 in flight / raw, same connections": (">=", 1.5),
    "native, 500 connections x 2 in flight / raw, same connections": (">=", 1.5),
    "rr over 64 servers / rr over 1 server, 100 in flight": (">=", 0.8),
    "mqtt / native throughput, conc=100 size=10": (">=", 0.75),
}


def target_note(name: str, value: float,
                targets: dict[str, tuple[str, float]] | None = None) -> str:
    """`` target <= 1.00x: met`` (or ``not met``) for a ratio with a target in
    ``targets`` (the end-to-end ones by default), else ``""``."""
    for prefix, (op, bound) in (TARGETS if targets is None else targets).items():
        if name == prefix or (name.startswith(prefix) and not name[len(prefix):].strip(" ,")):
            met = value <= bound if op == "<=" else value >= bound
            shown = f"{bound:,.0f}" if bound >= 100 else f"{bound:.2f}x"
            return f"   target {op} {shown}: {'met' if met else 'NOT met'}"
    return ""


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The ratios the targets are stated in (of medians), from rows of one run; each
    against the raw echo and against the stricter coalesced raw echo."""
    def find(system: str, conc: int, size: int) -> dict[str, Any] | None:
        for r in rows:
            if r["system"] == system and r["concurrency"] == conc and r["size"] == size:
                return r
        return None

    out: dict[str, float] = {}
    pure, compiled = find(PURE, 100, 10), find("pomelo_rpc native", 100, 10)
    if pure and compiled:
        out["native throughput, Cython core / pure-Python core, conc=100 size=10"] = (
            compiled["calls_per_s"] / pure["calls_per_s"])
    ours_names = [(f"pomelo_rpc {t}", t) for t in sorted({r["transport"] for r in rows} - {"raw"})]
    ours_names.append((ASYNC_ROUTER, "native, async def + router"))
    clients = {r["concurrency"] // 100 for r in rows if "client processes" in r["system"]}
    for base, short in ((RAW, "raw"), (RAW_COALESCED, "raw coalesced")):
        for name, label in ours_names:
            for conc, size in ((100, 10), (100, 1000)):
                ours, raw = find(name, conc, size), find(base, conc, size)
                if ours and raw:
                    out[f"{label} throughput / {short}, conc={conc} size={size}"] = (
                        ours["calls_per_s"] / raw["calls_per_s"])
            ours, raw = find(name, 1, 10), find(base, 1, 10)
            if ours and raw:
                out[f"{label} p50 latency / {short}, conc=1 size=10"] = (
                    ours["p50_us"] / raw["p50_us"])
        for n in clients:
            ours = find(f"pomelo_rpc native, {n} client processes", 100 * n, 10)
            raw = find(f"{base}, {n} client processes", 100 * n, 10)
            if ours and raw:
                out[f"native throughput / {short}, {n} client processes"] = (
                    ours["calls_per_s"] / raw["calls_per_s"])
    for r in rows:
        if r["system"].startswith(f"{ASYNC_ROUTER}, ") and "connections x 2" in r["system"]:
            n = r["connections"]
            raw = find(f"{RAW}, {n} connections x 2", 2 * n, 10)
            if raw:
                out[f"native, {n} connections x 2 in flight / raw, same connections"] = (
                    r["calls_per_s"] / raw["calls_per_s"])
    rr = {r["system"].rpartition(" over ")[2]: r for r in rows
          if r["system"].startswith("pomelo_rpc native, async def method, rr over ")}
    one = rr.get("1 servers")
    for servers, r in rr.items():
        if one and r is not one:
            out[f"rr over {servers} / rr over 1 server, 100 in flight"] = (
                r["calls_per_s"] / one["calls_per_s"])
    mqtt, native = find("pomelo_rpc mqtt", 100, 10), find("pomelo_rpc native", 100, 10)
    if mqtt and native:
        out["mqtt / native throughput, conc=100 size=10"] = (
            mqtt["calls_per_s"] / native["calls_per_s"])
    return out


def print_table(rows: list[dict[str, Any]], ratio_map: dict[str, float],
                out: TextIO = sys.stdout) -> None:
    """Human-readable table of rows (medians, and the min-max of calls/s) and ratios."""
    rounds = max((len(r.get("calls_per_s_runs", [])) for r in rows), default=1)
    print(f"pomelo_rpc {pomelo_rpc.__version__} bench: {pomelo_rpc.IMPLEMENTATION} core, "
          f"{os.cpu_count()} cores, python {sys.version.split()[0]}; median of {rounds} "
          f"alternating rounds (calls/s min-max beside it)", file=out)
    print(f"{'system':<54} {'conc':>5} {'size':>5} {'calls/s':>9} {'min-max':>15} "
          f"{'p50 µs':>7} {'p99 µs':>7}", file=out)
    for r in rows:
        spread = (f"{r['calls_per_s_min'] / 1000:.1f}k-{r['calls_per_s_max'] / 1000:.1f}k"
                  if "calls_per_s_min" in r else "")
        print(f"{r['system']:<54} {r['concurrency']:>5} {r['size']:>5} {r['calls_per_s']:>9,.0f} "
              f"{spread:>15} {r['p50_us']:>7.0f} {r['p99_us']:>7.0f}", file=out)
    print("\nratios (medians of the same run):", file=out)
    for name, value in ratio_map.items():
        unit = " MB" if name.startswith("memory") else "x"
        print(f"  {name:<72} {value:6.2f}{unit}{target_note(name, value)}", file=out)
    print("\nmqtt against Node pomelo-rpc 1.0.7 (needs Node.js): python bench/mqtt_vs_node.py",
          file=out)
    print("instructions per call (needs valgrind): python -m pomelo_rpc bench --instructions",
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
    ax.set_title("pomelo_rpc bench (medians of alternating rounds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _counts(text: str) -> list[int]:
    """``"1,10,100"`` as ``[1, 10, 100]`` (``""``: none)."""
    try:
        return [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise SystemExit(f"expected comma-separated counts, not {text!r}") from None


def main(args: argparse.Namespace) -> int:
    """Run the benchmark matrix and print it (``--json`` for machines, ``--plot`` for a PNG)."""
    from pomelo_rpc.station import _MAILBOXES
    transports = [t for t in args.transports.split(",") if t]
    unknown = [t for t in transports if t not in _MAILBOXES]
    if unknown:
        raise SystemExit(f"unknown transport(s): {', '.join(unknown)}")
    if args.instructions:
        from pomelo_rpc import bench_instructions
        return bench_instructions.main(args.rows, args.calls, args.profile, args.profile_row,
                                       args.json)
    if args.sustained:
        from pomelo_rpc import sustained
        return sustained.run_all(args.sustained, transports, _core.available(), args.every,
                                 sys.stdout)
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    rows = pomelo_rpc.run(run_matrix(args.seconds, transports, args.clients, args.servers,
                                     args.rounds, _counts(args.connections),
                                     _counts(args.rr_servers)))
    ratio_map = ratios(rows)
    ratio_map.update(core_ratio())
    proc, port = start_rpc_server("mem")
    try:
        # in a fresh process: this one's heap grew during the matrix, and RSS does not
        # shrink, so the calls would fit in memory it already has
        out = subprocess.run([sys.executable, "-m", "pomelo_rpc.bench", "memory", str(port)],
                             capture_output=True, text=True, check=True).stdout
        ratio_map.update(json.loads(out))
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
        pomelo_rpc.run(_raw_server_main(sys.stdout, sys.argv[2:3] == ["coalesce"]))
    elif sys.argv[1:2] == ["gateways"]:
        pomelo_rpc.run(_gateways_main(int(sys.argv[2])))
    elif sys.argv[1:2] == ["memory"]:
        print(json.dumps(pomelo_rpc.run(memory_in_flight(int(sys.argv[2])))))
    elif sys.argv[1:2] == ["client"]:
        _client_process(json.loads(sys.argv[2]))
    else:
        raise SystemExit("internal entry point of python -m pomelo_rpc bench")
