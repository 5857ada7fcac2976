"""Hostile input to a real server process over raw sockets.

Each test checks what an operator and the other clients see: the offending connection
is closed (or, for a well-formed frame, answered with an error), the server logs it,
keeps serving a well-behaved client at the same time, stays up, and its memory and
file descriptors stay flat. (test_native_e2e.py has a first smoke test of the wire.)
"""

import asyncio
import os
import random
import socket
import struct
import time

import msgpack
import pytest

from conftest import REMOTE
from pomelo_rpc import client
from pomelo_rpc.processes import rss_kb

TEST_DIR = os.path.join(REMOTE, "test")


# helpers -----------------------------------------------------------------

def frame(obj):
    body = msgpack.packb(obj)
    return struct.pack(">I", len(body)) + body


def raw_frame(body):
    return struct.pack(">I", len(body)) + body


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


async def read_frame(reader, timeout=5):
    """The next message, or None when the server closed the connection."""
    try:
        header = await asyncio.wait_for(reader.readexactly(4), timeout)
        (size,) = struct.unpack(">I", header)
        body = await asyncio.wait_for(reader.readexactly(size), timeout)
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return None
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


async def expect_closed(reader, timeout=3):
    """Assert the server closes the connection (EOF or reset) without sending a frame."""
    try:
        data = await asyncio.wait_for(reader.read(1 << 16), timeout)
    except ConnectionResetError:
        return
    assert data == b"", f"expected the server to close, got {data[:60]!r}"


async def connect(srv):
    """A raw connection, past the server's HELLO; returns (reader, writer, method table).

    A server with an ``open_raw`` (test_security.py's TLS + auth_token one) is reached
    through it: TLS and the handshake done, the HELLO next."""
    if hasattr(srv, "open_raw"):
        reader, writer = await srv.open_raw()
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    hello = await read_frame(reader)
    assert hello[0] == 0, hello
    return reader, writer, [tuple(entry) for entry in hello[2]]


def make_client(core, srv, **opts):
    cli = client.create(core=core, timeout=5, **getattr(srv, "client_opts", {}), **opts)
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_DIR}])
    cli.add_servers([srv.info])
    return cli


@pytest.fixture
def server(spawn, core, tmp_path):
    """Start a server process of the core under test whose log goes to a file."""

    def start(*args):
        log_path = tmp_path / "server.log"
        with open(log_path, "w") as log:
            srv = spawn("test-1", core=core, stderr=log, args=list(args))
        srv.log = lambda: log_path.read_text()
        return srv

    return start


class Steady:
    """A well-behaved client calling echo in a loop; every answer is checked."""

    def __init__(self, core, srv):
        self.cli = make_client(core, srv)
        self.calls = 0
        self.max_latency = 0.0
        self._stop = asyncio.Event()
        self._task = None

    async def __aenter__(self):
        await self.cli.start()
        echo = self.cli.proxies.user.test.service.echo
        assert await echo(None, "warm") == "warm"

        async def loop():
            i = 0
            while not self._stop.is_set():
                t0 = time.monotonic()
                assert await echo(None, {"i": i}) == {"i": i}
                self.max_latency = max(self.max_latency, time.monotonic() - t0)
                self.calls += 1
                i += 1
                await asyncio.sleep(0.002)

        self._task = asyncio.ensure_future(loop())
        return self

    async def __aexit__(self, *exc):
        self._stop.set()
        await asyncio.wait_for(self._task, 10)   # re-raises a failed or wrong answer
        await self.cli.stop()


# malformed frames: the connection is closed -----------------------------

