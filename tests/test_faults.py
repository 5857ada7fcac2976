"""Faults with real server processes: killed, stopped gracefully, frozen, absent.

What the caller must see: every call ends with a clear error (never a wait for its
timeout), calls already received by a stopping server are answered, and the client
reconnects once the server is back. (test_native_e2e.py has the basic killed-server
and connect-refused cases; these go further.)
"""

import asyncio
import os
import signal
import socket
import time

import pytest

from conftest import REMOTE, wait_available
from pomelo_rpc import (ConnectionLostError, RemoteError, RpcTimeoutError,
                        ServerUnavailableError, client)

TEST_DIR = os.path.join(REMOTE, "test")


def make_client(core, servers, **opts):
    cli = client.create(core=core, **opts)
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_DIR}])
    cli.add_servers([s.info if hasattr(s, "info") else s for s in servers])
    return cli


async def wait_exit(proc, timeout):
    """Wait (without blocking the loop) for ``proc`` to exit; its return code or None."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return proc.poll()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_kill_mid_traffic_fails_every_call_at_once_then_reconnects(aspawn, core):
    """Workers keep calling (fast and slow calls) while the server is SIGKILLed: every
    call in flight fails with ConnectionLostError at once, none waits for its 30 s
    timeout, nothing stays in flight; once a server is back on the port, calls work."""
    srv = await aspawn("test-1", core=core)
    cli = make_client(core, [srv], timeout=30)
    await cli.start()
    svc = cli.proxies.user.test.service
    outcomes = []          # (started, ended, result or exception)
    stop = asyncio.Event()

    async def worker(w):
        i = 0
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                if i % 3 == 0:
                    r = await svc.slow_echo(None, (w, i), 0.05)
                else:
                    r = await svc.echo(None, (w, i))
                assert r == [w, i]
            except Exception as exc:  # noqa: BLE001 - recorded, checked below
                r = exc
                await asyncio.sleep(0.01)  # a dead server refuses at once: do not spin
            outcomes.append((t0, time.monotonic(), r))
            i += 1

    workers = [asyncio.ensure_future(worker(w)) for w in range(20)]
    await asyncio.sleep(0.5)
    assert outcomes and not any(isinstance(o[2], Exception) for o in outcomes)
    killed_at = time.monotonic()
    await srv.akill()
    await asyncio.sleep(1.0)
    after_kill = [o for o in outcomes if o[1] >= killed_at]
    in_flight = [o for o in after_kill if o[0] < killed_at]
    assert in_flight, "some calls must have been in flight at the kill"
    for started, ended, result in after_kill:
        assert isinstance(result, ConnectionLostError), result
        assert not isinstance(result, RpcTimeoutError)
    # every call in flight at the kill failed at once: within 2 s (the kill and the
    # reaping take a while on a busy machine), where their timeout is 30 s
    assert max(o[1] for o in in_flight) - killed_at < 2.0
    # each of the 20 workers was awaiting exactly one call at the kill, and every one of
    # those calls has ended (calls made since are reconnect attempts, not leftovers)
    assert len(in_flight) == 20

    # the server is down for the client: its calls fail at once, not sent, while a
    # background probe retries it with a growing back-off (docs/liveness.md)
    assert not cli.server_state("test-1")["available"]
    assert isinstance(after_kill[-1][2], ServerUnavailableError)

    srv2 = await aspawn("test-1", core=core, port=srv.port)
    # back in rotation at the next probe: at most probe_backoff_max (5 s) after the
    # revival, plus the connect and the ping
    await wait_available(cli, "test-1")
    back_at = time.monotonic()
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*workers), 10)
    late = [o for o in outcomes if o[0] >= back_at]
    assert late and all(not isinstance(o[2], Exception) for o in late), late[:3]
    assert await svc.echo(None, "back") == "back"
    assert cli.in_flight("test-1") == 0
    await cli.stop()
    await srv2.akill()


async def test_sigterm_answers_calls_already_received_then_closes(aspawn, core):
    """A graceful stop (SIGTERM) with calls in flight: each one received is answered,
    calls sent after the stop began fail with ConnectionLostError as soon as the
    connection closes (not after their timeout), and the process exits cleanly."""
    srv = await aspawn("test-1", core=core)
    cli = make_client(core, [srv], timeout=30)
    await cli.start()
    svc = cli.proxies.user.test.service
    assert await svc.echo(None, 0) == 0
    slow = [asyncio.ensure_future(svc.slow_echo(None, i, 0.4 + i * 0.02)) for i in range(30)]
    await asyncio.sleep(0.2)   # the server has received them all
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.1)
    late = [asyncio.ensure_future(svc.slow_echo(None, "late", 0)) for _ in range(5)]
    assert await asyncio.gather(*slow) == list(range(30))
    answered_at = time.monotonic()
    for result in await asyncio.gather(*late, return_exceptions=True):
        assert isinstance(result, ConnectionLostError), result
    assert time.monotonic() - answered_at < 1.0
    assert await wait_exit(srv.proc, 5) == 0
    assert time.monotonic() - t0 < 3
    # the connection closed under the late calls: the server is down for this client
    # (docs/liveness.md), so the next call fails at once, without connecting
    with pytest.raises(ServerUnavailableError, match="server test-1 is unavailable"):
        await svc.echo(None, 1)
    assert cli.in_flight("test-1") == 0
    await cli.stop()


async def test_sigterm_grace_bounds_the_wait_and_late_calls_get_an_error(aspawn, core):
    """With --stop-grace 0.5, a call still running when the grace ends is answered with
    an error saying so (not dropped, not left to its 30 s timeout); calls that end in
    time are answered normally; the process exits soon after the grace."""
    srv = await aspawn("test-1", core=core, args=["--stop-grace", "0.5"])
    cli = make_client(core, [srv], timeout=30)
    await cli.start()
    svc = cli.proxies.user.test.service
    assert await svc.echo(None, 0) == 0
    quick = [asyncio.ensure_future(svc.slow_echo(None, i, 0.2)) for i in range(5)]
    stuck = [asyncio.ensure_future(svc.slow_echo(None, i, 60)) for i in range(5)]
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert await asyncio.gather(*quick) == list(range(5))
    results = await asyncio.gather(*stuck, return_exceptions=True)
    waited = time.monotonic() - t0
    for result in results:
        assert isinstance(result, RemoteError), result
        assert "server stopped before the call finished" in result.message
        assert "stop grace 0.5" in result.message
    assert 0.4 < waited < 2.0
    assert await wait_exit(srv.proc, 5) == 0
    assert time.monotonic() - t0 < 3.5
    assert cli.in_flight("test-1") == 0
    await cli.stop()


async def test_frozen_server_detected_by_keepalive_within_two_periods(aspawn, core):
    """A server that stops answering but keeps its socket open (SIGSTOP): with
    keepalive=0.5 s, the calls in flight fail with ConnectionLostError within two
    periods of the last byte received, far before their 30 s timeout. After SIGCONT,
    a background probe finds the server back, and calls work again."""
    period = 0.5
    srv = await aspawn("test-1", core=core)
    cli = make_client(core, [srv], timeout=30, keepalive=period)
    await cli.start()
    svc = cli.proxies.user.test.service
    assert await svc.echo(None, 0) == 0
    opened = time.monotonic()
    # Traffic until just past a keepalive tick of the connection (2 periods after it
    # opened), so a check on a fixed tick would notice only ~3 periods later.
    while time.monotonic() < opened + 2 * period + 0.05:
        assert await svc.echo(None, 1) == 1
    last_answer = time.monotonic()
    os.kill(srv.proc.pid, signal.SIGSTOP)
    try:
        calls = [asyncio.ensure_future(svc.echo(None, i)) for i in range(10)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        detected = time.monotonic() - last_answer
    finally:
        os.kill(srv.proc.pid, signal.SIGCONT)
    for result in results:
        assert isinstance(result, ConnectionLostError), result
        assert "keepalive" in str(result)
    assert 1.5 * period < detected < 2 * period + 0.25, detected
    assert cli.in_flight("test-1") == 0
    # declared dead, the server is down until a background probe finds it answering
    await wait_available(cli, "test-1")
    assert await svc.echo(None, "again") == "again"
    await cli.stop()


async def test_keepalive_keeps_an_idle_healthy_connection(aspawn, core):
    """The other side of keepalive: an idle connection to a live server is not closed
    (pings are answered), so a call after several idle periods uses it at once."""
    srv = await aspawn("test-1", core=core)
    cli = make_client(core, [srv], timeout=5, keepalive=0.2)
    await cli.start()
    svc = cli.proxies.user.test.service
    assert await svc.echo(None, 0) == 0
    mailbox = cli._station.mailboxes["test-1"]
    await asyncio.sleep(1.2)    # six periods without a call
    assert cli._station.mailboxes.get("test-1") is mailbox and mailbox.state == "open"
    assert await svc.echo(None, 1) == 1
    await cli.stop()


async def test_connect_refused_fails_every_queued_call_at_once_then_reconnects(aspawn, core):
    """Nothing listens on the port: the calls queued while connecting all fail at once
    with the same clear error, long before the connect timeout; once a server listens
    there, the next call connects."""
    port = free_port()
    info = {"id": "test-1", "server_type": "test", "host": "127.0.0.1", "port": port}
    cli = make_client(core, [info], connect_timeout=5, timeout=30)
    await cli.start()
    svc = cli.proxies.user.test.service
    t0 = time.monotonic()
    results = await asyncio.gather(*(svc.echo(None, i) for i in range(200)),
                                   return_exceptions=True)
    assert time.monotonic() - t0 < 1.0
    for result in results:
        assert isinstance(result, ConnectionLostError), result
        assert f"cannot connect to test-1 at 127.0.0.1:{port}" in str(result)
    assert cli.in_flight("test-1") == 0
    # the server is down for the client now: calls fail at once, nothing connects
    with pytest.raises(ServerUnavailableError):
        await svc.echo(None, "down")
    await aspawn("test-1", core=core, port=port)
    await wait_available(cli, "test-1")      # found by the background probe
    assert await asyncio.gather(*(svc.echo(None, i) for i in range(50))) == list(range(50))
    await cli.stop()


async def test_connect_to_a_listener_that_never_greets_times_out_within_connect_timeout(core):
    """The port accepts TCP (kernel backlog) but nothing ever answers: the calls fail
    with a clear 'timed out' error after connect_timeout, not after their own timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(50)          # never accept()ed, never greets
    port = listener.getsockname()[1]
    try:
        cli = make_client(core, [{"id": "mute", "server_type": "test", "port": port}],
                          connect_timeout=0.5, timeout=30)
        await cli.start()
        t0 = time.monotonic()
        results = await asyncio.gather(
            *(cli.proxies.user.test.service.echo.to_server("mute", i) for i in range(20)),
            return_exceptions=True)
        waited = time.monotonic() - t0
        for result in results:
            assert isinstance(result, ConnectionLostError), result
            assert f"cannot connect to mute at 127.0.0.1:{port}: timed out" in str(result)
        assert 0.45 < waited < 1.5
        assert cli.in_flight("mute") == 0
        await cli.stop()
    finally:
        listener.close()
