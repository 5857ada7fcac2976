"""``python -m pomelo_rpc bench --instructions``: user-space instructions per call
under ``valgrind --tool=callgrind`` (see ``pomelo_rpc.callgrind`` for how the measured
phase is isolated), row by row.

Most rows count one process holding a server and a client on one loop over real
loopback sockets. The server-only rows count a server process alone while a client
process of its own (not counted, running natively, so about 80 times faster than the
counted one) keeps the calls in flight: what a backend pays per call when every
connection carries a few calls, with nothing of the client's in the count.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import os
import pstats
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TextIO

import pomelo_rpc
from pomelo_rpc import client, processes
from pomelo_rpc.bench import (REMOTE, TARGETS, make_calls, raw_clients, start_raw_listener,
                              target_note)
from pomelo_rpc.options import CLIENT_DEFAULTS, SERVER_DEFAULTS

if TYPE_CHECKING:
    from pomelo_rpc.bench import CallFuncs

#: ``(calls, close)``: the call functions of a row (one per connection) and its close
Callers = tuple[list[Callable[[Any], Awaitable[Any]]], Callable[[], Awaitable[None]]]


@dataclass(frozen=True)
class Row:
    """One row of ``bench --instructions``."""

    label: str
    system: str = "rpc"            # "raw", "raw-coalesced" or "rpc"
    core: str = "cython"           # rpc: "cython" or "python"
    #: rpc: "async" (``async def aecho``), "def" (``echo``), "notify" (notifies of ``echo``)
    method: str = "async"
    connections: int = 1           # the calls spread over this many connections
    servers: int = 1               # rpc: gateways (in the same process) ...
    rr: bool = False               # ... the calls spread over them by the rr router
    transport: str = "native"      # rpc: "native", "mqtt" or "pinus-tcp"
    in_flight: int = 100           # calls in flight, in all
    timeout: float = 30.0          # rpc: the calls' timeout (0: none, so no deadline)
    #: "both" (one process), or the side counted alone, "server" or "client" (the other
    #: side in a process of its own)
    side: str = "both"
    #: rpc: "metrics", or "tracing" (the SDK sampling 1%), "tracing-off" (sampling none),
    #: "tracing-all" (sampling every call, the cost of a sampled call); "-batch" after
    #: a tracing one: a BatchSpanProcessor instead of a SimpleSpanProcessor
    observe: str = ""


#: rows of ``bench --instructions``: key -> row
INSTRUCTION_ROWS: dict[str, Row] = {
    "raw": Row("raw uvloop msgpack echo", "raw"),
    "raw-coalesced": Row("raw uvloop msgpack echo, coalesced writes", "raw-coalesced"),
    "cython-async": Row("pomelo_rpc, Cython core, async def method, router"),
    "cython-def": Row("pomelo_rpc, Cython core, def method, router", method="def"),
    "python-async": Row("pomelo_rpc, pure-Python core, async def method, router",
                        core="python"),
    "python-def": Row("pomelo_rpc, pure-Python core, def method, router", core="python",
                      method="def"),
    "cython-notify": Row("pomelo_rpc, Cython core, notify of the def method, router",
                         method="notify"),
    "python-notify": Row("pomelo_rpc, pure-Python core, notify of the def method, router",
                         core="python", method="notify"),
    "cython-async-t0": Row("pomelo_rpc, Cython core, async def, router, timeout=0",
                           timeout=0.0),
    "cython-async-t0.5": Row("pomelo_rpc, Cython core, async def, router, timeout=0.5",
                             timeout=0.5),
    "raw-100c": Row("raw echo, 100 connections x 2 in flight", "raw", connections=100,
                    in_flight=200),
    "cython-async-100c": Row("pomelo_rpc, Cython, async def, 100 connections x 2",
                             connections=100, in_flight=200),
    "python-async-100c": Row("pomelo_rpc, pure Python, async def, 100 connections x 2",
                             core="python", connections=100, in_flight=200),
    "server-raw-100c": Row("server only: raw echo, 100 connections x 2", "raw",
                           connections=100, in_flight=200, side="server"),
    "server-cython-100c": Row("server only: pomelo_rpc, Cython, 100 connections x 2",
                              connections=100, in_flight=200, side="server"),
    "client-raw-100c": Row("client only: raw echo, 100 connections x 2", "raw",
                           connections=100, in_flight=200, side="client"),
    "client-cython-100c": Row("client only: pomelo_rpc, Cython, 100 connections x 2",
                              connections=100, in_flight=200, side="client"),
    "server-raw-500c": Row("server only: raw echo, 500 connections x 2", "raw",
                           connections=500, in_flight=1000, side="server"),
    "server-cython-500c": Row("server only: pomelo_rpc, Cython, 500 connections x 2",
                              connections=500, in_flight=1000, side="server"),
    "client-raw-500c": Row("client only: raw echo, 500 connections x 2", "raw",
                           connections=500, in_flight=1000, side="client"),
    "client-cython-500c": Row("client only: pomelo_rpc, Cython, 500 connections x 2",
                              connections=500, in_flight=1000, side="client"),
    "cython-async-mqtt": Row("pomelo_rpc, Cython core, async def method, router, mqtt",
                             transport="mqtt"),
    "cython-async-pinus-tcp": Row("pomelo_rpc, Cython core, async def method, router, pinus-tcp",
                                  transport="pinus-tcp"),
    "server-cython": Row("server only: pomelo_rpc, Cython, native", side="server"),
    "server-cython-mqtt": Row("server only: pomelo_rpc, Cython, mqtt", transport="mqtt",
                              side="server"),
    "server-cython-pinus-tcp": Row("server only: pomelo_rpc, Cython, pinus-tcp",
                                   transport="pinus-tcp", side="server"),
    "client-cython": Row("client only: pomelo_rpc, Cython, native", side="client"),
    "client-cython-mqtt": Row("client only: pomelo_rpc, Cython, mqtt", transport="mqtt",
                              side="client"),
    "client-cython-pinus-tcp": Row("client only: pomelo_rpc, Cython, pinus-tcp",
                                   transport="pinus-tcp", side="client"),
    "cython-rr-1": Row("pomelo_rpc, Cython, async def, rr router over 1 server", rr=True),
    "cython-rr-64": Row("pomelo_rpc, Cython, async def, rr router over 64 servers",
                        servers=64, rr=True),
    "cython-async-metrics": Row("pomelo_rpc, Cython core, async def, router, metrics=True",
                                observe="metrics"),
    "cython-async-tracing": Row("pomelo_rpc, Cython, async def, router, tracing 1% sampled",
                                observe="tracing"),
    "cython-async-tracing-off": Row("pomelo_rpc, Cython, async def, router, tracing, none sampled",
                                    observe="tracing-off"),
    "cython-async-mqtt-tracing-off": Row("pomelo_rpc, Cython, async def, router, mqtt, "
                                         "tracing, none sampled", transport="mqtt",
                                         observe="tracing-off"),
    "cython-async-tracing-batch": Row("pomelo_rpc, Cython, async def, router, tracing 1% "
                                      "sampled, BatchSpanProcessor", observe="tracing-batch"),
    "cython-async-tracing-all": Row("pomelo_rpc, Cython, async def, router, tracing, every "
                                    "call sampled", observe="tracing-all"),
    "cython-async-tracing-all-batch": Row("pomelo_rpc, Cython, async def, router, tracing, "
                                          "every call sampled, BatchSpanProcessor",
                                          observe="tracing-all-batch"),
    "server-raw-1": Row("server only: raw echo, 1 in flight", "raw", in_flight=1,
                        side="server"),
    "server-cython-mqtt-1": Row("server only: pomelo_rpc, Cython, mqtt, 1 in flight",
                                transport="mqtt", in_flight=1, side="server"),
    "server-backend": Row("server only: backend area, Cython, forwardMessage, 1 in flight",
                          "backend", transport="mqtt", in_flight=1, side="server"),
    "server-backend-python": Row("server only: backend area, pure Python, forwardMessage, 1",
                                 "backend", core="python", transport="mqtt", in_flight=1,
                                 side="server"),
}
#: the rows run when ``--rows`` names none
DEFAULT_ROWS = ("raw", "raw-coalesced", "cython-async", "cython-def", "python-async",
                "python-def", "cython-notify", "python-notify", "cython-async-t0", "raw-100c", "cython-async-100c",
                "server-raw-100c", "server-cython-100c")

#: the handler directory of the ``backend`` rows (the area of bench/backend.py)
AREA_HANDLERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_backend",
                             "area", "handler")
#: a player's ``area.playerHandler.move`` as a pomelo 2.2.7 hybridconnector forwards it
#: (``%d``: the rpc id, the player's request id), byte for byte
FORWARD = (b'{"id":%d,"msg":{"namespace":"sys","serverType":"area","service":"msgRemote",'
           b'"method":"forwardMessage","args":[{"id":%d,"type":0,"compressRoute":0,'
           b'"route":"area.playerHandler.move","body":{"x":1,"y":2},"compressGzip":0},'
           b'{"id":1,"frontendId":"connector-1","uid":"u1","settings":{}}]}}')

#: calls made before counting starts
WARM_UP = 300
#: How much slower a process runs under callgrind (measured here: a call takes about
#: 5 µs natively, 420 µs under callgrind). The server's ``handler_slice``, a wall-clock
#: budget of handler time per loop turn, is multiplied by it in the counted runs, so
#: that a slice holds the same work as natively; unscaled, nearly every request would
#: wait for a later turn under callgrind, which never happens at this load natively.
CALLGRIND_SLOWDOWN = 80


def bench_router(route_param: Any, msg: dict[str, Any], route_context: Any) -> str:
    """The custom router of the one-connection rows: every call goes to ``bench-0``."""
    return "bench-0"


def observe_options(observe: str) -> dict[str, Any]:
    """The options of ``Row.observe`` (given to the server and the client alike)."""
    if observe == "metrics":
        from prometheus_client import CollectorRegistry
        return {"metrics": True, "metrics_registry": CollectorRegistry()}
    if observe.startswith("tracing"):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (BatchSpanProcessor, SimpleSpanProcessor,
                                                    SpanExporter, SpanExportResult)
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        rate = (0.0 if observe.startswith("tracing-off") else
                1.0 if observe.startswith("tracing-all") else 0.01)
        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(rate)))
        provider.add_span_processor(BatchSpanProcessor(Drop()) if observe.endswith("-batch")
                                    else SimpleSpanProcessor(Drop()))
        return {"tracing": provider}
    return {}


async def start_gateway(row: Row, slowdown: float, index: int = 0) -> Any:
    """A server of an rpc row, started; its handler slice and its idle sweep (which
    runs on the clock) scaled by ``slowdown``."""
    from pomelo_rpc import server
    gw = server.create(paths=[{"namespace": "user", "path": REMOTE}], core=row.core,
                       context={"server_id": f"bench-{index}"}, transport=row.transport,
                       handler_slice=SERVER_DEFAULTS["handler_slice"] * slowdown,
                       idle_timeout=SERVER_DEFAULTS["idle_timeout"] * slowdown,
                       **observe_options(row.observe))
    await gw.start()
    return gw


async def start_backend(row: Row, slowdown: float) -> Any:
    """The backend server of a ``backend`` row: the demo area (``move``), no registry,
    started; its handler slice and idle sweep scaled by ``slowdown``."""
    from pomelo_rpc import server
    gw = server.create(transport=row.transport, core=row.core, handlers=AREA_HANDLERS,
                       server_info={"id": "area-1", "server_type": "area"},
                       handler_slice=SERVER_DEFAULTS["handler_slice"] * slowdown,
                       idle_timeout=SERVER_DEFAULTS["idle_timeout"] * slowdown)
    await gw.start()
    return gw


async def connector_calls(port: int) -> Callers:
    """The driver of a ``backend`` row: one mqtt connection to ``port`` sending what a
    pomelo 2.2.7 connector sends for a player's ``area.playerHandler.move`` (``FORWARD``,
    its message and request ids counting up), each awaited for its answer."""
    from pomelo_rpc.core.mqtt import MqttDecoder, encode_connect, encode_publish
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    decoder = MqttDecoder()
    writer.write(encode_connect())    # answered by nothing, as pomelo's acceptor does
    ids = iter(range(1, 1 << 62))

    async def packets() -> list[Any]:
        while True:
            got = decoder.feed(await reader.read(65536))
            if got:
                return got

    async def call(payload: Any) -> Any:
        n = next(ids)
        writer.write(encode_publish(FORWARD % (n, n)))
        return await packets()

    async def close() -> None:
        writer.close()
    return [call], close


def client_liveness(slowdown: float) -> dict[str, float]:
    """The client's liveness options scaled by ``slowdown``: its watchdog runs on the
    clock, every ``liveness_interval / 2`` s whatever the load, and checks every
    connection; under callgrind, unscaled, it would run 80 times more often per call
    than natively (a few instructions per call there, thousands here)."""
    return {name: CLIENT_DEFAULTS[name] * slowdown
            for name in ("liveness_interval", "liveness_timeout", "keepalive")}


async def rpc_clients(row: Row, port: int | list[int], slowdown: float = 1.0) -> Callers:
    """The client of an rpc row against ``port``: one server entry per connection, all
    at ``port``; the call function of connection i routes to entry i (``slowdown``:
    see ``client_liveness``). With several ports (``row.servers``), one entry per
    port and the ``rr`` router."""
    ports = port if isinstance(port, list) else [port] * row.connections
    ids = [f"bench-{i}" for i in range(len(ports))]
    cli = client.create(timeout=row.timeout, core=row.core, **client_liveness(slowdown),
                        transport=row.transport,
                        router=bench_router if len(ids) == 1 else
                        (lambda param, msg, ctx: ids[param]),
                        router_type="rr" if row.rr else None,
                        **observe_options(row.observe))
    cli.add_proxies([{"namespace": "user", "server_type": "bench", "path": REMOTE}])
    cli.add_servers([{"id": sid, "server_type": "bench", "port": p}
                     for sid, p in zip(ids, ports)])
    await cli.start()
    service = cli.proxies.user.bench.bench
    method = service.aecho if row.method == "async" else service.echo
    for sid in ids:                 # every connection open before counting
        await service.echo.to_server(sid, "warm")
    calls: list[Callable[[Any], Awaitable[Any]]]
    if row.method == "notify":
        calls = [lambda payload: method.notify(None, payload)]
    elif row.connections == 1:
        calls = [lambda payload: method(None, payload)]
    else:
        calls = [partial(method, i) for i in range(row.connections)]

    async def stop() -> None:
        if row.method == "notify":
            # the server has run every notify written before a call it answers (one
            # connection, in order): the same cost in every run, so it cancels out
            await method(None, None)
        await cli.stop()
    return calls, stop


async def in_process_callers(key: str, slowdown: float = 1.0) -> Callers:
    """A server and a client of row ``key`` on this loop, over real loopback sockets.
    ``slowdown``: how much slower than natively this process runs (the server's
    handler slice is scaled by it)."""
    row = INSTRUCTION_ROWS[key]
    if row.system.startswith("raw"):
        coalesce = row.system == "raw-coalesced"
        listener = await start_raw_listener(coalesce)
        calls, close_clients = await raw_clients(listener.sockets[0].getsockname()[1],
                                                 row.connections, coalesce)

        async def close_raw() -> None:
            await close_clients()
            listener.close()
            await listener.wait_closed()
        return calls, close_raw
    gws = [await start_gateway(row, slowdown, i) for i in range(row.servers)]
    calls, stop_client = await rpc_clients(
        row, [gw.port for gw in gws] if row.rr else gws[0].port, slowdown)

    async def close_rpc() -> None:
        await stop_client()
        for gw in gws:
            await gw.stop()
    return calls, close_rpc


def _freeze_heap() -> None:
    # the heap made by imports and set-up out of the cyclic GC's way: a full collection
    # walks every tracked object, and whether one more falls between the N and the 3N
    # runs would move the per-call figure by a few %
    gc.collect()
    gc.freeze()


async def count_row(key: str, calls: int, profiler: cProfile.Profile | None = None) -> None:
    """The process callgrind counts: row ``key``, a warm-up, then ``calls`` calls
    (``profiler``: enabled during these calls only)."""
    row = INSTRUCTION_ROWS[key]
    if row.side == "server":
        await count_server(key, calls)
        return
    if row.side == "client":
        await count_client(key, calls, profiler)
        return
    funcs, close = await in_process_callers(key, CALLGRIND_SLOWDOWN)
    await counted_calls(funcs, calls, row.in_flight, profiler)
    await close()


async def counted_calls(funcs: CallFuncs, calls: int, in_flight: int,
                        profiler: cProfile.Profile | None) -> None:
    """The warm-up, the heap frozen, then ``calls`` calls through ``funcs``
    (``profiler``: during these only)."""
    await make_calls(funcs, WARM_UP, in_flight)
    _freeze_heap()
    if profiler:
        profiler.enable()
    await make_calls(funcs, calls, in_flight)
    if profiler:
        profiler.disable()


async def count_server(key: str, calls: int) -> None:
    """A server-only row: this process serves; a driver process of its own (not
    counted) makes the warm-up and then ``calls`` calls; it ends when the driver does."""
    row = INSTRUCTION_ROWS[key]
    if row.system.startswith("raw"):
        listener = await start_raw_listener(row.system == "raw-coalesced")
        port = listener.sockets[0].getsockname()[1]
    elif row.system == "backend":
        gw = await start_backend(row, CALLGRIND_SLOWDOWN)
        port = gw.port
    else:
        gw = await start_gateway(row, CALLGRIND_SLOWDOWN)
        port = gw.port
    _freeze_heap()
    driver = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pomelo_rpc.bench_instructions", "drive", key, str(port),
        str(calls), env=processes.child_env())
    if await driver.wait() != 0:
        raise RuntimeError(f"the driver of {key} failed")
    if row.system.startswith("raw"):
        listener.close()
        await listener.wait_closed()
    else:
        await gw.stop()


async def count_client(key: str, calls: int, profiler: cProfile.Profile | None = None) -> None:
    """A client-only row: the server is a process of its own (not counted); this one
    makes the warm-up and then ``calls`` calls (``profiler``: during these only)."""
    from pomelo_rpc.bench import start_raw_server, start_rpc_server
    row = INSTRUCTION_ROWS[key]
    raw = row.system.startswith("raw")
    proc, port = (start_raw_server(row.system == "raw-coalesced") if raw
                  else start_rpc_server("bench-0", row.transport, pure=row.core == "python"))
    try:
        if raw:
            funcs, close = await raw_clients(port, row.connections,
                                             row.system == "raw-coalesced")
        else:
            funcs, close = await rpc_clients(row, port, CALLGRIND_SLOWDOWN)
        await counted_calls(funcs, calls, row.in_flight, profiler)
        await close()
    finally:
        processes.stop_all([proc])


async def drive(key: str, port: int, calls: int) -> None:
    """The client of a server-only row (not counted): a warm-up, then ``calls`` calls."""
    row = INSTRUCTION_ROWS[key]
    if row.system.startswith("raw"):
        funcs, close = await raw_clients(port, row.connections, row.system == "raw-coalesced")
    elif row.system == "backend":
        funcs, close = await connector_calls(port)
    else:
        # the server it calls runs under callgrind: its turns take that much longer (a
        # turn of 1,000 calls well over the unscaled liveness timeout)
        funcs, close = await rpc_clients(row, port, CALLGRIND_SLOWDOWN)
    await make_calls(funcs, WARM_UP, row.in_flight)
    await make_calls(funcs, calls, row.in_flight)
    await close()


def python_profile(key: str, calls: int, top: int = 30) -> str:
    """The Python-level view of row ``key`` (cProfile, in this process, measured
    calls only): the functions of most own time, with how many times each runs per call."""
    profiler = cProfile.Profile()
    pomelo_rpc.run(count_row(key, calls, profiler))
    entries = pstats.Stats(profiler).stats  # type: ignore[attr-defined]  # untyped field
    rows = sorted(entries.items(), key=lambda kv: -kv[1][2])
    own = sum(v[2] for v in entries.values()) or 1.0
    lines = [f"Python-level: {sum(v[1] for v in entries.values()) / calls:.1f} function calls "
             f"per call (Python and C functions); top {top} by own time (cProfile):",
             f"{'per call':>8} {'own time':>8}  function"]
    for (path, line, func), (_cc, ncalls, tottime, _ct, _callers) in rows[:top]:
        where = f"{os.path.basename(path)}:{line}({func})" if line else func
        lines.append(f"{ncalls / calls:>8.2f} {tottime / own:>8.1%}  {where}")
    return "\n".join(lines) + "\n"


def _count_argv(key: str) -> Callable[[int], list[str]]:
    return lambda calls: [sys.executable, "-m", "pomelo_rpc.bench_instructions", "count", key,
                          str(calls)]


def instruction_counts(keys: Sequence[str], calls: int, profile_path: str | None = None,
                       profile_row: str = "cython-async") -> dict[str, float]:
    """Instructions per call of each row, by subtraction of a run of ``calls`` from one
    of ``3 * calls`` (see pomelo_rpc.callgrind); rows run in parallel, one valgrind
    child each, with a fixed hash seed and the start-up heap frozen (``count_row``).
    With ``profile_path``, where the instructions of ``profile_row`` go is written
    there: by shared object, the top 30 C functions, and (for a row counting one
    process) cProfile's Python-level view."""
    from concurrent.futures import ThreadPoolExecutor

    from pomelo_rpc import callgrind
    callgrind.require()
    env = processes.child_env()
    env["PYTHONHASHSEED"] = "0"     # the same dict layouts in every run

    def one(key: str) -> float:
        row = INSTRUCTION_ROWS[key]
        if profile_path and key == profile_row:
            per, funcs = callgrind.profile(_count_argv(key), calls, env)
            with open(profile_path, "w", encoding="utf-8") as f:
                f.write(f"{row.label}: {row.in_flight} in flight over {row.connections} "
                        f"connection(s), 10 B payload, "
                        + ("client and server in one process" if row.side == "both" else
                           f"the {row.side} process alone") + "\n\n"
                        + callgrind.format_profile(per, funcs) + "\n"
                        + ("" if row.side == "server" else python_profile(key, calls)))
            return per
        return callgrind.per_op(_count_argv(key), calls, env)
    with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        return dict(zip(keys, pool.map(one, keys)))


