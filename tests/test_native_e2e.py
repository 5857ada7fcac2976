"""End to end over the native transport: a real server process, proxies and rpc_invoke."""

import asyncio
import os
import socket
import struct
import time

import msgpack
import pytest

from conftest import REMOTE, wait_available
from pomelo_rpc import (ConnectionLostError, NoServerError, PendingQueueFullError, RemoteError,
                        RpcError, RpcTimeoutError, client, server, ServerUnavailableError)
from pomelo_rpc.proxy import BroadcastError

TEST_DIR = os.path.join(REMOTE, "test")
AREA_DIR = os.path.join(REMOTE, "area")


def make_client(core, servers, **opts):
    cli = client.create(core=core, **opts)
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_DIR},
                     {"namespace": "user", "serverType": "area", "path": AREA_DIR}])
    cli.add_servers([s.info for s in servers])
    return cli


async def test_proxies_echo_sync_async_and_errors(aspawn, core):
    srv = await aspawn("test-1", core=core)
    cli = make_client(core, [srv])
    await cli.start()
    svc = cli.proxies.user.test.service
    assert await svc.echo(None, "hello") == "hello"
    payload = {"a": [1, 2.5, None, True], "b": "ünï", "c": b"\x00\xff", "d": {"e": {}}}
    assert await svc.echo(None, payload) == payload
    assert await svc.add(None, 2, 3) == 5
    assert await svc.add(None, 2) == 2
    assert await svc.slow_echo(None, "later", 0.01) == "later"
    assert await svc.variadic(None, 1, 2, 3) == 3
    assert await cli.proxies.user.test.stateful.incr(None, 5) == 5
    assert await cli.proxies.user.test.stateful.whoami(None) == "test-1"

    with pytest.raises(RemoteError) as info:
        await svc.fail(None, "boom")
    assert info.value.remote_type == "ValueError"
    assert info.value.message == "boom"
    assert info.value.server_id == "test-1"
    assert "ValueError: boom" in info.value.remote_stack

    with pytest.raises(RemoteError) as info:
        await svc.async_fail(None, "gone")
    assert info.value.remote_type == "KeyError"

    with pytest.raises(RemoteError) as info:
        await svc.echo(None, "a", "b")
    assert info.value.remote_type == "DispatchError"
    assert "user.service.echo takes 1 argument(s), got 2" in info.value.message

    with pytest.raises(RemoteError) as info:
        await svc.unserializable(None)
    assert "cannot be serialized" in info.value.message

    with pytest.raises(AttributeError, match="no remote 'nope'"):
        svc.nope
    assert not hasattr(svc, "_private")
    await cli.stop()


async def test_rpc_invoke_with_camel_and_snake_keys_and_unknown_names(aspawn, core):
    srv = await aspawn("test-1", core=core)
    cli = make_client(core, [srv])
    await cli.start()
    msg = {"namespace": "user", "serverType": "test", "service": "service",
           "method": "echo", "args": ["hi"]}
    assert await cli.rpc_invoke("test-1", msg) == "hi"
    msg = {"namespace": "user", "server_type": "test", "service": "stateful",
           "method": "incr", "args": [3]}
    assert await cli.rpc_invoke("test-1", msg) == 3

    expected = {("user", "service", "nope"): "unknown method user.service.nope",
                ("user", "nosuch", "echo"): "unknown service user.nosuch",
                ("sys", "service", "echo"): "unknown namespace 'sys'"}
    for (ns, service, method), text in expected.items():
        with pytest.raises(RemoteError) as info:
            await cli.rpc_invoke("test-1", {"namespace": ns, "server_type": "test",
                                            "service": service, "method": method, "args": []})
        assert info.value.remote_type == "DispatchError"
        assert text in info.value.message

    with pytest.raises(NoServerError, match="unknown server id 'test-9'"):
        await cli.rpc_invoke("test-9", msg)
    # the connection survived every error above
    assert await cli.proxies.user.test.service.echo(None, "still") == "still"
    await cli.stop()


