"""reload_remotes (services reloaded when their files change, method ids kept) and
rpc_debug_log (a trace id carried across the hop, logged on both sides), both cores.

The dispatcher half runs on each core directly; the rest on in-process gateways with
real sockets (so that caplog sees the client's and the server's log lines), plus one
real ``serve --reload-remotes`` process.
"""

import asyncio
import json
import logging
import os
import re
import struct
import textwrap
import time

import msgpack
import pytest

from conftest import REMOTE
from test_mqtt_interop import NodeServer, node  # noqa: F401 - ``node``: the fixture
from pomelo_rpc import RemoteError, client, server
from pomelo_rpc import core as core_pkg
from pomelo_rpc.errors import DispatchError

TEST_DIR = os.path.join(REMOTE, "test")


def noop(*args):
    return args


def entries(*names, func=noop):
    return [("user", "svc", name, func, 0, -1, False) for name in names]


# the dispatcher: replace and the trace field -------------------------------------

def test_replace_keeps_ids_and_answers_removed_ones(core):
    d = core_pkg.select(core).dispatch
    disp = d.Dispatcher(entries("a", "b", "c"))
    assert disp.table == [["user", "svc", "a"], ["user", "svc", "b"], ["user", "svc", "c"]]

    def new_a():
        return "new a"

    disp.replace([("user", "svc", "a", new_a, 0, 0, False)] + entries("c", "d")
                 + [("user", "other", "x", noop, 0, -1, False)])
    # ids of methods that stay are unchanged, new ones are appended
    assert disp.table == [["user", "svc", "a"], ["user", "svc", "b"], ["user", "svc", "c"],
                          ["user", "svc", "d"], ["user", "other", "x"]]
    assert len(disp) == 4
    assert [m.mid for m in disp.methods] == [0, 2, 3, 4]
    assert disp.by_id(0).func is new_a and disp.by_name("user", "svc", "a").mid == 0
    assert disp.dispatch([1, 5, 0, []]) == (5, d.DONE, "new a")
    assert disp.dispatch([1, 6, 3, [1]]) == (6, d.DONE, (1,))
    # a removed method answers clearly, by id and by name
    rid, state, exc = disp.dispatch([1, 7, 1, []])
    assert (rid, state, type(exc)) == (7, d.FAILED, DispatchError)
    assert str(exc) == "user.svc.b was removed (method id 1)"
    rid, state, exc = disp.dispatch([2, 8, "user", "svc", "b", []])
    assert (state, str(exc)) == (d.FAILED, "user.svc.b was removed")
    with pytest.raises(DispatchError, match="unknown method user.svc.zz"):
        disp.by_name("user", "svc", "zz")
    with pytest.raises(DispatchError, match="unknown method id 5"):
        disp.by_id(5)
    # a method that comes back gets its old id back
    disp.replace(entries("a", "b"))
    assert len(disp.table) == 5 and disp.by_name("user", "svc", "b").mid == 1
    assert [m.mid for m in disp.methods] == [0, 1]
    with pytest.raises(DispatchError, match="user.other.x was removed"):
        disp.by_name("user", "other", "x")
    # all or nothing
    with pytest.raises(ValueError, match="duplicate remote method user.svc.q"):
        disp.replace(entries("a", "q", "q", "new"))
    assert len(disp.table) == 5 and [m.mid for m in disp.methods] == [0, 1]
    disp.replace([])
    assert len(disp) == 0 and len(disp.table) == 5


def test_a_repeated_route_reaches_the_method_replaced(core):
    # a connection repeats a route with the same str objects (its learnt head's): the
    # method found last is kept for it, and never outlives a replace
    d = core_pkg.select(core).dispatch
    disp = d.Dispatcher(entries("a", "b"))
    ns, svc, name = "user", "svc", "a"
    assert disp.dispatch([2, 1, ns, svc, name, [1]]) == (1, d.DONE, (1,))
    assert disp.dispatch([2, 2, ns, svc, name, [2]]) == (2, d.DONE, (2,))
    disp.replace([("user", "svc", "a", lambda x: x * 10, 1, 1, False)] + entries("b"))
    assert disp.dispatch([2, 3, ns, svc, name, [3]]) == (3, d.DONE, 30)
    disp.replace(entries("b"))
    rid, state, exc = disp.dispatch([2, 4, ns, svc, name, []])
    assert (state, str(exc)) == (d.FAILED, "user.svc.a was removed")
    assert disp.dispatch([2, 5, ns, svc, "b", [5]]) == (5, d.DONE, (5,))