def instruction_ratios(counts: dict[str, float]) -> dict[str, float]:
    """The ratios the targets are stated in, from ``instruction_counts``."""
    out: dict[str, float] = {}
    for kind in ("async", "def"):
        cy, py = counts.get(f"cython-{kind}"), counts.get(f"python-{kind}")
        for base in ("raw", "raw-coalesced"):
            if cy and counts.get(base):
                out[f"Cython core, {kind} method / {INSTRUCTION_ROWS[base].label}"] = (
                    cy / counts[base])
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
    for mine, base, name in (
            ("cython-async-100c", "raw-100c", "Cython, 100 connections x 2 / raw echo, same"),
            ("python-async-100c", "cython-async-100c",
             "pure-Python / Cython, 100 connections x 2"),
            ("server-cython-100c", "server-raw-100c",
             "server only, 100 connections x 2: Cython / raw echo"),
            ("client-cython-100c", "client-raw-100c",
             "client only, 100 connections x 2: Cython / raw echo"),
            ("cython-rr-64", "cython-rr-1", "rr over 64 servers / rr over 1")):
        if counts.get(mine) and counts.get(base):
            out[name] = counts[mine] / counts[base]
    return out


def instruction_differences(counts: dict[str, float]) -> dict[str, float]:
    """What an option adds to a call, in instructions: a deadline (``timeout`` 30 s over
    ``timeout=0``), metrics, tracing sampling 1% (and a sampled call over an unsampled
    one, from the rows sampling every call)."""
    out: dict[str, float] = {}
    base = counts.get("cython-async")
    for key, name in (("cython-async-t0", "a deadline (timeout=30 over timeout=0)"),
                      ("cython-async-metrics", "metrics=True on both sides"),
                      ("cython-async-tracing", "tracing, 1% sampled, on both sides"),
                      ("cython-async-tracing-off", "tracing, none sampled, on both sides"),
                      ("cython-async-tracing-batch",
                       "tracing, 1% sampled, BatchSpanProcessor, on both sides")):
        if base and counts.get(key):
            out[name] = (base - counts[key] if key.endswith("t0")
                         else counts[key] - base)
    unsampled = counts.get("cython-async-tracing-off")
    for key, name in (("cython-async-tracing-all", "a sampled call over an unsampled one"),
                      ("cython-async-tracing-all-batch",
                       "a sampled call over an unsampled one, BatchSpanProcessor")):
        if unsampled and counts.get(key):
            out[name] = counts[key] - unsampled
    return out


