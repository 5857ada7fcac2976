"""``python -m pomelo_rpc bench``: end-to-end figures, beside a raw uvloop echo run in the same invocation.

Client and servers are separate processes on loopback. Every cell runs for a fixed
time; ratios compare cells of the same run only (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import signal
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import msgpack

import pomelo_rpc
from pomelo_rpc import client, processes
from pomelo_rpc import core as _core
from pomelo_rpc.options import SERVER_DEFAULTS

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


async def _raw_caller(port: int, coalesce: bool = False) -> Caller:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(RAW_PROTOCOLS[coalesce][1], "127.0.0.1", port)
    return proto.call, proto.transport.close


async def _rpc_caller(ports: Sequence[int], transport: str, core: str | None = None,
                      kind: str = "rpc", timeout: float = 10.0) -> Caller:
    custom = kind == "rpc-async-router"
    cli = client.create(transport=transport, timeout=timeout, core=core,
                        router=bench_router if custom else None)
    cli.add_proxies([{"namespace": "user", "server_type": "bench", "path": REMOTE}])
    cli.add_servers([{"id": f"bench-{i}", "server_type": "bench", "port": port}
                     for i, port in enumerate(ports)])
    await cli.start()
    echo = cli.proxies.user.bench.bench.echo
    for i in range(len(ports)):
        await echo.to_server(f"bench-{i}", "warm")
    if custom:
        aecho = cli.proxies.user.bench.bench.aecho
        call = lambda payload: aecho(None, payload)  # noqa: E731
    elif kind == "rpc-routed":
        uid = iter(range(1 << 62))
        call = lambda payload: echo({"uid": next(uid)}, payload)  # noqa: E731
    else:
        call = lambda payload: echo.to_server("bench-0", payload)  # noqa: E731

    def close() -> asyncio.Future[None]:
        return asyncio.ensure_future(cli.stop())
    return call, close


async def run_cell(kind: str, ports: Sequence[int], concurrency: int, size: int, seconds: float,
                   transport: str = "native", core: str | None = None) -> dict[str, float]:
    """One measurement: ``kind`` is "raw", "raw-coalesced", "rpc" (``echo.to_server``),
    "rpc-routed" (pomelo's default router over ``ports``) or "rpc-async-router" (an
    ``async def`` method, a custom router). The calls' timeout is a third of the cell,
    so that deadlines pass (and their timer runs) while it measures."""
    if kind.startswith("raw"):
        call, close = await _raw_caller(ports[0], kind == "raw-coalesced")
    else:
        call, close = await _rpc_caller(ports, transport, core, kind,
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
    runs: list[dict[str, float]] = field(default_factory=list)

    async def run(self, seconds: float) -> None:
        """Measure once more (``clients`` > 1: that many client processes at once)."""
        if self.clients > 1:
            r = await asyncio.get_running_loop().run_in_executor(
                None, multi_client, self.kind, self.ports, self.clients, 100, self.size,
                seconds, self.transport)
        else:
            r = await run_cell(self.kind, self.ports, self.concurrency, self.size, seconds,
                               self.transport, self.core)
        self.runs.append(r)

    def row(self) -> dict[str, Any]:
        """Medians of the runs, with the min and max of calls/s and every run's calls/s."""
        rates = [r["calls_per_s"] for r in self.runs]
        return {"system": self.system, "transport": self.transport,
                "concurrency": self.concurrency, "size": self.size,
                "calls_per_s": statistics.median(rates), "calls_per_s_min": min(rates),
                "calls_per_s_max": max(rates), "calls_per_s_runs": rates,
                "p50_us": statistics.median(r["p50_us"] for r in self.runs),
                "p99_us": statistics.median(r["p99_us"] for r in self.runs),
                "calls": sum(r["calls"] for r in self.runs)}


async def run_matrix(seconds: float, transports: list[str], clients: int,
                     routed_servers: int, rounds: int = 3) -> list[dict[str, Any]]:
    """Every row of the benchmark; returns a list of dicts. The cells of one workload
    run in turn, ``rounds`` times, their order rotated by one each round (so that no
    system always follows the same one); each row is the median of its runs."""
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


