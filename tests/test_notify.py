"""Notify (one-way calls) on every transport: ``proxy.notify``, ``proxy.notify_server``,
``cli.rpc_notify``. Routed like a call, no answer awaited, the awaitable done once the
request is written; the server runs it under a call's deadlines and admission rules,
counts it as ``notify`` and logs what it raises. Both cores, real sockets.

Node peers: tests/test_mqtt_interop.py (pomelo-rpc 1.0.7) and tests/test_pinus.py.
"""

import asyncio
import logging
import os
import socket
import struct
import time

import msgpack
import pytest

from conftest import REMOTE
from pomelo_rpc import ConnectionLostError, NoServerError, RpcError, client, server
from pomelo_rpc.core import pinus_tcp

SINK = os.path.join(REMOTE, "notify")
TRANSPORTS = ["native", "mqtt", "pinus-tcp"]


async def until(cond, limit=5.0, what="condition"):
    """Poll ``cond()`` (sync) until true, at most ``limit`` s."""
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, f"not within {limit} s: {what}"
        await asyncio.sleep(0.005)


async def pair(core, transport, notes, sopts=None, **copts):
    """A server of the sink service (its notes in ``notes``) and a client of it."""
    sopts = {"context": {"notes": notes}, **(sopts or {})}
    gw = server.create(paths=[{"namespace": "user", "path": SINK}], transport=transport,
                       core=core, **sopts)
    await gw.start()
    cli = client.create(transport=transport, core=core, **copts)
    cli.add_proxies([{"namespace": "user", "server_type": "sink", "path": SINK}])
    cli.add_servers([{"id": "sink-1", "server_type": "sink", "port": gw.port},
                     {"id": "sink-2", "server_type": "sink", "port": gw.port}])
    await cli.start()
    return gw, cli


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_notify_runs_the_method_and_nothing_waits_for_an_answer(core, transport):
    notes = []
    gw, cli = await pair(core, transport, notes)
    try:
        sink = cli.proxies.user.sink.sink
        assert await sink.note.notify({"uid": 1}, "routed") is None
        assert await sink.note.notify_server("sink-1", "direct") is None
        assert await cli.rpc_notify("sink-2", {"namespace": "user", "serverType": "sink",
                                               "service": "sink", "method": "note",
                                               "args": ["invoked"]}) is None
        assert await sink.anote.notify_server("sink-1", "async", 0.01) is None
        await until(lambda: len(notes) == 4, what="the four notifies run")
        assert sorted(notes) == [("anote", "async"), ("note", "direct"), ("note", "invoked"),
                                 ("note", "routed")]
        # the calls in flight: none for a native or pinus-tcp notify; an mqtt one holds
        # its id until the answer (dropped) comes back
        for sid in ("sink-1", "sink-2"):
            await until(lambda sid=sid: cli.in_flight(sid) == 0, what="nothing in flight")
        # a call after them is answered as usual, with the count of every notify
        assert await sink.count.to_server("sink-1") == 4
        await sink.note.notify_server("*", "everyone")
        await until(lambda: notes.count(("note", "everyone")) == 2, what="broadcast")
    finally:
        await cli.stop()
        await gw.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_failing_notify_is_logged_on_the_server(core, transport, caplog):
    """native, pinus-tcp: logged by the server, nothing sent back. mqtt: an ordinary
    request (pomelo-rpc has no notify), whose error answer the client drops."""
    notes = []
    gw, cli = await pair(core, transport, notes)
    try:
        sink = cli.proxies.user.sink.sink
        with caplog.at_level(logging.ERROR, logger="pomelo_rpc.server_protocol"):
            await sink.boom.notify_server("sink-1", "sync boom")
            await sink.aboom.notify_server("sink-1", "async boom")
            if transport == "mqtt":
                await until(lambda: cli.in_flight("sink-1") == 0, what="answers dropped")
            else:
                await until(lambda: sum("boom" in r.getMessage() for r in caplog.records) >= 2,
                            what="both failures logged")
        text = "\n".join(r.getMessage() for r in caplog.records)
        if transport != "mqtt":
            assert "notify user.sink.boom failed: ValueError: sync boom" in text
            assert "notify user.sink.aboom failed: KeyError" in text
        assert await sink.count.to_server("sink-1") == 0     # the connection is fine
    finally:
        await cli.stop()
        await gw.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_notify_runs_under_its_deadline(core, transport):
    """The budget of a notify is its timeout: an async method still running at its
    deadline is cancelled, as a call's would be."""
    notes = []
    gw, cli = await pair(core, transport, notes)
    try:
        await cli.proxies.user.sink.sink.held.notify_server("sink-1", 5.0, timeout=0.2)
        await until(lambda: ("cancelled", 5.0) in notes, what="cut at its deadline")
        assert gw.acceptor.overload.cancelled == 1
    finally:
        await cli.stop()
        await gw.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_notify_past_max_in_flight_is_refused_and_logged(core, transport, caplog):
    notes = []
    gw, cli = await pair(core, transport, notes, {"max_in_flight": 1})
    try:
        sink = cli.proxies.user.sink.sink
        held = asyncio.ensure_future(sink.held.to_server("sink-1", 0.3))
        await until(lambda: ("started", 0.3) in notes, what="the held call")
        with caplog.at_level(logging.WARNING, logger="pomelo_rpc.server_protocol"):
            await sink.note.notify_server("sink-1", "refused")
            await until(lambda: gw.acceptor.overload.busy == 1, what="refused")
        if transport != "mqtt":       # mqtt: answered busy, as any request (dropped)
            assert "notify user.sink.note not run: refused: server busy" in caplog.text
        await held
        assert ("note", "refused") not in notes
    finally:
        await cli.stop()
        await gw.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_notify_fails_when_it_cannot_be_written(core, transport):
    notes = []
    gw, cli = await pair(core, transport, notes)
    sink = cli.proxies.user.sink.sink
    try:
        with pytest.raises(NoServerError):
            await sink.note.notify_server("nobody", 1)
        cli.add_servers([{"id": "gone", "server_type": "other", "port": _dead_port()}])
        with pytest.raises(ConnectionLostError):
            await sink.note.notify_server("gone", 1)
        with pytest.raises(TypeError):
            await sink.note.notify_server("sink-1", object())     # cannot be serialized
        # the first use of a mailbox is a notify: it connects, then writes
        await sink.note.notify_server("sink-2", "first")
        await until(lambda: ("note", "first") in notes)
    finally:
        await cli.stop()
        await gw.stop()
    with pytest.raises(RpcError, match="not started"):
        await sink.note.notify_server("sink-1", 1)


