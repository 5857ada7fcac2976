"""Liveness and health-aware routing without a partition (docs/liveness.md): frozen
servers (SIGSTOP: the kernel still answers TCP, the process says nothing), a busy
server that must not be taken for dead, a server down at start, the server's idle
close and flow control, TCP_USER_TIMEOUT, and the mqtt transport against Python and
Node pomelo-rpc 1.0.7 servers. Client options at their defaults unless a test says
otherwise. (tests/test_partition.py cuts the network itself.)
"""

import asyncio
import os
import signal
import socket
import struct
import time

import msgpack
import pytest

from cluster import AREA_DIR, area_client, astart_areas
from conftest import REMOTE, until, wait_available
from pomelo_rpc import (ConnectionLostError, RpcTimeoutError, ServerUnavailableError, client,
                        server)
from pomelo_rpc.router import crc32_index
from test_mqtt_interop import NodeServer, node  # noqa: F401 - the node fixture

TEST_DIR = os.path.join(REMOTE, "test")
TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)

#: a dead connection under load is found this long after the last byte, at most (the
#: default liveness_timeout is 1.5 s; the rest is the watchdog's wake-up on a busy machine)
FOUND_WITHIN = 3.0


@pytest.mark.parametrize("transport", ["native", "mqtt"])
async def test_frozen_server_found_and_routed_around(aspawn, core, transport):
    """3 servers, 30 calls in flight, rr + failover, one server SIGSTOPped: found within
    ~2 s, its calls resent to the others (none fails), the others serve throughout;
    after SIGCONT a background probe puts it back in rotation."""
    servers = list(await asyncio.gather(
        *(aspawn(f"area-{i}", "area", {"user": AREA_DIR}, core=core, transport=transport)
          for i in range(3))))
    cli = area_client(core, servers, router_type="rr", fail_mode="failover",
                      transport=transport)
    await cli.start()
    echo = cli.proxies.user.area.work.echo
    calls = []
    stop = False

    async def worker(w):
        i = 0
        while not stop:
            t0 = time.monotonic()
            try:
                outcome = (await echo(None, (w, i)))["server_id"]
            except Exception as exc:  # noqa: BLE001 - recorded, checked below
                outcome = exc
                await asyncio.sleep(0.01)
            calls.append((t0, time.monotonic(), outcome))
            i += 1

    workers = [asyncio.ensure_future(worker(w)) for w in range(30)]
    await asyncio.sleep(0.5)
    os.kill(servers[2].proc.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        found = await until(lambda: not cli.server_state("area-2")["available"],
                            FOUND_WITHIN, "the frozen server was never declared down")
        await asyncio.sleep(0.5)
    finally:
        os.kill(servers[2].proc.pid, signal.SIGCONT)
    thawed_at = time.monotonic()
    await wait_available(cli, "area-2")
    back_at = time.monotonic()
    await asyncio.sleep(0.3)
    stop = True
    await asyncio.wait_for(asyncio.gather(*workers), 10)
    state = cli.server_state("area-2")
    await cli.stop()
    assert found < FOUND_WITHIN
    assert state["available"] and state["dead_connections"] == 1, state
    assert not [c for c in calls if isinstance(c[2], Exception)]
    assert max(c[1] - c[0] for c in calls) < FOUND_WITHIN
    during = [c for c in calls if frozen_at + found < c[1] < thawed_at]
    assert during and {c[2] for c in during} <= {"area-0", "area-1"}
    assert "area-2" in {c[2] for c in calls if c[0] > back_at}


@pytest.mark.parametrize("transport", ["native", "mqtt"])
async def test_busy_server_is_not_declared_dead(aspawn, core, transport):
    """A server whose handler holds its event loop for 500 ms (three times in a row)
    while other calls are in flight is alive: nothing fails, nothing is declared dead."""
    (srv,) = await astart_areas(aspawn, 1, core) if transport == "native" else [
        await aspawn("area-0", "area", {"user": AREA_DIR}, core=core, transport="mqtt")]
    cli = area_client(core, [srv], transport=transport)
    await cli.start()
    work = cli.proxies.user.area.work
    assert (await work.echo(None, 0))["value"] == 0
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(work.block.to_server("area-0", 0.5) for _ in range(3)),
        *(work.hold.to_server("area-0", 0.1, i) for i in range(20)),
        return_exceptions=True)
    took = time.monotonic() - t0
    state = cli.server_state("area-0")
    await cli.stop()
    assert not [r for r in results if isinstance(r, Exception)], results
    assert took > 1.4                     # the three blocks ran one after the other
    assert state["available"] and state["dead_connections"] == 0, state