# instructions per call (callgrind) ---------------------------------------------

#: rows of ``bench --instructions``: key -> label (client and server in one process)
INSTRUCTION_ROWS = {
    "raw": "raw uvloop msgpack echo",
    "raw-coalesced": "raw uvloop msgpack echo, coalesced writes",
    "cython-async": "pomelo_rpc, Cython core, async def method, router",
    "cython-def": "pomelo_rpc, Cython core, def method, router",
    "python-async": "pomelo_rpc, pure-Python core, async def method, router",
    "python-def": "pomelo_rpc, pure-Python core, def method, router",
    "cython-notify": "pomelo_rpc, Cython core, notify of the def method, router",
    "python-notify": "pomelo_rpc, pure-Python core, notify of the def method, router",
}
#: calls kept in flight by the counted run, and calls made before counting starts
IN_FLIGHT, WARM_UP = 100, 300
#: How much slower a process runs under callgrind (measured here: a call takes about
#: 5 µs natively, 420 µs under callgrind). The server's ``handler_slice``, a wall-clock
#: budget of handler time per loop turn, is multiplied by it in the counted runs, so
#: that a slice holds the same work as natively; unscaled, nearly every request would
#: wait for a later turn under callgrind, which never happens at this load natively.
CALLGRIND_SLOWDOWN = 80


def bench_router(route_param: Any, msg: dict[str, Any], route_context: Any) -> str:
    """The custom router of the instruction rows: every call goes to ``bench-0``."""
    return "bench-0"


async def in_process_caller(row: str, slowdown: float = 1.0) -> Caller:
    """A server and a client of ``row`` (a key of INSTRUCTION_ROWS) on this loop,
    over a real loopback socket; returns (call, close). ``slowdown``: how much slower
    than natively this process runs (the server's handler slice is scaled by it)."""
    loop = asyncio.get_running_loop()
    if row.startswith("raw"):
        server_proto, client_proto = RAW_PROTOCOLS[row == "raw-coalesced"]
        raw = await loop.create_server(server_proto, "127.0.0.1", 0)
        _, proto = await loop.create_connection(client_proto, "127.0.0.1",
                                                raw.sockets[0].getsockname()[1])

        async def close_raw() -> None:
            proto.transport.close()
            raw.close()
            await raw.wait_closed()
        return proto.call, close_raw
    from pomelo_rpc import server
    core, kind = row.split("-")
    gw = server.create(paths=[{"namespace": "user", "path": REMOTE}], core=core,
                       context={"server_id": "bench-0"},
                       handler_slice=SERVER_DEFAULTS["handler_slice"] * slowdown)
    await gw.start()
    cli = client.create(timeout=30, core=core, router=bench_router)
    cli.add_proxies([{"namespace": "user", "server_type": "bench", "path": REMOTE}])
    cli.add_servers([{"id": "bench-0", "server_type": "bench", "port": gw.port}])
    await cli.start()
    service = cli.proxies.user.bench.bench
    method = service.aecho if kind == "async" else service.echo

    async def close_rpc() -> None:
        if kind == "notify":
            # the server has run every notify written before a call it answers (one
            # connection, in order): the same cost in every run, so it cancels out
            await method(None, None)
        await cli.stop()
        await gw.stop()
    if kind == "notify":
        return (lambda payload: method.notify(None, payload)), close_rpc
    return (lambda payload: method(None, payload)), close_rpc


async def make_calls(call: Callable[[Any], Awaitable[Any]], calls: int,
                     concurrency: int = IN_FLIGHT, size: int = 10) -> None:
    """Exactly ``calls`` calls, ``concurrency`` in flight (fewer at the very end)."""
    payload = payload_of(size)
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call(payload)
    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def count_row(row: str, calls: int, profiler: cProfile.Profile | None = None) -> None:
    """The process callgrind counts: ``row``'s pair, a warm-up, then ``calls`` calls
    (``profiler``: enabled during these calls only)."""
    call, close = await in_process_caller(row, CALLGRIND_SLOWDOWN)
    await make_calls(call, WARM_UP)
    # the heap made by imports and set-up out of the cyclic GC's way: a full collection
    # walks every tracked object, and whether one more falls between the N and the 3N
    # runs would move the per-call figure by a few %
    gc.collect()
    gc.freeze()
    if profiler:
        profiler.enable()
    await make_calls(call, calls)
    if profiler:
        profiler.disable()
    done = close()
    if done is not None:
        await done


