"""transport="pinus-tcp": pinus-rpc 1.7.4's tcp transport, Python to Python and on the wire.

What pinus's own processes do against it is in tests/test_pinus.py (a real pinus
cluster); here: calls and errors between Python processes (both cores, also mixed),
ids (from 1, never 0: 0 is a notify), the heartbeat (PING/PONG, the idle close, a
server that stops answering pings), and hostile frames, over raw sockets.
"""

import asyncio
import json
import logging
import os
import socket

import pytest

from conftest import REMOTE
from pomelo_rpc import ConnectionLostError, RemoteError, client, server
from pomelo_rpc.core import pinus_tcp

TEST_DIR = os.path.join(REMOTE, "test")
ERRORS = os.path.join(REMOTE, "pinus")
ID_LIMIT = 0x7FFFFFFF


async def start_server(core, **opts):
    gw = server.create(paths=[{"namespace": "user", "path": TEST_DIR},
                              {"namespace": "user", "path": ERRORS}],
                       transport="pinus-tcp", core=core, **opts)
    await gw.start()
    return gw


def make_client(core, gw, **opts):
    cli = client.create(transport="pinus-tcp", core=core, timeout=5, **opts)
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_DIR},
                     {"namespace": "user", "server_type": "test", "path": ERRORS}])
    cli.add_servers([{"id": "s", "server_type": "test", "port": gw.port}])
    return cli


def request(rid, method, *args, service="service"):
    """A pinus tcp REQUEST frame, as pinus-rpc's tcp mailbox sends it."""
    return pinus_tcp.encode_request(json.dumps(
        {"id": rid, "msg": {"namespace": "user", "serverType": "test", "service": service,
                            "method": method, "args": list(args)}},
        separators=(",", ":")).encode())


async def read_frames(reader, decoder, n, timeout=5.0):
    """The next ``n`` frames."""
    out = []
    while len(out) < n:
        data = await asyncio.wait_for(reader.read(65536), timeout)
        assert data, f"closed after {out}"
        out += decoder.feed(data)
    return out


async def expect_closed(reader, timeout=5.0):
    try:
        data = await asyncio.wait_for(reader.read(65536), timeout)
    except ConnectionResetError:
        return
    assert data == b"", data


@pytest.mark.parametrize("server_core", ["cython", "python"])
@pytest.mark.parametrize("buffered", [False, True], ids=["plain", "buffer_msg"])
async def test_calls_and_errors_between_python_processes(core, server_core, buffered):
    if server_core not in {"cython", "python"} & set(__import__("pomelo_rpc").core.available()):
        pytest.skip(f"the {server_core} core is not available")
    gw = await start_server(server_core, buffer_msg=buffered, interval=0.005)
    cli = make_client(core, gw, buffer_msg=buffered, interval=0.005)
    await cli.start()
    try:
        svc = cli.proxies.user.test.service
        assert await svc.echo(None, {"a": [1, "é", None]}) == {"a": [1, "é", None]}
        assert await svc.slow_echo(None, "later", 0.01) == "later"
        assert await asyncio.gather(*(svc.add(None, i, 1) for i in range(300))) == \
            [i + 1 for i in range(300)]
        assert await svc.echo(None, None) is None
        with pytest.raises(RemoteError) as info:
            await svc.fail(None, "boom")
        assert (info.value.remote_type, info.value.message) == ("ValueError", "boom")
        assert info.value.code is None
        with pytest.raises(RemoteError) as info:
            await cli.proxies.user.test.errors.coded(None, 42, "with a code")
        assert info.value.code == 42 and info.value.remote_type == "CodedError"
        assert info.value.fields == {"code": 42, "msg": "with a code", "message": "with a code"}
        with pytest.raises(RemoteError, match="DispatchError"):
            await svc.echo(None, 1, 2)
    finally:
        await cli.stop()
        await gw.stop()


