"""``sched_batch`` (pomelo_rpc.scheduling): a server's event-loop thread runs under
SCHED_BATCH while the server runs (Linux), and answers a connector's forwarded requests
as before, a request written in pomelo-rpc's five pieces answered once."""

import asyncio
import json
import os
import socket

import pytest

from conftest import ServerProcess
from pomelo_rpc import server
from pomelo_rpc.bench_instructions import AREA_HANDLERS, FORWARD
from pomelo_rpc.core import mqtt

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux only")


def pomelo_pieces(rid):
    """The forwardMessage of player request ``rid`` as pomelo-rpc 1.0.7's mqtt client
    writes it: fixed header, remaining length, topic length, topic, payload."""
    payload = FORWARD % (rid, rid)
    size = 2 + len(b"rpc") + len(payload)
    length = bytearray()
    while True:
        size, byte = size >> 7, size & 0x7F
        length.append(byte | (0x80 if size else 0))
        if not size:
            break
    return [b"\x30", bytes(length), b"\x00\x03", b"rpc", payload]


async def ask_in_pieces(port, rids):
    """Send each forwardMessage in pieces, each piece its own segment, the next request
    once the previous is answered; the answers' payloads, in order."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.write(mqtt.encode_connect())
    decoder = mqtt.MqttDecoder()
    answers = []
    try:
        for rid in rids:
            for piece in pomelo_pieces(rid):
                writer.write(piece)
                await writer.drain()
            packets = []
            while not packets:
                data = await reader.read(65536)
                assert data, "the server closed the connection"
                packets = decoder.feed(data)
            # one answer per request: the next request's answer comes alone
            assert len(packets) == 1 and packets[0][0] == mqtt.PUBLISH, packets
            answers.append(json.loads(packets[0][2]))
    finally:
        writer.close()
    return answers


def check_answers(answers, rids):
    assert [a["id"] for a in answers] == list(rids)
    for a in answers:
        assert a["resp"][0] is None and a["resp"][1] == {"code": 200, "x": 1, "y": 2}, a


async def test_sched_batch_runs_the_loop_under_sched_batch_then_restores_it(core):
    before = os.sched_getscheduler(0)
    assert before != os.SCHED_BATCH
    info = {"id": "area-1", "server_type": "area"}
    gw = server.create(transport="mqtt", handlers=AREA_HANDLERS, server_info=info,
                       sched_batch=True, core=core)
    other = server.create(transport="mqtt", handlers=AREA_HANDLERS, server_info=info,
                          sched_batch=True, core=core)
    await gw.start()
    try:
        assert os.sched_getscheduler(0) == os.SCHED_BATCH
        await other.start()
        await other.stop()
        # the other server's stop leaves it: this one still runs
        assert os.sched_getscheduler(0) == os.SCHED_BATCH
        check_answers(await ask_in_pieces(gw.port, range(1, 6)), range(1, 6))
    finally:
        await gw.stop()
    assert os.sched_getscheduler(0) == before


async def test_serve_sched_batch_answers_requests_written_in_pieces(core):
    proc = ServerProcess("area-1", "area", {}, core=core, transport="mqtt",
                         args=["--handlers", AREA_HANDLERS, "--sched-batch"])
    plain = ServerProcess("area-2", "area", {}, core=core, transport="mqtt",
                          args=["--handlers", AREA_HANDLERS])
    await proc.astart()
    try:
        await plain.astart()
        assert os.sched_getscheduler(proc.proc.pid) == os.SCHED_BATCH
        assert os.sched_getscheduler(plain.proc.pid) != os.SCHED_BATCH
        rids = range(7, 107)
        check_answers(await ask_in_pieces(proc.port, rids), rids)
    finally:
        await proc.akill()
        await plain.akill()