_rng = random.Random(5)
CLOSE_CASES = {
    "random garbage": bytes(_rng.randrange(256) for _ in range(4096)),
    "small header, random body": b"\x00\x00\x00\x10" + bytes(_rng.randrange(256) for _ in range(16)),
    "an HTTP request": b"GET / HTTP/1.1\r\nHost: rpc\r\n\r\n",
    "empty body": raw_frame(b""),
    "body not msgpack": raw_frame(b"\xc1\xc1\xc1"),
    "two objects in one frame": raw_frame(msgpack.packb([5]) + msgpack.packb([5])),
    "msgpack cut inside the frame": raw_frame(
        msgpack.packb([2, 1, "user", "service", "echo", ["x" * 50]])[:-10]),
    "map with an unhashable key": raw_frame(b"\x81\x91\x01\x02"),
    "nesting 5000 deep": raw_frame(b"\x91" * 5000 + b"\xc0"),
    "array length bomb": raw_frame(b"\xdd\xff\xff\xff\xff"),
    "bad timestamp ext": raw_frame(b"\xc7\x03\xff\x00\x00\x00"),
    "a map": frame({"id": 1, "msg": "pomelo mqtt shape"}),
    "an int": frame(5),
    "a string": frame("echo"),
    "nil": frame(None),
    "bytes": frame(b"\x01\x02"),
    "empty list": frame([]),
    "kind only": frame([1]),
    "rid is a string": frame([1, "7", 0, []]),
    "rid is a float": frame([1, 1.5, 0, []]),
    "rid is a bool": frame([1, True, 0, []]),
    "rid is nil": frame([2, None, "user", "service", "echo", []]),
    "an ext type": frame(msgpack.ExtType(7, b"data")),
    "pong to a server": frame([6]),
}


async def test_malformed_frames_close_only_that_connection(server, core):
    srv = server()
    async with Steady(core, srv) as steady:
        for name, payload in CLOSE_CASES.items():
            reader, writer, _ = await connect(srv)
            writer.write(payload)
            try:
                await expect_closed(reader)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from None
            writer.close()
    assert steady.calls > 0
    assert srv.proc.poll() is None, "the server must stay up"
    logged = srv.log().count("closing connection from ('127.0.0.1'")
    assert logged == len(CLOSE_CASES), srv.log()[-2000:]


# well-formed frames naming bad calls: answered with an error ---------------

async def test_bad_calls_in_valid_frames_get_error_answers_on_a_live_connection(server, core):
    srv = server()
    reader, writer, table = await connect(srv)
    echo = table.index(("user", "service", "echo"))
    big_rid = 2 ** 64 - 1
    cases = {
        11: ([2, 11, "nosuch", "service", "echo", []], "DispatchError", "unknown namespace 'nosuch'"),
        12: ([2, 12, "user", "nosuch", "echo", []], "DispatchError", "unknown service user.nosuch"),
        13: ([2, 13, "user", "service", "nosuch", []], "DispatchError",
             "unknown method user.service.nosuch"),
        14: ([1, 14, 10 ** 6, []], "DispatchError", "unknown method id 1000000"),
        15: ([1, 15, -1, []], "DispatchError", "unknown method id -1"),
        16: ([1, 16, "echo", []], "DispatchError", "unknown method id 'echo'"),
        17: ([1, 17, echo, []], "DispatchError", "takes 1 argument(s), got 0"),
        18: ([1, 18, echo, [1, 2]], "DispatchError", "takes 1 argument(s), got 2"),
        19: ([2, 19, "user", "service", "add", []], "DispatchError",
             "takes 1 to 2 argument(s), got 0"),
        20: ([2, 20, "user", "service", "add", [1, 2, 3]], "DispatchError",
             "takes 1 to 2 argument(s), got 3"),
        21: ([1, 21, echo, {"a": 1}], "DispatchError", "must be a list, got dict"),
        22: ([1, 22, echo, None], "DispatchError", "must be a list, got NoneType"),
        23: ([2, 23, "user", "service", "echo"], "DispatchError", "malformed request of kind 2"),
        24: ([1, 24, echo, [], "trace", 9, "extra"], "DispatchError",
             "malformed request of kind 1"),
        33: ([1, 33, echo, [1], "trace", "extra"], "DispatchError",
             "request budget must be a non-negative int of ms"),
        34: ([2, 34, "user", "service", "echo", [1], None, -5], "DispatchError",
             "request budget must be a non-negative int of ms"),
        25: ([99, 25], "DispatchError", "malformed request of kind 99"),
        26: ([3, 26, "a response"], "DispatchError", "malformed request of kind 3"),
        27: ([0, 27, []], "DispatchError", "malformed request of kind 0"),
        28: ([2, 28, 1, 2, 3, []], "DispatchError", "unknown namespace 1"),
        29: ([2, 29, ["unhashable"], "service", "echo", []], None, ""),
        30: ([2, 30, "user", "service", "fail", ["boom"]], "ValueError", "boom"),
        31: ([2, 31, "user", "service", "unserializable", []], "TypeError",
             "cannot be serialized"),
        32: ([2, 32, "user", "service", "async_fail", ["gone"]], "KeyError", "gone"),
    }
    writer.write(b"".join(frame(req) for req, _, _ in cases.values())
                 + frame([1, -5, echo, ["negative rid"]])
                 + frame([1, big_rid, echo, ["largest rid"]]))
    answers = {}
    for _ in range(len(cases) + 2):
        msg = await read_frame(reader)
        assert msg is not None, f"connection closed; answers so far: {sorted(answers)}"
        answers[msg[1]] = msg
    assert answers[-5] == [3, -5, "negative rid"]
    assert answers[big_rid] == [3, big_rid, "largest rid"]
    for rid, (_req, type_name, text) in cases.items():
        kind, got_rid, (got_type, message, stack) = answers[rid]
        assert (kind, got_rid) == (4, rid)
        if type_name is not None:
            assert got_type == type_name, (rid, answers[rid])
        assert text in message, (rid, message)
        assert isinstance(stack, str)
    # the same connection still serves
    writer.write(frame([1, 99, echo, ["still here"]]))
    assert await read_frame(reader) == [3, 99, "still here"]
    writer.close()
    assert srv.proc.poll() is None