def test_requests_may_carry_a_trace_id(core):
    d = core_pkg.select(core).dispatch
    disp = d.Dispatcher(entries("a", "b"))
    assert disp.dispatch([1, 1, 1, [7], "cli-1"]) == (1, d.DONE, (7,))
    assert disp.dispatch([2, 2, "user", "svc", "a", [8], "cli-2"]) == (2, d.DONE, (8,))
    assert disp.dispatch([1, 3, 1, [7], None]) == (3, d.DONE, (7,))
    assert disp.describe([1, 1, 1, [7], "cli-1"]) == ("cli-1", "user.svc.b")
    assert disp.describe([1, 1, 1, [7]]) == (None, "user.svc.b")
    assert disp.describe([2, 2, "user", "svc", "zz", [], "cli-2"]) == ("cli-2", "user.svc.zz")
    assert disp.describe([1, 1, 99, [], "t"]) == ("t", None)
    assert disp.describe([1, 1, 0, [], 12]) == (None, "user.svc.a")     # not a str: no id
    assert disp.describe([3, 1, 0, [], "t"]) == (None, None)
    for not_a_request in ([5], None, "x", [1, "1", 0, []], (1, 1, 0, [])):
        assert disp.describe(not_a_request) is None
    disp.replace(entries("b"))
    assert disp.describe([1, 1, 0, [], "t"]) == ("t", "user.svc.a")     # removed: still named


def test_replace_and_describe_same_in_both_cores():
    if len(core_pkg.available()) < 2:
        pytest.skip("only one core here")
    msgs = [[1, 1, 0, []], [1, 1, 1, [], "t"], [1, 1, 2, [], "t", "x"], [1, 1, 9, []],
            [2, 1, "user", "svc", "a", [], "t"], [2, 1, "user", "svc", "b", []],
            [2, 1, "user", "svc", "b", [], 5], [2, 1, "user", "svc", "b", [], "t", "x"],
            [2, 1, "user", "nope", "b", []], [5], [], None, [1, 2.0, 0, []]]

    def run(name):
        d = core_pkg.select(name).dispatch
        disp = d.Dispatcher(entries("a", "b", "c"))
        disp.replace(entries("c", "a", "e"))
        out = [disp.table, len(disp), [m.mid for m in disp.methods]]
        for msg in msgs:
            try:
                rid, state, outcome = disp.dispatch(msg)
                out.append((rid, state, repr(outcome)))
            except Exception as exc:
                out.append(("raised", type(exc).__name__, str(exc)))
            out.append(disp.describe(msg))
        return out

    assert run("cython") == run("python")


# reload_remotes --------------------------------------------------------------------

SVC_V1 = """
import asyncio

def echo(x):
    return ["v1", x]

def keep():
    return "kept"

def gone():
    return "still here"

async def slow(delay):
    await asyncio.sleep(delay)
    return "old slow"
"""

SVC_V2 = """
import asyncio

def echo(x):
    return ["v2", x]

def keep():
    return "kept"

def fresh():
    return "fresh"

async def slow(delay):
    await asyncio.sleep(delay)
    return "new slow"
"""

OTHER = """
class Other:
    def __init__(self, context):
        self.server_id = context["server_id"]

    def ping(self):
        return "pong from " + self.server_id


def create(context):
    return Other(context)
"""


def write(path, text):
    """Write a service file and make sure its mtime moves (coarse clocks, same second)."""
    old = os.stat(path).st_mtime_ns if os.path.exists(path) else 0
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    now = max(time.time_ns(), old + 1_000_000_000)
    os.utime(path, ns=(now, now))


