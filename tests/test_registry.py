"""Cluster membership, one conformance suite run on every backend (file, Redis, etcd)
against the real engine, started by tests/engines.py on free loopback ports.

Servers killed or stopped are real ``python -m pomelo_rpc serve --registry`` processes;
the 50-server churn uses in-process gateways (50 processes would cost minutes here),
each with its own registry connection, as separate processes would have.
"""

import asyncio
import logging
import os
import random
import signal
import time

import pytest

from conftest import REMOTE
from engines import engine  # noqa: F401  (the fixture: each engine in turn)
from pomelo_rpc import ConnectionLostError, client, server
from pomelo_rpc.registry import RegistryError

TTL = 2.0           # etcd's shortest lease is 2 s
AREA = os.path.join(REMOTE, "area")
AREA_REMOTES = {"user": AREA}


def serve_args(eng, cluster="c1", ttl=TTL):
    return ["--registry", eng.url, "--registry-ttl", str(ttl), "--cluster", cluster,
            "--stop-grace", "3"]


async def start_procs(spawn, eng, *ids):
    """Server processes registered in ``eng`` (cluster c1), started at once."""
    loop = asyncio.get_running_loop()
    return await asyncio.gather(*(loop.run_in_executor(
        None, lambda sid=sid: spawn(sid, "area", AREA_REMOTES, args=serve_args(eng)))
        for sid in ids))


async def in_thread(f, *args):
    return await asyncio.get_running_loop().run_in_executor(None, f, *args)


async def follower(eng, cluster="c1", **opts):
    """A started client following ``cluster`` in ``eng``, with the area proxies."""
    cli = client.create(registry=eng.url, cluster=cluster, **opts)
    cli.add_proxies([{"namespace": "user", "server_type": "area", "path": AREA}])
    await cli.start()
    return cli


def gateway(url, sid, cluster="c1", **opts):
    """An in-process area server registering as ``sid`` in ``cluster``."""
    return server.create(paths=[{"namespace": "user", "path": AREA}],
                         context={"server_id": f"{cluster}/{sid}"},
                         server_info={"id": sid, "server_type": "area"},
                         registry=url, registry_ttl=TTL, cluster=cluster, **opts)