# truncated frames and oversized frames --------------------------------------

async def test_truncated_frame_then_close_is_logged_and_the_server_goes_on(server, core):
    srv = server()
    request = frame([2, 1, "user", "service", "echo", ["x" * 100]])
    cuts = {"half a header": request[:2], "header and part of the body": request[:40],
            "a whole frame and half of the next": request + request[:30]}
    async with Steady(core, srv) as steady:
        for name, payload in cuts.items():
            for reset in (False, True):
                reader, writer, _ = await connect(srv)
                if reset:    # RST instead of FIN
                    writer.get_extra_info("socket").setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.write(payload)
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.close()
        await asyncio.sleep(0.3)
    assert steady.calls > 0
    assert srv.proc.poll() is None
    log = srv.log()
    assert log.count("closed in the middle of a frame") == 2 * len(cuts), log[-2000:]
    assert "(2 bytes of it dropped)" in log and "(40 bytes of it dropped)" in log


async def test_frame_over_pkg_size_is_refused_from_its_header(server, core):
    """--pkg-size 4096: a body of exactly 4096 bytes is served; a header announcing
    4097 closes the connection at once, before any body arrives."""
    srv = server("--pkg-size", "4096")
    reader, writer, table = await connect(srv)
    echo = table.index(("user", "service", "echo"))
    overhead = len(msgpack.packb([1, 1, echo, [""]]))
    text = "y" * (4096 - overhead - 2)      # str16 header: 3 bytes instead of 1
    body = msgpack.packb([1, 1, echo, [text]])
    assert len(body) == 4096
    writer.write(raw_frame(body))
    assert await read_frame(reader) == [3, 1, text]

    for declared in (4097, 0xFFFFFFFF):
        reader, writer, _ = await connect(srv)
        t0 = time.monotonic()
        writer.write(struct.pack(">I", declared))   # the header alone
        await expect_closed(reader, timeout=2)
        assert time.monotonic() - t0 < 1.0
        writer.close()
    assert srv.log().count("exceeds pkg_size 4096") == 2
    cli = make_client(core, srv)
    await cli.start()
    assert await cli.proxies.user.test.service.echo(None, "fine") == "fine"
    await cli.stop()


# slow, greedy and numerous clients ----------------------------------------------