async def test_request_ids_start_at_1_and_wrap_to_1(core):
    """pinus-rpc's id 0 is a notify: a call never gets it, even after the wrap."""
    gw = await start_server(core)
    cli = make_client(core, gw)
    await cli.start()
    try:
        echo = cli.proxies.user.test.service.echo.to_server
        mailbox = cli._station.mailbox("s")
        assert mailbox.protocol.table.add(asyncio.get_running_loop().create_future()) == 1
        mailbox.protocol.table.pop(1)
        assert await echo("s", "first") == "first"
        table = mailbox.core.pending.PendingTable(first_id=ID_LIMIT - 1, low_id=1)
        futs = [asyncio.get_running_loop().create_future() for _ in range(3)]
        assert [table.add(f) for f in futs] == [ID_LIMIT - 1, ID_LIMIT, 1]
        mailbox.protocol.table.pop(0)
        assert 0 not in mailbox.protocol.table
        answers = await asyncio.gather(*(echo("s", i) for i in range(50)))
        assert answers == list(range(50))
    finally:
        await cli.stop()
        await gw.stop()


async def test_auth_token_is_refused_on_pinus_tcp():
    """pinus-rpc's tcp transport has no handshake to carry a token: a clear error at the
    server's start and at the client's first call."""
    gw = server.create(transport="pinus-tcp", auth_token="secret")
    with pytest.raises(ValueError, match="cannot carry an auth_token"):
        await gw.start()
    cli = client.create(transport="pinus-tcp", auth_token="secret")
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_DIR}])
    cli.add_servers([{"id": "s", "server_type": "test", "port": 1}])
    await cli.start()
    with pytest.raises(ValueError, match="cannot carry an auth_token"):
        await cli.proxies.user.test.service.echo.to_server("s", 1)
    await cli.stop()


# heartbeat -----------------------------------------------------------------------

async def test_server_answers_pings_and_closes_silent_connections(core):
    gw = await start_server(core, pinus_idle_timeout=0.2)
    try:
        # a PING is answered with a PONG
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(pinus_tcp.PING_FRAME)
        assert await read_frames(reader, pinus_tcp.PinusDecoder(), 1) == [(pinus_tcp.PONG, b"")]
        # a connection that pings every 0.1 s stays; a silent one is closed within 2 x 0.2 s
        quiet_reader, quiet_writer = await asyncio.open_connection("127.0.0.1", gw.port)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while loop.time() - t0 < 0.7:
            writer.write(pinus_tcp.PING_FRAME)
            await asyncio.sleep(0.1)
        await expect_closed(quiet_reader, 0.1)
        writer.write(request(5, "echo", "alive"))
        decoder = pinus_tcp.PinusDecoder()
        frames = []
        while (pinus_tcp.RESPONSE, b'{"id":5,"resp":[null,"alive"]}') not in frames:
            frames += await read_frames(reader, decoder, 1)
        writer.close()
        quiet_writer.close()
    finally:
        await gw.stop()


async def test_client_pings_keep_an_idle_connection_open(core):
    gw = await start_server(core, pinus_idle_timeout=0.3)
    cli = make_client(core, gw, pinus_ping_interval=0.1, pinus_pong_timeout=1.0)
    await cli.start()
    try:
        echo = cli.proxies.user.test.service.echo.to_server
        assert await echo("s", 1) == 1
        await asyncio.sleep(1.0)          # idle: only the pings keep it open
        assert await echo("s", 2) == 2
        assert gw.acceptor.accepted == 1
        [conn] = gw.acceptor.connections
        assert conn.pings >= 5
    finally:
        await cli.stop()
        await gw.stop()