#: The targets of the instruction counts: ``(comparison, bound)`` by name.
INSTRUCTION_TARGETS: dict[str, tuple[str, float]] = {
    "Cython core, async method / raw uvloop msgpack echo": ("<=", 0.6),
    "pure-Python core / Cython core, async method": (">=", 2.5),
    "a deadline (timeout=30 over timeout=0)": ("<=", 1000.0),
    "Cython core: notify / call of the def method": ("<=", 0.6),
    "pure-Python core: notify / call of the def method": ("<=", 0.6),
    "rr over 64 servers / rr over 1": ("<=", 1.25),
}


def print_instructions(counts: dict[str, float], calls: int, out: TextIO = sys.stdout) -> None:
    """The instruction table, its ratios and differences, each with its target."""
    print(f"pomelo_rpc {pomelo_rpc.__version__}: user-space instructions per call "
          f"(valgrind --tool=callgrind; runs of {calls} and {3 * calls} calls subtracted), "
          f"10 B payload; client and server in one process unless 'server only'", file=out)
    print(f"{'row':<62} {'in flight':>9} {'instr/call':>11}", file=out)
    for key, count in counts.items():
        row = INSTRUCTION_ROWS[key]
        print(f"{row.label:<62} {row.in_flight:>9} {count:>11,.0f}", file=out)
    if "cython-async" in counts:
        print(f"\ntarget: Cython core, async def method, router <= 25,000 instructions: "
              f"{'met' if counts['cython-async'] <= 25_000 else 'NOT met'}", file=out)
    print("\nratios:", file=out)
    for name, value in instruction_ratios(counts).items():
        print(f"  {name:<66} {value:6.2f}x{target_note(name, value, INSTRUCTION_TARGETS)}",
              file=out)
    differences = instruction_differences(counts)
    if differences:
        print("\nwhat an option adds per call:", file=out)
        for name, value in differences.items():
            print(f"  {name:<66} {value:>7,.0f}{target_note(name, value, INSTRUCTION_TARGETS)}",
                  file=out)