async def test_slow_clients_dribbling_bytes_do_not_stall_the_others(server, core):
    """Ten clients send their requests one byte at a time (3 ms apart); meanwhile a
    well-behaved client is served without delay, and each slow client finally gets
    its own answers."""
    srv = server()

    async def dribbler(n):
        reader, writer, table = await connect(srv)
        echo = table.index(("user", "service", "echo"))
        data = (frame([1, 1, echo, [f"slow-{n}-" + "z" * 150]])
                + frame([2, 2, "user", "service", "slow_echo", [n, 0.01]]))
        for i in range(len(data)):
            writer.write(data[i:i + 1])
            await writer.drain()
            await asyncio.sleep(0.003)
        first = await read_frame(reader)
        second = await read_frame(reader)
        writer.close()
        return first, second

    async with Steady(core, srv) as steady:
        t0 = time.monotonic()
        results = await asyncio.gather(*(dribbler(n) for n in range(10)))
        elapsed = time.monotonic() - t0
    assert elapsed > 0.5   # the dribbling did take a while ...
    for n, (first, second) in enumerate(results):
        assert first == [3, 1, f"slow-{n}-" + "z" * 150]
        assert second == [3, 2, n]
    assert steady.calls > 50    # ... and the other client was served all along
    assert steady.max_latency < 0.25, steady.max_latency


async def test_client_that_never_reads_cannot_grow_server_memory(server, core):
    """A client pipelines 64 KB echo requests and never reads the answers: the server
    stops reading from it once its answers back up (instead of buffering them all),
    its memory stays bounded, and it keeps serving others."""
    srv = server()
    pid = srv.proc.pid
    before = rss_kb(pid)
    hog = socket.create_connection(("127.0.0.1", srv.port))
    hog.setblocking(False)
    request = frame([2, 1, "user", "service", "echo", ["x" * 65536]])
    sent = 0
    pos = 0
    blocked_since = None
    async with Steady(core, srv) as steady:
        t0 = time.monotonic()
        while sent < 200_000_000 and time.monotonic() - t0 < 8:
            try:
                n = hog.send(request[pos:])
            except BlockingIOError:
                now = time.monotonic()
                blocked_since = blocked_since or now
                if now - blocked_since > 0.5:
                    break
                await asyncio.sleep(0.01)
                continue
            blocked_since = None
            sent += n
            pos = (pos + n) % len(request)
        grown = rss_kb(pid) - before
    hog.close()
    assert blocked_since is not None, f"the server kept reading: {sent / 1e6:.0f} MB sent"
    assert sent < 100_000_000
    assert grown < 40_000, f"server RSS grew by {grown} kB"
    assert steady.calls > 20
    assert srv.proc.poll() is None


async def _drop(port, i):
    """Open a connection and drop it in one of several rude ways."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    how = i % 6
    if how == 1:                              # read the hello, then close
        await reader.readexactly(4)
    elif how == 2:                            # reset at once
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                   struct.pack("ii", 1, 0))
    elif how == 3:                            # half a frame
        writer.write(frame([2, i, "user", "service", "echo", ["x" * 100]])[:50])
    elif how == 4:                            # a call, gone before its answer
        writer.write(frame([2, i, "user", "service", "slow_echo", ["x", 0.05]]))
        await writer.drain()
    elif how == 5:                            # garbage
        writer.write(b"\x00\x00\x00\x03\xc1\xc1\xc1")
        await writer.drain()
    writer.close()


async def test_thousands_of_connections_opened_and_dropped_leave_memory_and_fds_flat(server,
                                                                                    core):
    srv = server()
    pid = srv.proc.pid
    async with Steady(core, srv) as steady:
        for _ in range(4):                    # warm-up: allocator pools, caches
            await asyncio.gather(*(_drop(srv.port, i) for i in range(250)))
        await asyncio.sleep(0.3)
        rss0, fds0 = rss_kb(pid), fd_count(pid)
        t0 = time.monotonic()
        for wave in range(16):                # 4000 connections, 250 at a time
            await asyncio.gather(*(_drop(srv.port, wave * 250 + i) for i in range(250)))
        elapsed = time.monotonic() - t0
        await asyncio.sleep(0.5)
        rss1, fds1 = rss_kb(pid), fd_count(pid)
    assert srv.proc.poll() is None
    assert rss1 - rss0 < 2000, f"RSS {rss0} -> {rss1} kB after 4000 connections"
    assert fds1 <= fds0, f"fds {fds0} -> {fds1}"
    assert steady.calls > 50 and steady.max_latency < 0.5, (steady.calls, steady.max_latency)
    # no connect waited for a SYN retransmit (a full accept backlog stalls it 1 s)
    assert elapsed < 5, elapsed