async def test_server_down_at_start(aspawn, core):
    """Nothing listens where a server should be: its first connect is refused, it is
    down from then on. rr sends everything to the others at once; a call routed to it
    by the default router (crc32 of the uid) fails at once with ServerUnavailableError,
    and with failover goes to another server."""
    servers = await astart_areas(aspawn, 2, core)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = {"id": "area-9", "server_type": "area", "host": "127.0.0.1", "port": port}
    rr = area_client(core, servers, router_type="rr")
    rr.add_servers([dead])
    await rr.start()
    echo = rr.proxies.user.area.work.echo
    first = await asyncio.gather(*(echo(None, i) for i in range(30)), return_exceptions=True)
    refused = [r for r in first if isinstance(r, Exception)]
    assert refused and all(isinstance(r, ConnectionLostError) for r in refused)
    assert not rr.server_state("area-9")["available"]
    t0 = time.monotonic()
    answers = await asyncio.gather(*(echo(None, i) for i in range(300)))
    assert time.monotonic() - t0 < 2.0
    assert {a["server_id"] for a in answers} == {"area-0", "area-1"}
    with pytest.raises(ServerUnavailableError, match="server area-9 is unavailable"):
        await echo.to_server("area-9", 1)
    await rr.stop()

    # the default router: a uid whose crc32 picks area-9 (the third of three)
    uid = next(u for u in range(1, 1000) if crc32_index(str(u), 3) == 2)
    for mode in ("failfast", "failover"):
        cli = area_client(core, servers, fail_mode=mode)
        cli.add_servers([dead])
        await cli.start()
        first = cli.proxies.user.area.work.echo({"uid": uid}, 1)   # finds it down
        if mode == "failfast":
            with pytest.raises(ConnectionLostError, match="cannot connect to area-9"):
                await first
        else:
            assert (await first)["server_id"] in ("area-0", "area-1")
        assert not cli.server_state("area-9")["available"]
        t0 = time.monotonic()
        if mode == "failfast":
            with pytest.raises(ServerUnavailableError):
                await cli.proxies.user.area.work.echo({"uid": uid}, 2)
        else:
            answer = await cli.proxies.user.area.work.echo({"uid": uid}, 2)
            assert answer["server_id"] in ("area-0", "area-1")
        assert time.monotonic() - t0 < 0.5
        await cli.stop()


async def test_tcp_user_timeout_on_both_sides(core):
    """Both ends of a connection set TCP_USER_TIMEOUT (default 10 s; 0 leaves the
    system's), so unacknowledged data cannot hold a dead connection for minutes."""
    for opts, expected in (({}, 10000), ({"tcp_user_timeout": 2.5}, 2500),
                           ({"tcp_user_timeout": 0}, 0)):
        gw = server.create(paths=[{"namespace": "user", "path": TEST_DIR}], core=core, **opts)
        await gw.start()
        cli = client.create(core=core, **opts)
        cli.add_servers([{"id": "s", "server_type": "test", "port": gw.port}])
        await cli.start()
        await cli.rpc_invoke("s", {"namespace": "user", "server_type": "test",
                                   "service": "service", "method": "echo", "args": [1]})
        mailbox = cli._station.mailboxes["s"]
        client_sock = mailbox._transport.get_extra_info("socket")
        (conn,) = gw.acceptor.connections
        server_sock = conn._transport.get_extra_info("socket")
        for sock in (client_sock, server_sock):
            assert sock.getsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT) == expected
        await cli.stop()
        await gw.stop()


async def test_idle_close_and_keepalive(core):
    """The server closes a connection idle for idle_timeout; a client pinging while
    idle (keepalive) keeps its connection; one that does not reconnects at its next
    call, with no error and its server still available."""
    gw = server.create(paths=[{"namespace": "user", "path": TEST_DIR}], core=core,
                       idle_timeout=0.4)
    await gw.start()
    msg = {"namespace": "user", "server_type": "test", "service": "service",
           "method": "echo", "args": ["x"]}
    pinging = client.create(core=core, keepalive=0.1)
    silent = client.create(core=core, keepalive=0)
    for cli in (pinging, silent):
        cli.add_servers([{"id": "s", "server_type": "test", "port": gw.port}])
        await cli.start()
        assert await cli.rpc_invoke("s", msg) == "x"
    kept = pinging._station.mailboxes["s"]
    await until(lambda: "s" not in silent._station.mailboxes, 2.0,
                "the idle connection was never closed")
    assert gw.acceptor.idle_closed == 1
    assert pinging._station.mailboxes.get("s") is kept and kept.state == "open"
    assert await silent.rpc_invoke("s", msg) == "x"
    assert silent.server_state("s")["available"]
    for cli in (pinging, silent):
        await cli.stop()
    await gw.stop()


