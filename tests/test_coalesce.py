"""``read_coalesce`` (``ServerProtocol.pace``, ``ReadCoalescer``): while requests arrive
fast, a connection's reads wait up to the window so that one wake-up reads several;
every request is still answered, in order, a client sending one request at a time is
not held, a hold ends by itself, and a connection closed while held leaves nothing."""

import asyncio
import json
import os
import socket

import pytest

from conftest import REMOTE, ServerProcess, until
from pomelo_rpc import client, server
from pomelo_rpc.bench_instructions import AREA_HANDLERS
from pomelo_rpc.core import mqtt
from pomelo_rpc.core.server_protocol import FRUITLESS
from test_scheduling import check_answers, pomelo_pieces

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_RCVLOWAT"), reason="SO_RCVLOWAT")

INFO = {"id": "area-1", "server_type": "area"}


class Player:
    """A connector's mqtt connection to the area: forwardMessages written in pomelo's
    five pieces, each its own segment."""

    async def open(self, port):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP,
                                                        socket.TCP_NODELAY, 1)
        self.writer.write(mqtt.encode_connect())
        self.decoder = mqtt.MqttDecoder()
        return self

    async def ask(self, rids):
        """Send the requests ``rids`` at once; their answers' payloads, as they come."""
        for rid in rids:
            for piece in pomelo_pieces(rid):
                self.writer.write(piece)
        await self.writer.drain()
        answers = []
        while len(answers) < len(rids):
            data = await self.reader.read(65536)
            assert data, "the server closed the connection"
            answers += [json.loads(p[2]) for p in self.decoder.feed(data)]
        return answers

    def close(self):
        self.writer.close()


async def until_held(gw, player):
    """Waves of 8 requests until the connection's reads are held; its connection."""
    rid = 1
    while not gw.acceptor.coalescer.holds:
        check_answers(await player.ask(range(rid, rid + 8)), range(rid, rid + 8))
        rid += 8
    conn, = gw.acceptor.connections
    assert conn._protocol.held
    return conn


async def test_read_coalesce_holds_fast_requests_and_answers_all_in_order(core):
    gw = server.create(transport="mqtt", handlers=AREA_HANDLERS, server_info=INFO,
                       read_coalesce=0.05, core=core)
    await gw.start()
    try:
        coalescer = gw.acceptor.coalescer
        player = await Player().open(gw.port)
        answers = []
        for wave in range(12):         # waves of 8 requests: 4 a window or more
            rids = range(wave * 8 + 1, wave * 8 + 9)
            answers += await player.ask(rids)
        check_answers(answers, range(1, 97))
        assert coalescer.holds > 0
        # no more traffic: the last hold ends by itself
        conn, = gw.acceptor.connections
        await until(lambda: not conn._protocol.held and coalescer.timer is None, 5,
                    "the hold did not end")
        check_answers(await player.ask([500]), [500])
        player.close()
        await until(lambda: not gw.acceptor.connections, 5, "the connection did not close")
    finally:
        await gw.stop()


async def test_read_coalesce_does_not_hold_a_client_sending_one_request_at_a_time(core):
    gw = server.create(transport="mqtt", handlers=AREA_HANDLERS, server_info=INFO,
                       read_coalesce=0.25, core=core)
    await gw.start()
    try:
        coalescer = gw.acceptor.coalescer
        player = await Player().open(gw.port)
        check_answers(await player.ask([1]), [1])       # a lone request: not held
        assert coalescer.holds == 0
        answers = []
        for rid in range(2, 40):
            answers += await player.ask([rid])
        check_answers(answers, range(2, 40))
        # the rate made holds worth a try; each gathered one request, and after
        # FRUITLESS of them the next ones are read at once (the holds stop a while)
        conn, = gw.acceptor.connections
        assert coalescer.holds <= FRUITLESS and conn._protocol.backoff > 0
        player.close()
    finally:
        await gw.stop()


async def test_read_coalesce_connection_closed_while_held_leaves_no_timer(core):
    gw = server.create(transport="mqtt", handlers=AREA_HANDLERS, server_info=INFO,
                       read_coalesce=1.0, core=core)
    await gw.start()
    try:
        coalescer = gw.acceptor.coalescer
        player = await Player().open(gw.port)
        conn = await until_held(gw, player)
        assert coalescer.timer is not None
        player.writer.transport.abort()
        await until(lambda: not gw.acceptor.connections, 5, "the close was not seen")
        assert not conn._protocol.held and coalescer.timer is None and not coalescer.held
    finally:
        await gw.stop()


async def test_read_coalesce_stop_while_held_answers_and_leaves_no_timer(core):
    gw = server.create(transport="mqtt", handlers=AREA_HANDLERS, server_info=INFO,
                       read_coalesce=1.0, core=core)
    await gw.start()
    coalescer = gw.acceptor.coalescer
    player = await Player().open(gw.port)
    await until_held(gw, player)
    await gw.stop(grace=1.0)       # held: the stop releases it, and closes
    assert coalescer.timer is None and not coalescer.held
    assert await player.reader.read() == b""    # the server closed its side
    player.close()


async def test_read_coalesce_on_the_native_transport_answers_waves_of_calls(core):
    path = os.path.join(REMOTE, "test")
    gw = server.create(paths=[{"namespace": "user", "path": path}], core=core,
                       context={"server_id": "s1"}, read_coalesce=0.05)
    off = server.create(paths=[{"namespace": "user", "path": path}], core=core,
                        context={"server_id": "s2"})
    async with gw, off:
        assert off.acceptor.coalescer is None        # off by default
        cli = client.create(core=core)
        cli.add_proxies([{"namespace": "user", "server_type": "test", "path": path}])
        cli.add_servers([{"id": "s1", "server_type": "test", "port": gw.port},
                         {"id": "s2", "server_type": "test", "port": off.port}])
        async with cli:
            echo = cli.proxies.user.test.service.echo
            for wave in range(10):
                for sid in ("s1", "s2"):
                    sent = [f"{wave}-{i}" for i in range(16)]
                    got = await asyncio.gather(*(echo.to_server(sid, m) for m in sent))
                    assert got == sent
        assert gw.acceptor.coalescer.holds > 0


def test_read_coalesce_window_is_checked():
    for window in (-0.001, 1.5):
        with pytest.raises(ValueError, match="read_coalesce"):
            server.create(transport="mqtt", read_coalesce=window)


async def test_serve_read_coalesce_answers_requests_written_in_pieces(core):
    proc = ServerProcess("area-1", "area", {}, core=core, transport="mqtt",
                         args=["--handlers", AREA_HANDLERS, "--read-coalesce", "0.002"])
    await proc.astart()
    try:
        player = await Player().open(proc.port)
        answers = []
        for wave in range(20):
            answers += await player.ask(range(wave * 10 + 1, wave * 10 + 11))
        check_answers(answers, range(1, 201))
        player.close()
    finally:
        await proc.akill()
