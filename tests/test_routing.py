"""Routers against real server processes: where calls land, counted by the servers.

The routers are pure Python, so these tests use one client core.
"""

import asyncio

import pytest

from cluster import area_client, astart_areas, server_calls, tally
from pomelo_rpc import NoServerError, client
from pomelo_rpc.router import ConsistentHash, crc32_index, default_route

CORE = "cython"

# Node: require("crc").crc32(uid) (crc 0.2.0, as pomelo-rpc uses) and abs(...) % 3
NODE_CRC32 = {"42": (841265288, 2), "1001": (-1021275263, 2), "1002": (1512686139, 0),
              "a": (-390611389, 1), "b": (1908338681, 2), "user-1": (2116437524, 2),
              "user-2": (-416344146, 0), "user-3": (-1876416712, 1), "player-x": (-1753796921, 2),
              "uid-99": (-1419798344, 2), "hello world": (222957957, 0), "Z": (1505515367, 2)}

# Node: pomelo-rpc/lib/util/consistentHash over ["area-0", "area-1", "area-2"], getNode(key)
NODE_CH = {"k0": "area-0", "k1": "area-1", "k2": "area-1", "k3": "area-0", "k4": "area-0",
           "k5": "area-1", "k6": "area-1", "k7": "area-2", "k8": "area-2", "k9": "area-1",
           "player-17": "area-0", "ü": "area-0"}


def test_default_router_index_is_node_pomelos():
    for uid, (signed, index) in NODE_CRC32.items():
        assert crc32_index(uid, 3) == index == abs(signed) % 3, uid
        assert crc32_index(uid, 2 ** 31) == abs(signed) % 2 ** 31, uid
    ids = ["area-0", "area-1", "area-2"]
    assert default_route({"uid": "a"}, ids) == "area-1"
    assert default_route({"uid": 1001}, ids) == "area-2"     # uid.toString(), as in Node
    # pomelo hashes session.uid || '': a falsy uid and no session both give index 0
    for param in (None, {}, {"uid": 0}, {"uid": ""}, {"uid": None}):
        assert default_route(param, ids) == "area-0", param

    class Session:
        uid = "user-3"
    assert default_route(Session(), ids) == "area-1"


async def test_default_router_sends_each_uid_where_node_would(aspawn):
    servers = await astart_areas(aspawn, 3)
    cli = area_client(CORE, servers)
    await cli.start()
    echo = cli.proxies.user.area.work.echo
    for uid, (_, index) in NODE_CRC32.items():
        for _ in range(3):
            assert (await echo({"uid": uid}, uid))["server_id"] == f"area-{index}", uid
    # many uids: sticky while the list is unchanged, and spread over every server
    first = await asyncio.gather(*(echo({"uid": f"u{i}"}, i) for i in range(600)))
    again = await asyncio.gather(*(echo({"uid": f"u{i}"}, i) for i in range(600)))
    assert [a["server_id"] for a in first] == [a["server_id"] for a in again]
    counts = tally(first)
    assert set(counts) == {"area-0", "area-1", "area-2"}
    assert min(counts.values()) > 120, counts
    await cli.stop()


async def test_round_robin_is_exact(aspawn):
    servers = await astart_areas(aspawn, 3)
    cli = area_client(CORE, servers, router_type="rr")
    await cli.start()
    echo = cli.proxies.user.area.work.echo
    answers = await asyncio.gather(*(echo(None, i) for i in range(3000)))
    assert [a["server_id"] for a in answers] == ["area-0", "area-1", "area-2"] * 1000
    assert [a["value"] for a in answers] == list(range(3000))
    assert await server_calls(servers) == {"area-0": 1000, "area-1": 1000, "area-2": 1000}
    await cli.stop()