def _dead_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_filters_see_a_notify(core, transport):
    notes = []
    gw, cli = await pair(core, transport, notes)
    seen = []
    cli.before(lambda sid, msg: ("sink-2", {**msg, "args": ["changed"]}))
    cli.after(lambda sid, msg, result, error: seen.append((sid, result, error)))
    try:
        await cli.proxies.user.sink.sink.note.notify_server("sink-1", "original")
        await until(lambda: notes == [("note", "changed")])
        assert seen == [("sink-2", None, None)]
    finally:
        await cli.stop()
        await gw.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_metrics_count_a_notify_as_notify(core, transport):
    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    notes = []
    gw, cli = await pair(core, transport, notes, {"metrics": True, "metrics_registry": registry,
                                                  "context": {"notes": notes,
                                                              "server_id": "sink"}},
                         metrics=True, metrics_registry=registry)
    try:
        sink = cli.proxies.user.sink.sink
        await sink.note.notify_server("sink-1", 1)
        await sink.anote.notify_server("sink-1", 2)
        await sink.note.to_server("sink-1", 3)
        await until(lambda: len(notes) == 3)

        def value(side, route, outcome):
            return registry.get_sample_value(f"pomelo_rpc_{side}_calls_total", {
                "route": f"user.sink.{route}", "outcome": outcome,
                "server": "sink-1" if side == "client" else "sink"})
        # the server: a notify is a notify (mqtt: an ordinary request, pomelo-rpc has none)
        served = "ok" if transport == "mqtt" else "notify"
        await until(lambda: value("server", "anote", served) == 1, what="server counts")
        assert value("server", "note", served) == (2 if transport == "mqtt" else 1)
        assert value("client", "note", "notify") == 1 and value("client", "note", "ok") == 1
        assert value("client", "anote", "notify") == 1
    finally:
        await cli.stop()
        await gw.stop()