async def test_thousand_concurrent_calls_all_answered(aspawn, core):
    srv = await aspawn("test-1", core=core)
    cli = make_client(core, [srv])
    await cli.start()
    echo = cli.proxies.user.test.service.echo
    slow = cli.proxies.user.test.service.slow_echo
    calls = [echo(None, {"i": i}) if i % 2 else slow(None, {"i": i}, 0.001) for i in range(1000)]
    results = await asyncio.gather(*calls)
    assert results == [{"i": i} for i in range(1000)]
    assert cli.in_flight("test-1") == 0
    await cli.stop()


async def test_timeout_fails_the_call_and_leaves_nothing_pending(aspawn, core):
    srv = await aspawn("test-1", core=core)
    cli = make_client(core, [srv], timeout=0.2)
    await cli.start()
    slow = cli.proxies.user.test.service.slow_echo
    t0 = time.monotonic()
    with pytest.raises(RpcTimeoutError, match="user.service.slow_echo to test-1"):
        await slow(None, "x", 5)
    assert 0.19 <= time.monotonic() - t0 < 1.0
    with pytest.raises(RpcTimeoutError):
        await slow(None, "x", 5, timeout=0.05)
    assert await slow(None, "fast", 0, timeout=2) == "fast"
    assert cli.in_flight("test-1") == 0
    await cli.stop()


async def test_default_router_to_server_and_broadcast(aspawn, core):
    servers = [await aspawn(f"area-{i}", "area", {"user": AREA_DIR}, core=core) for i in range(3)]
    cli = make_client(core, servers)
    await cli.start()
    where = cli.proxies.user.area.player.where
    seen = {}
    for uid in range(60):
        answer = await where({"uid": uid}, uid)
        again = await where({"uid": uid}, uid)
        assert answer == again, "the same uid must land on the same server"
        seen[answer["server_id"]] = seen.get(answer["server_id"], 0) + 1
    assert set(seen) == {"area-0", "area-1", "area-2"}

    assert (await where.to_server("area-2", 7))["server_id"] == "area-2"
    everyone = await where.to_server("*", 7)
    assert {sid: r["server_id"] for sid, r in everyone.items()} == {
        "area-0": "area-0", "area-1": "area-1", "area-2": "area-2"}

    await servers[1].akill()
    with pytest.raises(BroadcastError) as info:
        await where.to_server("*", 7)
    assert set(info.value.results) == {"area-0", "area-2"}
    assert isinstance(info.value.errors["area-1"], ConnectionLostError)
    await cli.stop()


async def test_no_server_of_type_and_custom_router_errors(aspawn, core):
    srv = await aspawn("test-1", core=core)
    cli = make_client(core, [srv], router=lambda param, msg, ctx: "ghost")
    await cli.start()
    with pytest.raises(NoServerError, match="ghost"):
        await cli.proxies.user.test.service.echo(None, 1)
    await cli.stop()
    cli = make_client(core, [srv])
    await cli.start()
    with pytest.raises(NoServerError, match="no server of type 'area'"):
        await cli.proxies.user.area.player.where(None, 1)
    await cli.stop()


async def test_async_router_and_route_object(aspawn, core):
    srv = await aspawn("test-1", core=core)
    seen = []

    async def router(param, msg, ctx):
        seen.append((param, msg["service"], ctx))
        return ctx[0]["id"]

    cli = make_client(core, [srv], router=router, route_context=[srv.info])
    await cli.start()
    assert await cli.proxies.user.test.service.echo("p", 1) == 1
    assert seen == [("p", "service", [srv.info])]
    await cli.stop()

    class Router:
        def route(self, param, msg, ctx):
            return "test-1"

    cli = make_client(core, [srv], router=Router())
    await cli.start()
    assert await cli.proxies.user.test.service.echo(None, 2) == 2
    await cli.stop()