def frame(obj):
    body = msgpack.packb(obj)
    return struct.pack(">I", len(body)) + body


async def test_peer_that_stops_reading_is_paused(core):
    """A client sends requests for big answers and reads none: the server stops reading
    and running its requests once its write buffer is full (counted), so its memory
    stays bounded; when the client reads again, every request is answered."""
    gw = server.create(paths=[{"namespace": "user", "path": AREA_DIR}], core=core,
                       context={"server_id": "a"})
    await gw.start()
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", gw.port))
    count, size = 2000, 64 * 1024
    await loop.sock_sendall(sock, b"".join(frame([2, rid, "user", "work", "blob", [size]])
                                           for rid in range(1, count + 1)))
    await until(lambda: gw.acceptor.connections, 5.0, "never accepted")
    (conn,) = gw.acceptor.connections
    await until(lambda: conn.paused, 5.0, "the server never paused the connection")
    await asyncio.sleep(0.3)
    buffered = conn._transport.get_write_buffer_size()
    assert gw.acceptor.paused >= 1
    # answers held: a few chunks of 32, not the 125 MB of all of them
    assert buffered < 16 * 1024 * 1024, buffered
    assert conn._queue, "the requests read wait in the connection's queue"

    got = bytearray()
    answered = 0
    deadline = time.monotonic() + 60
    while answered < count:
        assert time.monotonic() < deadline, answered
        got += await loop.sock_recv(sock, 1 << 20)
        while len(got) >= 4:
            n = struct.unpack(">I", got[:4])[0]
            if len(got) < 4 + n:
                break
            answer = msgpack.unpackb(bytes(got[4:4 + n]))
            del got[:4 + n]
            if answer[0] == 3:
                assert len(answer[2]) == size
                answered += 1
    sock.close()
    await gw.stop()


@pytest.fixture
def node_server(node, tmp_path):
    """A Node pomelo-rpc 1.0.7 server of its own (the test freezes it)."""
    srv = NodeServer(node, tmp_path / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def deaf_node_server(node, tmp_path_factory):
    """A Node pomelo-rpc 1.0.7 server that never answers PINGREQ."""
    srv = NodeServer(node, tmp_path_factory.mktemp("node") / "server.log", "--no-pingresp")
    yield srv
    srv.stop()


async def test_mqtt_frozen_node_server_is_found(node_server, core):
    """A Node pomelo-rpc 1.0.7 server SIGSTOPped with calls in flight: the mqtt client's
    PINGREQ goes unanswered, the connection is declared dead within ~2 s, the calls
    fail at once (their timeout is 30 s)."""
    srv = node_server
    cli = client.create(transport="mqtt", core=core, timeout=30)
    cli.add_servers([{"id": "node", "server_type": "test", "port": srv.port}])
    await cli.start()
    msg = {"namespace": "user", "server_type": "test", "service": "service",
           "method": "slowEcho", "args": ["x", 200]}
    assert await cli.rpc_invoke("node", msg) == "x"
    assert cli._station.mailboxes["node"].pings_answered
    os.kill(srv.proc.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    results = await asyncio.gather(*(cli.rpc_invoke("node", msg) for _ in range(5)),
                                   return_exceptions=True)
    took = time.monotonic() - t0
    os.kill(srv.proc.pid, signal.SIGCONT)
    for result in results:
        assert isinstance(result, ConnectionLostError), result
        assert not isinstance(result, RpcTimeoutError)
    assert took < FOUND_WITHIN
    await wait_available(cli, "node")
    assert await cli.rpc_invoke("node", msg) == "x"
    await cli.stop()


async def test_mqtt_server_ignoring_pings_keeps_working(deaf_node_server, core):
    """A server that never answers PINGREQ (Node pomelo-rpc with its PINGRESP removed)
    cannot be told slow from dead by silence: its calls taking longer than
    liveness_timeout are answered, its connection is never declared dead."""
    srv = deaf_node_server
    cli = client.create(transport="mqtt", core=core, timeout=30)
    cli.add_servers([{"id": "node", "server_type": "test", "port": srv.port}])
    await cli.start()
    msg = {"namespace": "user", "server_type": "test", "service": "service",
           "method": "slowEcho", "args": ["x", 2500]}
    results = await asyncio.gather(*(cli.rpc_invoke("node", msg) for _ in range(3)))
    assert results == ["x"] * 3
    assert not cli._station.mailboxes["node"].pings_answered
    state = cli.server_state("node")
    assert state["available"] and state["dead_connections"] == 0, state
    await cli.stop()