async def test_rpc_debug_log_carries_a_notify(core, caplog):
    notes = []
    gw, cli = await pair(core, "native", notes, {"rpc_debug_log": True}, rpc_debug_log=True)
    try:
        with caplog.at_level(logging.DEBUG, logger="pomelo_rpc.trace"):
            await cli.proxies.user.sink.sink.note.notify_server("sink-1", "traced")
            await until(lambda: notes == [("note", "traced")])
        assert "sent" in caplog.text and "received" in caplog.text
    finally:
        await cli.stop()
        await gw.stop()


# the wire ------------------------------------------------------------------------------

def _frame(obj):
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


async def _read_frame(reader):
    size = struct.unpack(">I", await reader.readexactly(4))[0]
    return msgpack.unpackb(await reader.readexactly(size), raw=False)


async def test_native_notify_frames_get_no_answer(core):
    """A notify frame (by name, by id, with trace and budget) is run and answered with
    nothing: the first frame back is the answer to the call sent after them."""
    notes = []
    gw = server.create(paths=[{"namespace": "user", "path": SINK}], core=core,
                       context={"notes": notes})
    await gw.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        hello = await _read_frame(reader)
        mid = hello[2].index(["user", "sink", "note"])
        count = hello[2].index(["user", "sink", "count"])
        writer.write(_frame([11, None, "user", "sink", "note", ["by name"]])
                     + _frame([10, None, mid, ["by id"]])
                     + _frame([10, None, mid, ["traced"], "trace-1"])
                     + _frame([10, None, mid, ["budget"], None, 5000])
                     + _frame([11, None, "user", "sink", "note", ["both"], None, 5000])
                     + _frame([10, None, 999, ["no such method"]])
                     + _frame([1, 7, count, []]))
        assert await asyncio.wait_for(_read_frame(reader), 5) == [3, 7, 5]
        assert [n[1] for n in notes] == ["by name", "by id", "traced", "budget", "both"]
        # a malformed notify frame closes the connection, as a malformed request does
        writer.write(_frame([10, None, mid]))
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
        await gw.stop()


async def test_pinus_tcp_id_zero_is_a_notify(core):
    notes = []
    gw = server.create(paths=[{"namespace": "user", "path": SINK}], core=core,
                       transport="pinus-tcp", context={"notes": notes})
    await gw.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        def request(rid, method, *args):
            body = {"id": rid, "msg": {"namespace": "user", "serverType": "sink",
                                       "service": "sink", "method": method, "args": list(args)}}
            if rid is None:
                del body["id"]
            return pinus_tcp.encode_request(msgpack_free_json(body))
        writer.write(request(0, "note", "zero") + request(None, "note", "none")
                     + request(3, "count"))
        frame = await asyncio.wait_for(_read_pinus(reader), 5)
        assert frame == (pinus_tcp.RESPONSE, b'{"id":3,"resp":[null,2]}')
    finally:
        writer.close()
        await gw.stop()


def msgpack_free_json(obj):
    import json
    return json.dumps(obj, separators=(",", ":")).encode()


async def _read_pinus(reader):
    decoder = pinus_tcp.PinusDecoder()
    while True:
        frames = decoder.feed(await reader.read(65536))
        if frames:
            return frames[0]
