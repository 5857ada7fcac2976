"""Servers that come and go: add_servers, remove_servers, replace_servers, to_server("*")."""

import asyncio
import time

import pytest

from cluster import AREA_REMOTES, area_client, area_msg, astart_areas, tally, wait_running
from pomelo_rpc import BroadcastError, ConnectionLostError, NoServerError, PendingQueueFullError
from pomelo_rpc.router import default_route


async def test_added_servers_take_calls_and_join_broadcasts(aspawn, core):
    servers = await astart_areas(aspawn, 3, core)
    cli = area_client(core, servers[:1], router_type="rr")
    await cli.start()
    work = cli.proxies.user.area.work
    assert tally([await work.echo(None, i) for i in range(4)]) == {"area-0": 4}
    assert set(await work.stats.to_server("*")) == {"area-0"}

    cli.add_servers([s.info for s in servers[1:]])
    answers = await asyncio.gather(*(work.echo(None, i) for i in range(300)))
    assert tally(answers) == {"area-0": 100, "area-1": 100, "area-2": 100}
    everyone = await work.echo.to_server("*", "hi")
    assert everyone == {sid: {"server_id": sid, "value": "hi"}
                        for sid in ("area-0", "area-1", "area-2")}
    assert cli.server_ids("area") == ["area-0", "area-1", "area-2"]
    await cli.stop()


async def test_removed_server_fails_its_calls_in_flight_at_once(aspawn, core):
    servers = await astart_areas(aspawn, 3, core)
    cli = area_client(core, servers, router_type="rr", timeout=10)
    await cli.start()
    hold = cli.proxies.user.area.work.hold
    calls = [asyncio.ensure_future(hold(None, 0.6, i)) for i in range(300)]
    await wait_running(cli, "area-1", 100)
    t0 = time.monotonic()
    cli.remove_servers(["area-1"])
    results = await asyncio.gather(*calls[1::3], return_exceptions=True)
    assert time.monotonic() - t0 < 0.3          # at once, not at the 10 s timeout
    assert all(isinstance(r, ConnectionLostError) and "area-1 was removed" in str(r)
               for r in results), results[:2]
    assert cli.in_flight("area-1") == 0
    # the other servers' calls are untouched
    others = await asyncio.gather(*calls[0::3], *calls[2::3])
    assert tally(others) == {"area-0": 100, "area-2": 100}

    # gone from routing, direct calls and broadcasts; its process still runs
    assert tally(await asyncio.gather(*(hold(None, 0) for _ in range(10)))) == {
        "area-0": 5, "area-2": 5}
    with pytest.raises(NoServerError, match="unknown server id 'area-1'"):
        await hold.to_server("area-1", 0)
    assert set(await hold.to_server("*", 0)) == {"area-0", "area-2"}
    assert servers[1].proc.poll() is None
    await cli.stop()


async def test_removal_ends_failsafe_and_failback_waits_at_once(aspawn, core):
    for mode in ("failsafe", "failback", "failover"):
        servers = await astart_areas(aspawn, 2, core)
        cli = area_client(core, servers, fail_mode=mode, retry_times=50,
                          retry_connect_time=0.2, timeout=10)
        await cli.start()
        echo = cli.proxies.user.area.work.echo
        assert (await echo.to_server("area-0", 1))["value"] == 1
        # calls in flight when area-0 is removed: failover moves them to area-1
        hold = [asyncio.ensure_future(cli.rpc_invoke("area-0", area_msg("hold", 0.5, i)))
                for i in range(5)]
        await wait_running(cli, "area-0", 5)
        await servers[0].akill()
        # calls to the dead server now wait in failsafe / failback (failover: area-1 answers)
        waiting = [asyncio.ensure_future(echo.to_server("area-0", i)) for i in range(5)]
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        cli.remove_servers(["area-0"])
        results = await asyncio.gather(*hold, *waiting, return_exceptions=True)
        if mode == "failover":
            assert tally(results) == {"area-1": 10}, results
        else:
            assert time.monotonic() - t0 < 0.2, mode
            assert all(isinstance(r, ConnectionLostError) and "area-0 was removed" in str(r)
                       for r in results), (mode, results)
        await cli.stop()