async def test_a_server_that_stops_answering_pings_is_dropped(core):
    """A peer that takes the bytes but answers nothing (pinus-rpc's mailbox: no PONG in
    10 s closes it): the calls in flight fail with ConnectionLostError."""
    pings = []

    async def mute(reader, writer):
        decoder = pinus_tcp.PinusDecoder()
        while data := await reader.read(65536):
            pings.extend(f for f in decoder.feed(data) if f[0] == pinus_tcp.PING)
    srv = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    cli = client.create(transport="pinus-tcp", core=core, timeout=10,
                        pinus_ping_interval=0.1, pinus_pong_timeout=0.2)
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_DIR}])
    cli.add_servers([{"id": "mute", "server_type": "test", "port": port}])
    await cli.start()
    try:
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(ConnectionLostError, match="did not answer a ping within 0.2 s"):
            await cli.proxies.user.test.service.echo.to_server("mute", 1)
        assert asyncio.get_running_loop().time() - t0 < 2.0
        assert pings
    finally:
        await cli.stop()
        srv.close()


# hostile frames -------------------------------------------------------------------

HOSTILE = {
    "a leading zero group": b"\x80\x05\x00{}",
    "a length of 6 bytes": b"\x81\x81\x81\x81\x81\x01",
    "a length of 0": b"\x00",
    "an unknown type": b"\x01\x07",
    "an oversized length": b"\x84\x80\x80\x00",          # 2**23 + ... > pkg_size 4096
}


@pytest.mark.parametrize("name", HOSTILE)
async def test_hostile_frames_close_the_connection_and_are_logged(core, name, caplog):
    gw = await start_server(core, pkg_size=4096)
    try:
        good_reader, good_writer = await asyncio.open_connection("127.0.0.1", gw.port)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        with caplog.at_level(logging.WARNING, logger="pomelo_rpc.acceptor"):
            writer.write(request(1, "echo", "before") + HOSTILE[name])
            await expect_closed(reader)
        assert "closing connection from" in caplog.text and "pinus tcp frame" in caplog.text
        # the other client is served as before
        good_writer.write(request(2, "echo", "other"))
        frames = await read_frames(good_reader, pinus_tcp.PinusDecoder(), 1)
        assert frames == [(pinus_tcp.RESPONSE, b'{"id":2,"resp":[null,"other"]}')]
        good_writer.close()
        writer.close()
    finally:
        await gw.stop()


async def test_split_and_coalesced_frames_are_all_answered(core):
    gw = await start_server(core)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = (b"".join(request(i, "echo", "x" * (i * 37)) for i in range(1, 40))
                  + pinus_tcp.PING_FRAME)
        for i in range(0, len(stream), 7):           # split in 7-byte reads
            writer.write(stream[i:i + 7])
            if i % 70 == 0:
                await asyncio.sleep(0)
        writer.write(stream)                         # then all of it at once, twice
        writer.write(stream)
        frames = await read_frames(reader, pinus_tcp.PinusDecoder(), 120)
        assert frames.count((pinus_tcp.PONG, b"")) == 3
        answers = [json.loads(p) for k, p in frames if k == pinus_tcp.RESPONSE]
        assert sorted(a["id"] for a in answers) == sorted(list(range(1, 40)) * 3)
        assert all(a["resp"] == [None, "x" * (a["id"] * 37)] for a in answers)
        writer.close()
    finally:
        await gw.stop()


async def test_a_server_sending_garbage_fails_the_calls_and_is_logged(core, caplog):
    async def garbage(reader, writer):
        await reader.read(65536)
        writer.write(pinus_tcp.encode_response(b'{"id":1,"resp":[null,') + b"\x01\x09")
    srv = await asyncio.start_server(garbage, "127.0.0.1", 0)
    cli = client.create(transport="pinus-tcp", core=core, timeout=5)
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_DIR}])
    cli.add_servers([{"id": "bad", "server_type": "test",
                      "port": srv.sockets[0].getsockname()[1]}])
    await cli.start()
    try:
        with caplog.at_level(logging.WARNING):
            with pytest.raises(ConnectionLostError, match="unknown pinus tcp frame type 9"):
                await cli.proxies.user.test.service.echo.to_server("bad", 1)
        assert "bad data from bad" in caplog.text
    finally:
        await cli.stop()
        srv.close()