async def until(predicate, timeout=10.0, what="condition"):
    """Poll an async or sync predicate until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def call(cli, method, *args, service="svc"):
    return cli.rpc_invoke("srv-1", {"namespace": "user", "server_type": "t", "service": service,
                                    "method": method, "args": list(args)})


async def returns(cli, expected, method, *args, service="svc"):
    """True once ``method(*args)`` returns ``expected`` (an error counts as not yet)."""
    try:
        return await call(cli, method, *args, service=service) == expected
    except RemoteError:
        return False


def frame(obj):
    body = msgpack.packb(obj)
    return struct.pack(">I", len(body)) + body


async def read_frame(reader, timeout=5):
    (size,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), timeout))
    return msgpack.unpackb(await asyncio.wait_for(reader.readexactly(size), timeout),
                           raw=False)


async def test_reload_while_connected(core, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pomelo_rpc")
    remote = tmp_path / "remote"
    remote.mkdir()
    svc = str(remote / "svc.py")
    write(svc, SVC_V1)
    gw = server.create(paths=[{"namespace": "user", "path": str(remote)}], core=core,
                       context={"server_id": "srv-1"}, reload_remotes=True,
                       reload_interval=0.05)
    await gw.start()
    cli = client.create(core=core)
    await cli.start()
    cli.add_servers([{"id": "srv-1", "server_type": "t", "port": gw.port}])
    # a raw connection sees the HELLOs as they come
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        hello = await read_frame(reader)
        assert hello[0] == 0
        first_table = hello[2]
        assert await call(cli, "echo", 1) == ["v1", 1]
        mailbox = cli._station.mailboxes["srv-1"]
        ids_before = dict(mailbox.protocol.ids)
        assert set(ids_before) == {("user", "svc", m) for m in ("echo", "keep", "gone", "slow")}

        # a call running on the old code while the file changes finishes on it
        running = asyncio.ensure_future(call(cli, "slow", 0.6))
        await asyncio.sleep(0.05)
        write(svc, SVC_V2)
        await until(lambda: returns(cli, ["v2", 2], "echo", 2), what="the new echo")
        assert await running == "old slow"
        assert await call(cli, "slow", 0) == "new slow"

        # ids of the methods that stay are the same; the new one is appended and the
        # connected client learns it from a new HELLO on its open connection
        await until(lambda: ("user", "svc", "fresh") in mailbox.protocol.ids, what="the new HELLO")
        for key, mid in ids_before.items():
            assert mailbox.protocol.ids[key] == mid, key
        assert mailbox.protocol.ids[("user", "svc", "fresh")] == len(ids_before)
        hello2 = await read_frame(reader)
        assert hello2[0] == 0 and hello2[2][:len(first_table)] == first_table
        assert hello2[2][len(first_table):] == [["user", "svc", "fresh"]]
        assert await call(cli, "fresh") == "fresh"
        assert await call(cli, "keep") == "kept"
        # the removed method: by id (what the client sends) and by name
        with pytest.raises(RemoteError, match=r"user\.svc\.gone was removed") as info:
            await call(cli, "gone")
        assert info.value.remote_type == "DispatchError"
        writer.write(frame([2, 77, "user", "svc", "gone", []]))
        kind, rid, (type_name, message, _stack) = await read_frame(reader)
        assert (kind, rid, type_name, message) == (4, 77, "DispatchError",
                                                   "user.svc.gone was removed")

        # a new file is served, a removed one answers that it was removed
        other = str(remote / "other.py")
        write(other, OTHER)
        await until(lambda: "srv-1" in str(getattr(gw.services["user"].get("other"),
                                                   "server_id", "")), what="other.py")
        assert await call(cli, "ping", service="other") == "pong from srv-1"
        os.remove(other)
        await until(lambda: "other" not in gw.services["user"], what="other.py removed")
        with pytest.raises(RemoteError, match=r"user\.other\.ping was removed"):
            await call(cli, "ping", service="other")

        # a syntax error: logged, the old code keeps serving; fixed: served again
        caplog.clear()
        write(svc, SVC_V2.replace("def keep():", "def keep(:"))
        await until(lambda: any(r.levelno == logging.ERROR and "svc" in r.getMessage()
                                for r in caplog.records), what="the reload error")
        error = next(r for r in caplog.records if r.levelno == logging.ERROR)
        assert "the old code keeps serving" in error.getMessage()
        assert error.exc_info is not None and error.exc_info[0] is SyntaxError
        assert await call(cli, "echo", 3) == ["v2", 3]
        assert await call(cli, "keep") == "kept"
        write(svc, SVC_V2.replace('["v2", x]', '["v3", x]'))
        await until(lambda: returns(cli, ["v3", 4], "echo", 4), what="v3 served")
        assert mailbox.protocol.ids[("user", "svc", "echo")] == ids_before[("user", "svc", "echo")]
    finally:
        writer.close()
        await cli.stop()
        await gw.stop()


async def test_serve_process_reloads_its_remotes(aspawn, core, tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    svc = str(remote / "svc.py")
    write(svc, SVC_V1)
    srv = await aspawn("srv-1", server_type="t", remotes={"user": str(remote)}, core=core,
                       args=["--reload-remotes", "--reload-interval", "0.05"])
    cli = client.create(core=core)
    await cli.start()
    cli.add_servers([srv.info])
    try:
        assert await call(cli, "echo", 1) == ["v1", 1]
        write(svc, SVC_V2)
        await until(lambda: returns(cli, "fresh", "fresh"), what="the new method")
        assert await call(cli, "echo", 1) == ["v2", 1]
        with pytest.raises(RemoteError, match=r"user\.svc\.gone was removed"):
            await call(cli, "gone")
    finally:
        await cli.stop()


async def test_without_reload_remotes_edits_are_not_served(core, tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    svc = str(remote / "svc.py")
    write(svc, SVC_V1)
    gw = server.create(paths=[{"namespace": "user", "path": str(remote)}], core=core)
    await gw.start()
    cli = client.create(core=core)
    await cli.start()
    cli.add_servers([{"id": "srv-1", "server_type": "t", "port": gw.port}])
    try:
        write(svc, SVC_V2)
        await asyncio.sleep(0.2)
        assert gw.check_remotes() == []
        assert await call(cli, "echo", 1) == ["v1", 1]
    finally:
        await cli.stop()
        await gw.stop()


# rpc_debug_log -----------------------------------------------------------------------

LINE = re.compile(r"^rpc (send|done|received|answered) trace=(\S+) route=(\S+) server=(\S+)"
                  r"(?: (ok|error .*) in ([0-9.]+) ms)?$", re.S)


def trace_lines(caplog):
    out = []
    for r in caplog.records:
        if r.name != "pomelo_rpc.trace":
            continue
        assert r.levelno == logging.DEBUG
        m = LINE.match(r.getMessage())
        assert m, r.getMessage()
        out.append(m.groups())
    return out


async def traced_pair(core, transport, server_log=True, client_log=True):
    gw = server.create(paths=[{"namespace": "user", "path": TEST_DIR}], core=core,
                       transport=transport, context={"server_id": "srv-1"},
                       rpc_debug_log=server_log)
    await gw.start()
    cli = client.create(core=core, transport=transport, context={"server_id": "conn-1"},
                        rpc_debug_log=client_log)
    cli.add_proxies([{"namespace": "user", "server_type": "t", "path": TEST_DIR}])
    cli.add_servers([{"id": "srv-1", "server_type": "t", "port": gw.port}])
    await cli.start()
    return gw, cli


@pytest.mark.parametrize("transport", ["native", "mqtt"])
async def test_trace_id_logged_on_both_sides(core, transport, caplog):
    caplog.set_level(logging.DEBUG, logger="pomelo_rpc.trace")
    gw, cli = await traced_pair(core, transport)
    svc = cli.proxies.user.t.service
    try:
        assert await svc.echo.to_server("srv-1", "hi") == "hi"
        assert await svc.slow_echo.to_server("srv-1", "later", 0.05) == "later"
        with pytest.raises(RemoteError, match="boom"):
            await svc.fail.to_server("srv-1", "boom")
        assert await svc.echo.to_server("srv-1", "again") == "again"   # by id when native
        await asyncio.sleep(0.05)
    finally:
        await cli.stop()
        await gw.stop()
    lines = trace_lines(caplog)
    traces = []
    for step, trace, route, server_id, outcome, ms in lines:
        assert server_id == "srv-1"
        if trace not in traces:
            traces.append(trace)
    assert len(traces) == 4
    routes = ["user.service.echo", "user.service.slow_echo", "user.service.fail",
              "user.service.echo"]
    for trace, route in zip(traces, routes):
        # the W3C trace id of the call's trace context (what an OpenTelemetry backend shows)
        assert re.fullmatch(r"[0-9a-f]{32}", trace)
        mine = [(step, r, outcome) for step, t, r, _s, outcome, _ms in lines if t == trace]
        # one line per step, each side's pair in order, the same route everywhere
        assert sorted(step for step, _r, _o in mine) == ["answered", "done", "received", "send"]
        steps = [step for step, _r, _o in mine]
        assert steps.index("send") < steps.index("received") < steps.index("answered")
        assert steps.index("send") < steps.index("done")
        assert {r for _s, r, _o in mine} == {route}
        outcomes = {step: outcome for step, _r, outcome in mine}
        if route.endswith("fail"):
            assert outcomes["answered"] == "error ValueError: boom"
            assert outcomes["done"].startswith("error RemoteError: ") and "boom" in outcomes["done"]
        else:
            assert outcomes["answered"] == outcomes["done"] == "ok"
    slow = [float(ms) for step, t, _r, _s, _o, ms in lines if t == traces[1] and ms]
    assert len(slow) == 2 and all(v >= 40 for v in slow)


async def test_nothing_traced_when_off(core, caplog):
    caplog.set_level(logging.DEBUG, logger="pomelo_rpc.trace")
    gw, cli = await traced_pair(core, "native", server_log=False, client_log=False)
    try:
        assert await cli.proxies.user.t.service.echo.to_server("srv-1", "hi") == "hi"
        assert await cli.proxies.user.t.service.slow_echo.to_server("srv-1", "x", 0) == "x"
    finally:
        await cli.stop()
        await gw.stop()
    assert [r for r in caplog.records if r.name == "pomelo_rpc.trace"] == []


async def test_one_side_tracing(core, caplog):
    caplog.set_level(logging.DEBUG, logger="pomelo_rpc.trace")
    # a tracing client and a server without the option: the trace field is accepted
    gw, cli = await traced_pair(core, "native", server_log=False, client_log=True)
    try:
        assert await cli.proxies.user.t.service.echo.to_server("srv-1", "hi") == "hi"
    finally:
        await cli.stop()
        await gw.stop()
    assert [step for step, *_ in trace_lines(caplog)] == ["send", "done"]
    caplog.clear()
    # a tracing server and a client without it: logged, without a trace id
    gw, cli = await traced_pair(core, "native", server_log=True, client_log=False)
    try:
        assert await cli.proxies.user.t.service.echo.to_server("srv-1", "hi") == "hi"
    finally:
        await cli.stop()
        await gw.stop()
    lines = trace_lines(caplog)
    assert [(step, trace, route) for step, trace, route, *_ in lines] == [
        ("received", "None", "user.service.echo"), ("answered", "None", "user.service.echo")]


async def test_mqtt_server_reads_pomelo_trace_fields(core, caplog):
    """What pomelo-rpc 1.0.7's mqtt mailbox sends with its rpcDebugLog on."""
    caplog.set_level(logging.DEBUG, logger="pomelo_rpc.trace")
    mqtt = core_pkg.select(core).mqtt
    gw = server.create(paths=[{"namespace": "user", "path": TEST_DIR}], core=core,
                       transport="mqtt", context={"server_id": "srv-1"}, rpc_debug_log=True)
    await gw.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        pkg = {"traceId": "6c84fb90-12c4-11e1-840d-7b25c5ee775a", "seqId": 1,
               "source": "connector-server-1", "remote": "srv-1", "id": 0,
               "msg": {"namespace": "user", "serverType": "t", "service": "service",
                       "method": "echo", "args": ["hi"]}}
        writer.write(mqtt.encode_connect(None, 0)
                     + mqtt.encode_publish(json.dumps(pkg).encode()))
        decoder = mqtt.MqttDecoder()
        packets = []
        while not packets:
            packets = decoder.feed(await asyncio.wait_for(reader.read(65536), 5))
        assert json.loads(packets[0][2]) == {"id": 0, "resp": [None, "hi"]}
    finally:
        writer.close()
        await gw.stop()
    lines = trace_lines(caplog)
    assert [(step, trace, route) for step, trace, route, *_ in lines] == [
        ("received", pkg["traceId"], "user.service.echo"),
        ("answered", pkg["traceId"], "user.service.echo")]


async def test_traced_mqtt_client_calls_a_node_server(core, node, tmp_path, caplog):
    """The tracing fields our mqtt mailbox adds are pomelo-rpc's own: its server takes them."""
    caplog.set_level(logging.DEBUG, logger="pomelo_rpc.trace")
    srv = NodeServer(node, tmp_path / "server.log")
    cli = client.create(transport="mqtt", core=core, context={"server_id": "conn-1"},
                        rpc_debug_log=True)
    cli.add_servers([{"id": "node-1", "serverType": "test", "port": srv.port}])
    await cli.start()
    try:
        for value in ("hi", {"a": [1, None]}):
            assert await cli.rpc_invoke("node-1", {
                "namespace": "user", "serverType": "test", "service": "service",
                "method": "echo", "args": [value]}) == value
    finally:
        await cli.stop()
        srv.stop()
    lines = trace_lines(caplog)
    assert [(step, route, server_id, outcome) for step, _t, route, server_id, outcome, _ms
            in lines] == [("send", "user.service.echo", "node-1", None),
                          ("done", "user.service.echo", "node-1", "ok")] * 2