def python_profile(row: str, calls: int, top: int = 30) -> str:
    """The Python-level view of ``row`` (cProfile, in this process, measured calls
    only): the functions of most own time, with how many times each runs per call."""
    profiler = cProfile.Profile()
    pomelo_rpc.run(count_row(row, calls, profiler))
    entries = pstats.Stats(profiler).stats  # type: ignore[attr-defined]  # untyped field
    rows = sorted(entries.items(), key=lambda kv: -kv[1][2])
    own = sum(v[2] for v in entries.values())
    lines = [f"Python-level: {sum(v[1] for v in entries.values()) / calls:.1f} function calls "
             f"per call (Python and C functions); top {top} by own time (cProfile):",
             f"{'per call':>8} {'own time':>8}  function"]
    for (path, line, func), (_cc, ncalls, tottime, _ct, _callers) in rows[:top]:
        where = f"{os.path.basename(path)}:{line}({func})" if line else func
        lines.append(f"{ncalls / calls:>8.2f} {tottime / own:>8.1%}  {where}")
    return "\n".join(lines) + "\n"


def _count_argv(row: str) -> Callable[[int], list[str]]:
    return lambda calls: [sys.executable, "-m", "pomelo_rpc.bench", "count", row, str(calls)]


def instruction_counts(rows: Sequence[str], calls: int, profile_path: str | None = None,
                       profile_row: str = "cython-async") -> dict[str, float]:
    """Instructions per call of each row, by subtraction of a run of ``calls`` from one
    of ``3 * calls`` (see pomelo_rpc.callgrind); rows run in parallel, one valgrind
    child each, with a fixed hash seed and the start-up heap frozen (``count_row``).
    With ``profile_path``, where the instructions of ``profile_row`` go is written
    there: by shared object, the top 30 C functions, and cProfile's Python-level view."""
    from concurrent.futures import ThreadPoolExecutor

    from pomelo_rpc import callgrind
    callgrind.require()
    env = processes.child_env()
    env["PYTHONHASHSEED"] = "0"     # the same dict layouts in every run

    def one(row: str) -> float:
        if profile_path and row == profile_row:
            per, funcs = callgrind.profile(_count_argv(row), calls, env)
            with open(profile_path, "w", encoding="utf-8") as f:
                f.write(f"{INSTRUCTION_ROWS[row]}: {IN_FLIGHT} in flight, 10 B payload, "
                        f"client and server in one process\n\n"
                        + callgrind.format_profile(per, funcs) + "\n"
                        + python_profile(row, calls))
            return per
        return callgrind.per_op(_count_argv(row), calls, env)
    with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        return dict(zip(rows, pool.map(one, rows)))


def instruction_ratios(counts: dict[str, float]) -> dict[str, float]:
    """The ratios issue 13 states its targets in, from ``instruction_counts``."""
    out: dict[str, float] = {}
    for kind in ("async", "def"):
        cy, py = counts.get(f"cython-{kind}"), counts.get(f"python-{kind}")
        for base in ("raw", "raw-coalesced"):
            if cy and counts.get(base):
                out[f"Cython core, {kind} method / {INSTRUCTION_ROWS[base]}"] = cy / counts[base]
        if cy and py:
            out[f"pure-Python core / Cython core, {kind} method"] = py / cy
    if counts.get("cython-async") and counts.get("cython-def"):
        out["Cython core: async def method / def method"] = (
            counts["cython-async"] / counts["cython-def"])
    for core in ("cython", "python"):
        notify, call = counts.get(f"{core}-notify"), counts.get(f"{core}-def")
        if notify and call:
            name = "Cython" if core == "cython" else "pure-Python"
            out[f"{name} core: notify / call of the def method"] = notify / call
    return out


