"""Fail modes, each shown by killing a real server process mid-traffic."""

import asyncio
import time

import pytest

from cluster import area_client, area_msg, astart_areas, restart, tally, wait_running
from pomelo_rpc import (ConnectionLostError, PendingQueueFullError, RemoteError, RpcTimeoutError,
                        client)


def _split(results):
    ok = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    return ok, errors


async def test_failfast_calls_to_the_killed_server_fail_at_once(aspawn, core):
    servers = await astart_areas(aspawn, 2, core)
    cli = area_client(core, servers, router_type="rr", timeout=20)
    await cli.start()
    hold = cli.proxies.user.area.work.hold
    calls = [asyncio.ensure_future(hold(None, 0.8)) for _ in range(200)]
    await wait_running(cli, "area-0", 100)
    t0 = time.monotonic()
    await servers[0].akill()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, ConnectionLostError) for r in results[0::2]), results[:2]
    assert [r["server_id"] for r in results[1::2]] == ["area-1"] * 100
    assert time.monotonic() - t0 < 2
    await cli.stop()


async def test_failover_every_call_succeeds_through_the_other_server(aspawn, core):
    servers = await astart_areas(aspawn, 2, core)
    cli = area_client(core, servers, router_type="rr", fail_mode="failover", timeout=10)
    await cli.start()
    hold = cli.proxies.user.area.work.hold
    calls = [asyncio.ensure_future(hold(None, 0.5, i)) for i in range(400)]
    await wait_running(cli, "area-0", 200)
    await servers[0].akill()
    # traffic goes on while area-0 is dead: rr still picks it for half of these
    later = [asyncio.ensure_future(hold(None, 0, 400 + i)) for i in range(100)]
    results = await asyncio.gather(*calls, *later)
    assert [r["tag"] for r in results] == list(range(500))
    assert tally(results) == {"area-1": 500}     # area-0 died before answering any

    await servers[1].akill()
    with pytest.raises(ConnectionLostError,
                       match="failover: every server of type 'area' failed"):
        await hold(None, 0)
    await cli.stop()


async def test_failsafe_retries_until_the_server_is_back(aspawn, core):
    servers = await astart_areas(aspawn, 1, core)
    cli = area_client(core, servers, fail_mode="failsafe", retry_times=6,
                      retry_connect_time=0.15, timeout=10)
    await cli.start()
    hold = cli.proxies.user.area.work.hold
    first_pid = (await hold(None, 0))["pid"]
    calls = [asyncio.ensure_future(hold(None, 0.5, i)) for i in range(50)]
    await wait_running(cli, "area-0", 50)
    await servers[0].akill()
    await asyncio.sleep(0.2)
    later = [asyncio.ensure_future(hold(None, 0, 50 + i)) for i in range(20)]
    back = await restart(aspawn, servers[0], core)    # same port, within the retry window
    results = await asyncio.gather(*calls, *later)
    assert [r["tag"] for r in results] == list(range(70))
    assert {r["pid"] for r in results} == {back.proc.pid} != {first_pid}
    await cli.stop()


async def test_failsafe_gives_up_after_retry_times_with_growing_delays(aspawn, core):
    for retry_times, least, most in ((3, 0.6, 1.2), (1, 0.1, 0.6)):
        servers = await astart_areas(aspawn, 1, core)
        cli = area_client(core, servers, fail_mode="failsafe", retry_times=retry_times,
                          retry_connect_time=0.1)
        await cli.start()
        assert (await cli.rpc_invoke("area-0", area_msg("echo", 1)))["value"] == 1
        await servers[0].akill()
        t0 = time.monotonic()
        with pytest.raises(ConnectionLostError,
                           match=f"failsafe: area-0 failed {retry_times + 1} time"):
            await cli.rpc_invoke("area-0", area_msg("hold", 5))
        elapsed = time.monotonic() - t0
        # 0.1 + 0.2 + 0.3: the pauses grow (the loop's timers are whole milliseconds)
        assert least - 0.005 <= elapsed < most, elapsed
        await cli.stop()


async def test_failsafe_pauses_grow_between_attempts(core):
    """A listener that drops every connection: the attempts come 0.1, 0.2, 0.3 s apart."""
    loop = asyncio.get_running_loop()
    seen = []

    def drop(reader, writer):
        seen.append(loop.time())
        writer.close()

    listener = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    cli = client.create(core=core, fail_mode="failsafe", retry_times=3, retry_connect_time=0.1)
    cli.add_servers([{"id": "flaky", "server_type": "area", "port": port}])
    await cli.start()
    with pytest.raises(ConnectionLostError, match="failsafe: flaky failed 4 time"):
        await cli.rpc_invoke("flaky", area_msg("echo", 1))
    gaps = [b - a for a, b in zip(seen, seen[1:])]
    assert len(seen) == 4, seen
    for gap, expected in zip(gaps, (0.1, 0.2, 0.3)):
        assert expected - 0.01 <= gap < expected + 0.15, gaps
    await cli.stop()
    listener.close()
    await listener.wait_closed()