async def test_replace_servers_keeps_unchanged_connections(aspawn, core):
    servers = await astart_areas(aspawn, 4, core)
    cli = area_client(core, servers[:3], timeout=10)
    await cli.start()
    hold = cli.proxies.user.area.work.hold
    kept = [asyncio.ensure_future(hold.to_server("area-0", 0.5, i)) for i in range(20)]
    dropped = [asyncio.ensure_future(hold.to_server("area-1", 0.5, i)) for i in range(20)]
    await wait_running(cli, "area-0", 20)
    await wait_running(cli, "area-1", 20)
    t0 = time.monotonic()
    cli.replace_servers([servers[3].info, servers[2].info, servers[0].info])
    dropped = await asyncio.gather(*dropped, return_exceptions=True)
    assert time.monotonic() - t0 < 0.3
    assert all(isinstance(r, ConnectionLostError) and "area-1 was removed" in str(r)
               for r in dropped)
    # area-0's connection survived: its calls in flight are answered
    assert [r["tag"] for r in await asyncio.gather(*kept)] == list(range(20))
    assert cli.server_ids("area") == ["area-3", "area-2", "area-0"]
    assert set(await hold.to_server("*", 0)) == {"area-0", "area-2", "area-3"}
    # the default router follows the new list
    for uid in range(30):
        expected = default_route({"uid": uid}, ["area-3", "area-2", "area-0"])
        assert (await hold({"uid": uid}, 0))["server_id"] == expected
    await cli.stop()


async def test_a_server_back_on_a_new_port_keeps_its_place(aspawn, core):
    servers = await astart_areas(aspawn, 3, core)
    cli = area_client(core, servers, timeout=5)
    await cli.start()
    where = cli.proxies.user.area.work.hold
    before = {uid: (await where({"uid": uid}, 0))["server_id"] for uid in range(60)}
    old_pid = (await where.to_server("area-1", 0))["pid"]
    await servers[1].akill()
    moved = await aspawn("area-1", "area", AREA_REMOTES, core=core)   # a new process, a new port
    assert moved.port != servers[1].port
    cli.add_servers([moved.info])
    assert cli.server_ids("area") == ["area-0", "area-1", "area-2"]
    after = {uid: await where({"uid": uid}, 0) for uid in range(60)}
    assert {uid: a["server_id"] for uid, a in after.items()} == before
    assert {a["pid"] for a in after.values() if a["server_id"] == "area-1"} == {moved.proc.pid}
    assert moved.proc.pid != old_pid
    await cli.stop()


async def test_broadcast_reports_each_server_and_pending_queue_is_bounded(aspawn, core):
    servers = await astart_areas(aspawn, 3, core)
    cli = area_client(core, servers, pending_size=20)
    await cli.start()
    work = cli.proxies.user.area.work
    # while the connections open, at most pending_size calls wait per server
    results = await asyncio.gather(*(work.echo.to_server("area-2", i) for i in range(50)),
                                   return_exceptions=True)
    assert [r["value"] for r in results[:20]] == list(range(20))
    assert all(isinstance(r, PendingQueueFullError) and "pending_size=20" in str(r)
               for r in results[20:])
    stats = await work.stats.to_server("*")
    assert {sid: s["server_id"] for sid, s in stats.items()} == {
        "area-0": "area-0", "area-1": "area-1", "area-2": "area-2"}
    assert stats["area-2"]["calls"] == 20
    await servers[0].akill()
    with pytest.raises(BroadcastError) as info:
        await work.stats.to_server("*")
    assert set(info.value.results) == {"area-1", "area-2"}
    assert isinstance(info.value.errors["area-0"], ConnectionLostError)
    cli.remove_servers(["area-0"])
    assert set(await work.stats.to_server("*")) == {"area-1", "area-2"}
    await cli.stop()