#: The targets of issue 13, by the start of a ratio's name: (comparison, bound).
TARGETS: dict[str, tuple[str, float]] = {
    "Cython core, async method / raw uvloop msgpack echo": ("<=", 1.0),
    "pure-Python core / Cython core, async method": (">=", 2.5),
    "native, async def + router throughput / raw, conc=100 size=10": (">=", 1.5),
    "native p50 latency / raw, conc=1 size=10": ("<=", 1.0),
    "native, async def + router p50 latency / raw, conc=1 size=10": ("<=", 1.0),
    "native throughput / raw, 2 client processes": (">=", 2.5),
    "Cython core: notify / call of the def method": ("<=", 0.6),
    "pure-Python core: notify / call of the def method": ("<=", 0.6),
}


def target_note(name: str, value: float) -> str:
    """`` target <= 1.00x: met`` (or ``not met``) for a ratio with a target, else ``""``."""
    for prefix, (op, bound) in TARGETS.items():
        if name == prefix or (name.startswith(prefix) and not name[len(prefix):].strip(" ,")):
            met = value <= bound if op == "<=" else value >= bound
            return f"   target {op} {bound:.2f}x: {'met' if met else 'NOT met'}"
    return ""


def print_instructions(counts: dict[str, float], calls: int, out: TextIO = sys.stdout) -> None:
    """The instruction table and its ratios."""
    print(f"pomelo_rpc {pomelo_rpc.__version__}: user-space instructions per call "
          f"(valgrind --tool=callgrind; runs of {calls} and {3 * calls} calls subtracted), "
          f"client and server in one process, {IN_FLIGHT} in flight, 10 B payload", file=out)
    print(f"{'row':<58} {'instr/call':>11}", file=out)
    for row, count in counts.items():
        print(f"{INSTRUCTION_ROWS[row]:<58} {count:>11,.0f}", file=out)
    print("\nratios:", file=out)
    for name, value in instruction_ratios(counts).items():
        print(f"  {name:<66} {value:6.2f}x{target_note(name, value)}", file=out)


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


def main(args: argparse.Namespace) -> int:
    """Run the benchmark matrix and print it (``--json`` for machines, ``--plot`` for a PNG)."""
    from pomelo_rpc.station import _MAILBOXES
    transports = [t for t in args.transports.split(",") if t]
    unknown = [t for t in transports if t not in _MAILBOXES]
    if unknown:
        raise SystemExit(f"unknown transport(s): {', '.join(unknown)}")
    if args.instructions:
        names = [r for r in args.rows.split(",") if r] if args.rows else list(INSTRUCTION_ROWS)
        unknown = [r for r in names if r not in INSTRUCTION_ROWS]
        if unknown:
            raise SystemExit(f"unknown row(s): {', '.join(unknown)}; "
                             f"known: {', '.join(INSTRUCTION_ROWS)}")
        counts = instruction_counts(names, args.calls, args.profile)
        if args.json:
            print(json.dumps({"instructions_per_call": counts,
                              "ratios": instruction_ratios(counts)}, indent=2))
        else:
            print_instructions(counts, args.calls)
        return 0
    if args.sustained:
        from pomelo_rpc import sustained
        return sustained.run_all(args.sustained, transports, _core.available(), args.every,
                                 sys.stdout)
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    rows = pomelo_rpc.run(run_matrix(args.seconds, transports, args.clients, args.servers,
                                     args.rounds))
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
    elif sys.argv[1:2] == ["count"]:
        pomelo_rpc.run(count_row(sys.argv[2], int(sys.argv[3])))
    elif sys.argv[1:2] == ["memory"]:
        print(json.dumps(pomelo_rpc.run(memory_in_flight(int(sys.argv[2])))))
    elif sys.argv[1:2] == ["client"]:
        _client_process(json.loads(sys.argv[2]))
    else:
        raise SystemExit("internal entry point of python -m pomelo_rpc bench")