def main(rows: str | None, calls: int, profile: str | None, profile_row: str,
         as_json: bool) -> int:
    """``bench --instructions``: count ``rows`` (comma-separated keys; None: the
    default rows) and print them."""
    import json
    keys = [r for r in rows.split(",") if r] if rows else list(DEFAULT_ROWS)
    unknown = [r for r in keys if r not in INSTRUCTION_ROWS]
    if unknown:
        raise SystemExit(f"unknown row(s): {', '.join(unknown)}; "
                         f"known: {', '.join(INSTRUCTION_ROWS)}")
    counts = instruction_counts(keys, calls, profile, profile_row)
    if as_json:
        print(json.dumps({"instructions_per_call": counts,
                          "ratios": instruction_ratios(counts),
                          "differences": instruction_differences(counts)}, indent=2))
    else:
        print_instructions(counts, calls)
    return 0


__all__ = ["INSTRUCTION_ROWS", "DEFAULT_ROWS", "TARGETS", "instruction_counts", "main"]


if __name__ == "__main__":
    if sys.argv[1:2] == ["count"]:
        pomelo_rpc.run(count_row(sys.argv[2], int(sys.argv[3])))
    elif sys.argv[1:2] == ["drive"]:
        pomelo_rpc.run(drive(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        raise SystemExit("internal entry point of python -m pomelo_rpc bench --instructions")