async def test_weighted_round_robin_follows_weights(aspawn):
    servers = await astart_areas(aspawn, 3)
    weights = {"area-0": 1, "area-1": 2, "area-2": 3}
    cli = area_client(CORE, servers, weights=weights, router_type="wrr")
    await cli.start()
    echo = cli.proxies.user.area.work.echo
    answers = await asyncio.gather(*(echo(None, i) for i in range(3000)))
    counted = await server_calls(servers)
    assert counted == tally(answers)
    for sid, weight in weights.items():
        assert abs(counted[sid] - 3000 * weight / 6) <= 3000 * 0.03, counted
    # smooth: every window of 6 calls holds each server exactly its weight
    for start in range(0, 3000, 6):
        window = tally(answers[start:start + 6])
        assert window == weights, (start, window)

    # a new weight (the same address) applies at once and keeps the connection; 0 gets nothing
    cli.add_servers([dict(servers[0].info, weight=0), dict(servers[2].info, weight="1")])
    answers = await asyncio.gather(*(echo(None, i) for i in range(300)))
    assert tally(answers) == {"area-1": 200, "area-2": 100}
    await cli.stop()


async def test_least_active_counts_calls_in_flight_not_calls_made(aspawn):
    servers = await astart_areas(aspawn, 2)
    cli = area_client(CORE, servers, router_type="la")
    await cli.start()
    work = cli.proxies.user.area.work

    # concurrent slow calls: each goes where the fewest are in flight -> an even split
    answers = await asyncio.gather(*(work.hold(None, 0.3) for _ in range(10)))
    assert tally(answers) == {"area-0": 5, "area-1": 5}
    assert max(a["active"] for a in answers) == 5

    # area-0 busy with 6 pinned calls: every routed call goes to area-1 meanwhile
    pinned = [asyncio.ensure_future(work.hold.to_server("area-0", 0.6)) for _ in range(6)]
    await asyncio.sleep(0.05)
    assert cli.in_flight("area-0") == 6
    routed = [await work.echo(None, i) for i in range(20)]
    assert tally(routed) == {"area-1": 20}
    await asyncio.gather(*pinned)
    assert cli.in_flight("area-0") == cli.in_flight("area-1") == 0

    # answered calls no longer count: area-1 got 25 more calls ever, yet the load is even
    answers = await asyncio.gather(*(work.hold(None, 0.2) for _ in range(10)))
    assert tally(answers) == {"area-0": 5, "area-1": 5}
    # idle servers share sequential calls in turn
    routed = [await work.echo(None, i) for i in range(20)]
    assert tally(routed) == {"area-0": 10, "area-1": 10}
    await cli.stop()


async def test_consistent_hash_is_stable_and_moves_only_the_keys_it_must(aspawn):
    servers = await astart_areas(aspawn, 4)
    cli = area_client(CORE, servers[:3], router_type="ch", hash_field_index=1)
    await cli.start()
    hold = cli.proxies.user.area.work.hold    # hold(delay, tag): args[1] is the key
    keys = [f"player-{i}" for i in range(900)]

    async def owners():
        answers = await asyncio.gather(*(hold(None, 0, key) for key in keys))
        assert [a["tag"] for a in answers] == keys
        return {key: a["server_id"] for key, a in zip(keys, answers)}

    # the same key lands where a Node pomelo client puts it
    for key, sid in NODE_CH.items():
        assert (await hold(None, 0, key))["server_id"] == sid, key
    base = await owners()
    assert await owners() == base
    counts = tally({"server_id": s} for s in base.values())
    assert set(counts) == {"area-0", "area-1", "area-2"} and min(counts.values()) > 200, counts

    cli.remove_servers(["area-1"])
    removed = await owners()
    for key, sid in base.items():
        if sid != "area-1":
            assert removed[key] == sid, key      # keys of the others stay exactly
        else:
            assert removed[key] in ("area-0", "area-2"), key
    owned_by_1 = [k for k, s in base.items() if s == "area-1"]
    assert {removed[k] for k in owned_by_1} == {"area-0", "area-2"}

    cli.add_servers([servers[3].info])
    added = await owners()
    moved = [k for k in keys if added[k] != removed[k]]
    assert moved and all(added[k] == "area-3" for k in moved)
    assert 100 < len(moved) < 450, len(moved)

    cli.remove_servers(["area-3"])
    cli.add_servers([servers[1].info])
    assert await owners() == base               # the ring depends on the set of servers only
    await cli.stop()