async def wait_for(check, limit, what):
    """Poll ``check()`` until true; return the seconds it took (AssertionError after ``limit``)."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > limit:
            raise AssertionError(f"{what}: not within {limit} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


def ids(cli):
    return set(cli.server_ids("area"))


async def test_new_server_routable_within_1s_killed_one_gone_within_ttl(engine, spawn):
    clients = [await follower(engine) for _ in range(2)]
    assert [ids(c) for c in clients] == [set(), set()]
    (proc,) = await start_procs(spawn, engine, "area-1")
    up = time.monotonic()       # the process said it listens (and is registered)
    for cli in clients:
        await wait_for(lambda cli=cli: "area-1" in ids(cli), 1.0, "area-1 routable")
        answer = await cli.proxies.user.area.work.echo({"uid": 7}, "hi")
        assert answer == {"server_id": "area-1", "value": "hi"}
        assert cli.server_info("area-1")["port"] == proc.port
    assert time.monotonic() - up < 1.0

    await in_thread(proc.kill)
    killed = time.monotonic()
    for cli in clients:
        await wait_for(lambda cli=cli: not ids(cli), TTL + 1.0 - (time.monotonic() - killed),
                       "killed area-1 gone")
    assert time.monotonic() - killed <= TTL + 1.0
    for cli in clients:
        await cli.stop()


async def test_frozen_server_vanishes_and_its_calls_in_flight_fail_at_once(engine, spawn):
    (proc,) = await start_procs(spawn, engine, "area-1")
    # the registry's promise alone: the client's own liveness checks (which would find
    # the frozen server in 1.5 s, docs/liveness.md) are off
    cli = await follower(engine, timeout=30.0, liveness_timeout=0, keepalive=0)
    await wait_for(lambda: ids(cli) == {"area-1"}, 1.0, "area-1 listed")
    assert (await cli.proxies.user.area.work.echo.to_server("area-1", 1))["value"] == 1
    hold = cli.proxies.user.area.work.hold
    calls = [asyncio.ensure_future(hold.to_server("area-1", 20.0)) for _ in range(5)]
    await wait_for(lambda: cli.in_flight("area-1") == 5, 1.0, "calls in flight")
    os.kill(proc.proc.pid, signal.SIGSTOP)      # alive, connected, silent: its ttl runs out
    frozen = time.monotonic()
    try:
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True),
                                         TTL + 1.0)
        assert time.monotonic() - frozen <= TTL + 1.0
        assert all(isinstance(r, ConnectionLostError) and "area-1 was removed" in str(r)
                   for r in results), results
        assert ids(cli) == set()
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)
    await cli.stop()


async def test_graceful_stop_under_routed_load_fails_no_call(engine, spawn):
    procs = await start_procs(spawn, engine, "area-1", "area-2", "area-3")
    cli = await follower(engine, router_type="rr")
    await wait_for(lambda: len(ids(cli)) == 3, 1.0, "three servers")
    hold = cli.proxies.user.area.work.hold
    answered, failed = {}, []
    running = True

    async def load():
        while running:
            try:
                answer = await hold(None, 0.02)
            except Exception as exc:
                failed.append(exc)
            else:
                answered[answer["server_id"]] = answered.get(answer["server_id"], 0) + 1

    workers = [asyncio.ensure_future(load()) for _ in range(12)]
    await asyncio.sleep(0.3)
    before = answered.get("area-2", 0)
    assert before > 0 and cli.in_flight("area-2") > 0
    await in_thread(procs[1].terminate)        # SIGTERM, and wait for the exit
    assert procs[1].proc.returncode == 0
    assert ids(cli) == {"area-1", "area-3"}
    await asyncio.sleep(0.3)
    running = False
    await asyncio.gather(*workers)
    assert failed == []
    assert answered["area-1"] > 10 and answered["area-3"] > 10
    await cli.stop()


async def test_engine_down_then_back_empty(engine, spawn, caplog):
    caplog.set_level(logging.WARNING, logger="pomelo_rpc.registry")
    (proc,) = await start_procs(spawn, engine, "area-1")
    cli = await follower(engine)
    await wait_for(lambda: ids(cli) == {"area-1"}, 1.0, "area-1 listed")
    echo = cli.proxies.user.area.work.echo

    await engine.astop()
    down = time.monotonic()
    while time.monotonic() - down < 1.5:          # calls keep flowing on the last list
        assert (await echo({"uid": 1}, "x"))["server_id"] == "area-1"
        await asyncio.sleep(0.05)
    assert ids(cli) == {"area-1"}
    assert any("following cluster c1" in r.getMessage() and "failed" in r.getMessage()
               for r in caplog.records)

    await engine.astart()                          # back, and empty
    back = time.monotonic()
    fresh = await follower(engine)
    took = await wait_for(lambda: ids(cli) == {"area-1"} and "area-1" in ids(fresh),
                          TTL + 0.5, "area-1 registered again")
    assert ids(cli) == {"area-1"}                  # held all along
    assert time.monotonic() - back <= TTL + 0.5, took
    assert (await echo({"uid": 1}, "y"))["server_id"] == "area-1"

    await start_procs(spawn, engine, "area-2")    # both clients follow again
    for c in (cli, fresh):
        await wait_for(lambda c=c: ids(c) == {"area-1", "area-2"}, 1.0, "area-2 seen")
    assert proc.proc.poll() is None
    await cli.stop()
    await fresh.stop()


async def test_two_clusters_on_one_engine_never_see_each_other(engine):
    gws = [gateway(engine.url, "area-1", "red"), gateway(engine.url, "area-1", "blue"),
           gateway(engine.url, "area-2", "blue")]
    for gw in gws:
        await gw.start()
    red = await follower(engine, "red")
    blue = await follower(engine, "blue")
    assert ids(red) == {"area-1"} and ids(blue) == {"area-1", "area-2"}
    assert red.server_info("area-1")["port"] == gws[0].port
    assert blue.server_info("area-1")["port"] == gws[1].port
    echo = red.proxies.user.area.work.echo
    assert (await echo.to_server("area-1", 1))["server_id"] == "red/area-1"
    await gws[2].stop()
    await wait_for(lambda: ids(blue) == {"area-1"}, 1.0, "blue area-2 gone")
    assert ids(red) == {"area-1"}
    for x in (red, blue, gws[0], gws[1]):
        await x.stop()


async def test_unreachable_engine_at_start_is_a_clear_error(engine):
    url = engine.unreachable_url()
    cli = client.create(registry=url, connect_timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(RegistryError, match="connecting failed"):
        await cli.start()
    assert time.monotonic() - t0 < 1.5
    gw = gateway(url, "area-1", registry_connect_timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(RegistryError):
        await gw.start()
    assert time.monotonic() - t0 < 1.5
    assert gw.port is None                  # it does not stay listening


async def test_garbage_in_the_engine_is_logged_and_skipped(engine, caplog):
    caplog.set_level(logging.WARNING, logger="pomelo_rpc.registry")
    gw1 = gateway(engine.url, "area-1")
    await gw1.start()
    await in_thread(engine.put_garbage, "c1")
    cli = await follower(engine)
    assert ids(cli) == {"area-1"}
    assert any("malformed record" in r.getMessage() for r in caplog.records)
    caplog.clear()
    await in_thread(engine.put_garbage, "c1")      # while followed: watch events, resyncs
    gw2 = gateway(engine.url, "area-2")
    await gw2.start()
    await wait_for(lambda: ids(cli) == {"area-1", "area-2"}, 1.0, "area-2 seen past garbage")
    assert (await cli.proxies.user.area.work.echo.to_server("area-2", 1))["value"] == 1
    for x in (cli, gw1, gw2):
        await x.stop()


async def test_50_servers_churning_under_3_routing_clients(engine):
    rng = random.Random(50)
    names = [f"area-{i}" for i in range(50)]
    running = {}                     # id -> gateway
    down = {sid: [] for sid in names}   # id -> [[stopped_at, started_again_at or None]]
    busy = set()

    async def start(sid):
        if down[sid]:       # from here on, clients may route to the new one
            down[sid][-1][1] = time.monotonic()
        gw = gateway(engine.url, sid, stop_grace=1.0)
        await gw.start()
        running[sid] = gw

    async def stop(sid, abrupt):
        gw = running.pop(sid)
        if abrupt:              # vanishes: no deregistration, its record expires
            reg, gw.registry = gw.registry, None
            await reg.close()
        await gw.stop(0.5)
        down[sid].append([time.monotonic(), None])
        return abrupt

    await asyncio.gather(*(start(sid) for sid in names))
    routed = []                      # (client index, server id, when)
    clients = []
    for i in range(3):
        cli = await follower(engine, router_type="rr", timeout=3.0)
        cli.before(lambda sid, msg, i=i: routed.append((i, sid, time.monotonic())))
        clients.append(cli)
    results = {"ok": 0, "failed": 0}
    loading = True

    async def load(cli):
        while loading:
            try:
                await cli.proxies.user.area.work.echo(None, 1)
                results["ok"] += 1
            except Exception:
                results["failed"] += 1
            await asyncio.sleep(0.005)

    workers = [asyncio.ensure_future(load(c)) for c in clients for _ in range(3)]
    changes = []

    async def toggle(sid):
        busy.add(sid)
        try:
            if sid in running:
                abrupt = await stop(sid, rng.random() < 0.3)
                changes.append(time.monotonic() + (TTL if abrupt else 0))
            else:
                await start(sid)
                changes.append(time.monotonic())
        finally:
            busy.discard(sid)

    churn = []
    t_end = time.monotonic() + 5.0
    while time.monotonic() < t_end:
        sid = rng.choice([s for s in names if s not in busy])
        churn.append(asyncio.ensure_future(toggle(sid)))
        await asyncio.sleep(0.05)
    await asyncio.gather(*churn)
    settled = max(changes)            # a vanished server's change is its record's expiry
    alive = set(running)
    for n, cli in enumerate(clients):
        try:
            await wait_for(lambda cli=cli: ids(cli) == alive,
                           max(0.1, settled + 2.0 - time.monotonic()), "clients converge")
        except AssertionError:
            raise AssertionError(f"client {n} lacks {sorted(alive - ids(cli))}, still lists "
                                 f"{sorted(ids(cli) - alive)}, {time.monotonic() - settled:.2f}"
                                 f" s after the last change") from None
    assert time.monotonic() <= settled + 2.0
    loading = False
    await asyncio.gather(*workers)

    late = [(i, sid, t) for i, sid, t in routed
            for stopped, restarted in down[sid]
            if stopped + TTL + 1.0 < t and (restarted is None or t < restarted)]
    assert late == [], [(i, sid, t, down[sid]) for i, sid, t in late[:3]]
    assert len(changes) > 50 and results["ok"] > 500, (len(changes), results)
    for cli in clients:
        await cli.stop()
    await asyncio.gather(*(gw.stop(0) for gw in running.values()))