async def test_killed_server_fails_calls_at_once_and_reconnects(aspawn, core):
    srv = await aspawn("test-1", core=core)
    cli = make_client(core, [srv], timeout=30)
    await cli.start()
    slow = cli.proxies.user.test.service.slow_echo
    calls = [asyncio.ensure_future(slow(None, i, 20)) for i in range(50)]
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    await srv.akill()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert time.monotonic() - t0 < 2
    assert all(isinstance(r, ConnectionLostError) for r in results), results[:3]
    # the server is down for the client (docs/liveness.md): the next call fails at
    # once, without a connect, until a background probe finds it back
    with pytest.raises(ServerUnavailableError, match="server test-1 is unavailable"):
        await cli.proxies.user.test.service.echo(None, 1)
    port = srv.port
    srv2 = await aspawn("test-1", core=core, port=port)
    await wait_available(cli, "test-1")
    assert await cli.proxies.user.test.service.echo(None, "back") == "back"
    await srv2.akill()
    await cli.stop()


async def test_connect_refused_is_a_clear_error(core):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = client.create(core=core, connect_timeout=2)
    cli.add_servers([{"id": "nobody", "server_type": "test", "port": port}])
    await cli.start()
    t0 = time.monotonic()
    with pytest.raises(ConnectionLostError, match=f"cannot connect to nobody at 127.0.0.1:{port}"):
        await cli.rpc_invoke("nobody", {"namespace": "user", "server_type": "test",
                                        "service": "service", "method": "echo", "args": [1]})
    assert time.monotonic() - t0 < 2.5
    await cli.stop()


async def test_pending_queue_is_bounded_while_connecting(aspawn, core):
    srv = await aspawn("test-1", core=core)
    cli = make_client(core, [srv], pending_size=10)
    await cli.start()
    echo = cli.proxies.user.test.service.echo
    results = await asyncio.gather(*(echo(None, i) for i in range(25)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    full = [r for r in results if isinstance(r, PendingQueueFullError)]
    assert ok == list(range(10))
    assert len(full) == 15 and "pending_size=10" in str(full[0])
    # once connected, nothing waits in the queue: many calls at once are fine
    assert await asyncio.gather(*(echo(None, i) for i in range(100))) == list(range(100))
    await cli.stop()


async def test_calls_before_start_and_after_stop_are_refused(aspawn, core):
    srv = await aspawn("test-1", core=core)
    cli = make_client(core, [srv])
    with pytest.raises(RpcError, match="not started"):
        await cli.proxies.user.test.service.echo(None, 1)
    await cli.start()
    slow = asyncio.ensure_future(cli.proxies.user.test.service.slow_echo(None, 1, 10))
    await asyncio.sleep(0.2)
    await cli.stop()
    with pytest.raises(ConnectionLostError, match="client stopped"):
        await slow


def test_unknown_options_and_bad_paths_are_rejected():
    with pytest.raises(TypeError, match="unknown option"):
        client.create(tiemout=1)
    with pytest.raises(TypeError, match="unknown option"):
        server.create(prot=1)
    with pytest.raises(ValueError, match="namespace"):
        server.create(paths=[{"path": TEST_DIR}])
    with pytest.raises(ValueError, match="unknown transport"):
        client.create(transport="carrier-pigeon")
    with pytest.raises(ValueError, match="unknown router_type"):
        client.create(router_type="best")


async def test_in_process_server_graceful_stop_answers_calls_in_flight(core):
    gw = server.create(paths=[{"namespace": "user", "path": TEST_DIR}], port=0, core=core)
    await gw.start()
    assert gw.port > 0
    cli = client.create(core=core)
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_DIR}])
    cli.add_servers([{"id": "s", "server_type": "test", "port": gw.port}])
    await cli.start()
    slow = cli.proxies.user.test.service.slow_echo
    calls = [asyncio.ensure_future(slow(None, i, 0.3)) for i in range(20)]
    await asyncio.sleep(0.1)
    await gw.stop(grace=5)
    assert await asyncio.gather(*calls) == list(range(20))
    with pytest.raises(ConnectionLostError):
        await slow(None, 1, 0)
    await cli.stop()


def _frame(obj):
    body = msgpack.packb(obj)
    return struct.pack(">I", len(body)) + body


def _read_frame(sock):
    header = b""
    while len(header) < 4:
        chunk = sock.recv(4 - len(header))
        if not chunk:
            return None
        header += chunk
    (size,) = struct.unpack(">I", header)
    body = b""
    while len(body) < size:
        body += sock.recv(size - len(body))
    return msgpack.unpackb(body, raw=False)