def test_consistent_hash_key_falls_back_like_pomelo():
    class Stub:
        opts = {"hash_field_index": 0}

        def server_ids(self, server_type):
            return ["area-0", "area-1", "area-2"]

    ch = ConsistentHash(Stub())
    msg = {"namespace": "user", "server_type": "area", "service": "player", "method": "where",
           "args": [0]}
    # pomelo: msg.args[hashFieldIndex] || JSON.stringify(msg)
    assert ch.key(msg) == ('{"namespace":"user","serverType":"area","service":"player",'
                           '"method":"where","args":[0]}')
    assert ch.key(dict(msg, args=[17])) == "17" and ch.key(dict(msg, args=[1.0])) == "1"
    assert ch.key(dict(msg, args=[""])).endswith('"method":"where","args":[""]}')
    assert ch.key(dict(msg, args=[])).endswith('"method":"where","args":[]}')
    assert ch.route(None, dict(msg, args=["k7"]), None) == "area-2"


async def test_random_router_spreads_evenly(aspawn):
    servers = await astart_areas(aspawn, 3)
    cli = area_client(CORE, servers, router_type="rd")
    await cli.start()
    echo = cli.proxies.user.area.work.echo
    await asyncio.gather(*(echo(None, i) for i in range(3000)))
    counted = await server_calls(servers)
    assert sum(counted.values()) == 3000
    for sid, n in counted.items():      # binomial sd ~26: 150 is ~6 sd
        assert abs(n - 1000) < 150, counted
    await cli.stop()


async def test_custom_routers_sync_async_and_objects(aspawn):
    servers = await astart_areas(aspawn, 2)
    seen = []

    def plain(param, msg, ctx):
        seen.append(("plain", param, msg["method"], msg["args"], ctx))
        return "area-1"

    async def coro(param, msg, ctx):
        await asyncio.sleep(0)
        seen.append(("coro", param))
        return ctx["pick"]

    class SyncObject:
        def route(self, param, msg, ctx):
            return f"area-{param % 2}"

    class AsyncObject:
        async def route(self, param, msg, ctx):
            return "area-0"

    ctx = {"pick": "area-0"}
    for router, expected in ((plain, ["area-1"] * 4), (coro, ["area-0"] * 4),
                             (SyncObject(), ["area-0", "area-1"] * 2),
                             (AsyncObject(), ["area-0"] * 4)):
        cli = area_client(CORE, servers, router=router, route_context=ctx)
        await cli.start()
        answers = [await cli.proxies.user.area.work.echo(i, i) for i in range(4)]
        assert [a["server_id"] for a in answers] == expected, router
        await cli.stop()
    assert seen[0] == ("plain", 0, "echo", [0], ctx)
    assert seen[4] == ("coro", 0)

    # as in pomelo, router_type wins over router
    cli = area_client(CORE, servers, router=plain, router_type="rr")
    await cli.start()
    answers = [await cli.proxies.user.area.work.echo(None, i) for i in range(4)]
    assert [a["server_id"] for a in answers] == ["area-0", "area-1"] * 2
    await cli.stop()


async def test_router_errors_reach_the_caller(aspawn):
    servers = await astart_areas(aspawn, 1)

    async def ghost(param, msg, ctx):
        return "area-9"

    def broken(param, msg, ctx):
        raise KeyError("no route table")

    cases = [(ghost, NoServerError, "unknown server id 'area-9'"),
             (lambda p, m, c: None, NoServerError, "the router gave no server for area"),
             (broken, KeyError, "no route table")]
    for router, error, text in cases:
        cli = area_client(CORE, servers, router=router)
        await cli.start()
        with pytest.raises(error, match=text):
            await asyncio.wait_for(cli.proxies.user.area.work.echo(None, 1), 5)
        await cli.stop()

    # a type with no servers, for the default router and every router_type
    for router_type in (None, "rr", "wrr", "la", "ch", "rd"):
        cli = client.create(core=CORE, router_type=router_type)
        cli.add_proxies([{"namespace": "user", "server_type": "area",
                          "path": servers[0].remotes["user"]}])
        await cli.start()
        with pytest.raises(NoServerError, match="no server of type 'area'"):
            await cli.proxies.user.area.work.echo(None, 1)
        cli.add_servers([servers[0].info])
        assert (await cli.proxies.user.area.work.echo(None, 1))["server_id"] == "area-0"
        cli.remove_servers(["area-0"])
        with pytest.raises(NoServerError, match="no server of type 'area'"):
            await cli.proxies.user.area.work.echo(None, 1)
        await cli.stop()