async def test_failsafe_does_not_retry_remote_errors_or_timeouts(aspawn, core):
    servers = await astart_areas(aspawn, 1, core)
    cli = area_client(core, servers, fail_mode="failsafe", retry_connect_time=0.5)
    await cli.start()
    t0 = time.monotonic()
    with pytest.raises(RemoteError, match="boom"):
        await cli.rpc_invoke("area-0", area_msg("fail", "boom"))
    with pytest.raises(RpcTimeoutError):
        await cli.rpc_invoke("area-0", area_msg("hold", 5), timeout=0.2)
    assert time.monotonic() - t0 < 0.45
    stats = await cli.rpc_invoke("area-0", area_msg("stats"))
    assert stats["calls"] == 2          # each call ran exactly once
    await cli.stop()


async def test_failback_resends_queued_calls_when_the_server_is_back(aspawn, core):
    servers = await astart_areas(aspawn, 1, core)
    cli = area_client(core, servers, fail_mode="failback", retry_connect_time=0.1, timeout=10)
    await cli.start()
    hold = cli.proxies.user.area.work.hold
    calls = [asyncio.ensure_future(hold(None, 0.5, i)) for i in range(30)]
    await wait_running(cli, "area-0", 30)
    await servers[0].akill()
    await asyncio.sleep(0.3)
    later = [asyncio.ensure_future(hold(None, 0, 30 + i)) for i in range(20)]
    await asyncio.sleep(0.1)
    assert not any(c.done() for c in calls + later)      # queued, not failed
    back = await restart(aspawn, servers[0], core)
    results = await asyncio.gather(*calls, *later)
    assert [r["tag"] for r in results] == list(range(50))
    assert {r["pid"] for r in results} == {back.proc.pid}
    await cli.stop()


async def test_failback_queue_is_bounded(aspawn, core):
    servers = await astart_areas(aspawn, 1, core)
    cli = area_client(core, servers, fail_mode="failback", failback_size=5,
                      retry_connect_time=0.1, timeout=10)
    await cli.start()
    hold = cli.proxies.user.area.work.hold
    calls = [asyncio.ensure_future(hold(None, 0.5, i)) for i in range(20)]
    await wait_running(cli, "area-0", 20)
    await servers[0].akill()
    await asyncio.sleep(0.2)
    with pytest.raises(PendingQueueFullError, match="failback_size=5"):
        await hold(None, 0)
    back = await restart(aspawn, servers[0], core)
    ok, errors = _split(await asyncio.gather(*calls, return_exceptions=True))
    assert len(ok) == 5 and len(errors) == 15
    assert all(isinstance(e, PendingQueueFullError) for e in errors), errors[0]
    assert {r["pid"] for r in ok} == {back.proc.pid}
    # the queue drained: calls work again
    assert (await hold(None, 0, "x"))["tag"] == "x"
    await cli.stop()


async def test_failback_call_whose_server_never_returns_times_out(aspawn, core):
    servers = await astart_areas(aspawn, 1, core)
    cli = area_client(core, servers, fail_mode="failback", retry_connect_time=0.1, timeout=0.8)
    await cli.start()
    hold = cli.proxies.user.area.work.hold
    t0 = time.monotonic()
    calls = [asyncio.ensure_future(hold(None, 5)) for _ in range(10)]
    await wait_running(cli, "area-0", 10)
    await servers[0].akill()
    results = await asyncio.gather(*calls, return_exceptions=True)
    elapsed = time.monotonic() - t0
    assert all(isinstance(r, RpcTimeoutError) for r in results), results[:2]
    assert "area-0 did not come back" in str(results[0])
    assert 0.75 <= elapsed < 1.5, elapsed
    t0 = time.monotonic()
    with pytest.raises(RpcTimeoutError):
        await hold(None, 0, timeout=0.3)
    assert 0.28 <= time.monotonic() - t0 < 0.8
    await cli.stop()


async def test_waiting_calls_fail_at_once_when_the_client_stops(aspawn, core):
    for mode in ("failsafe", "failback"):
        servers = await astart_areas(aspawn, 1, core)
        cli = area_client(core, servers, fail_mode=mode, retry_times=50,
                          retry_connect_time=0.2, timeout=30)
        await cli.start()
        assert (await cli.rpc_invoke("area-0", area_msg("echo", 1)))["value"] == 1
        await servers[0].akill()
        calls = [asyncio.ensure_future(cli.rpc_invoke("area-0", area_msg("echo", i)))
                 for i in range(5)]
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        await cli.stop()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert time.monotonic() - t0 < 0.2
        assert all(isinstance(r, ConnectionLostError) and "stopped" in str(r)
                   for r in results), (mode, results)