def test_wire_protocol_hello_ids_and_hostile_bytes(spawn, core):
    srv = spawn("test-1", core=core)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        hello = _read_frame(sock)
        assert hello[0] == 0 and hello[1] == 1
        table = [tuple(entry) for entry in hello[2]]
        mid = table.index(("user", "service", "echo"))
        sock.sendall(_frame([1, 7, mid, ["by id"]]) + _frame([2, 8, "user", "service", "echo",
                                                              ["by name"]]))
        assert _read_frame(sock) == [3, 7, "by id"]
        assert _read_frame(sock) == [3, 8, "by name"]
        sock.sendall(_frame([1, 9, 10_000, []]) + _frame([1, 10, mid, "not a list"]))
        err = _read_frame(sock)
        assert err[:2] == [4, 9] and err[2][0] == "DispatchError"
        err = _read_frame(sock)
        assert err[:2] == [4, 10] and "must be a list" in err[2][1]
        sock.sendall(_frame([5]))
        assert _read_frame(sock) == [6]
        # a frame declaring more than pkg_size: the server closes this connection
        sock.sendall(struct.pack(">I", 0xFFFFFFF0))
        assert _read_frame(sock) is None

    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        _read_frame(sock)
        sock.sendall(struct.pack(">I", 3) + b"\xc1\xc1\xc1")   # not msgpack
        assert _read_frame(sock) is None
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        _read_frame(sock)
        sock.sendall(_frame({"not": "a request"}))
        assert _read_frame(sock) is None
    # the server still serves
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        _read_frame(sock)
        sock.sendall(_frame([2, 1, "user", "service", "echo", ["alive"]]))
        assert _read_frame(sock) == [3, 1, "alive"]


async def test_deadline_wins_over_an_answer_read_after_it(aspawn, core):
    """The loop may read an answer before running a timer that is already due: the
    call must still fail with its timeout, not succeed late."""
    srv = await aspawn("test-1", core=core)
    cli = make_client(core, [srv])
    await cli.start()
    slow = cli.proxies.user.test.service.slow_echo
    assert await slow(None, "warm", 0) == "warm"
    for _ in range(5):
        call = asyncio.ensure_future(slow(None, "late", 0.02, timeout=0.01))
        await asyncio.sleep(0)      # the request is sent
        time.sleep(0.1)             # the loop is busy: the answer and the deadline are both due
        with pytest.raises(RpcTimeoutError):
            await call
    await cli.stop()


async def test_custom_acceptor_and_mailbox_factories(core):
    """acceptor_factory / mailbox_factory replace the transports, as in pomelo."""
    from pomelo_rpc import core as core_pkg
    from pomelo_rpc.acceptor import NativeAcceptor
    from pomelo_rpc.mailbox import NativeMailbox

    made = {"acceptors": 0, "mailboxes": [], "sent": []}

    def acceptor_factory(opts, dispatcher):
        made["acceptors"] += 1
        return NativeAcceptor(opts, dispatcher, core_pkg.select(core))

    class RecordingMailbox(NativeMailbox):
        def send(self, msg, timeout=None):
            made["sent"].append((self.server_id, msg["method"], list(msg["args"])))
            return super().send(msg, timeout)

    def mailbox_factory(info, opts):
        mailbox = RecordingMailbox(info, opts, core_pkg.select(core))
        made["mailboxes"].append(info["id"])
        return mailbox

    gw = server.create(paths=[{"namespace": "user", "path": TEST_DIR}], core=core,
                       acceptor_factory=acceptor_factory)
    await gw.start()
    cli = client.create(core=core, mailbox_factory=mailbox_factory)
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_DIR}])
    cli.add_servers([{"id": "s", "server_type": "test", "port": gw.port}])
    await cli.start()
    assert await cli.proxies.user.test.service.echo(None, "via factories") == "via factories"
    assert made == {"acceptors": 1, "mailboxes": ["s"],
                    "sent": [("s", "echo", ["via factories"])]}
    await cli.stop()
    await gw.stop()
