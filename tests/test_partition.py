"""Real network partitions (docs/liveness.md): the test cluster runs in a private
network namespace (its own loopback) and nftables drops one server's packets, both
ways or one way, with no RST: what a pulled cable, a dead host or a switch failure
does. Client options at their defaults unless a test says otherwise.

What a user must see: the dead connection is found within about 2 s under load, its
calls fail at once (failover resends them), routing goes around the server while it
is cut off, it is back in rotation within 5 s of the heal, and no call waits past its
deadline.
"""

import asyncio
import os
import time

import pytest

from cluster import area_client, astart_areas
from conftest import until, wait_available
from pomelo_rpc import ConnectionLostError, RpcTimeoutError, client
from pomelo_rpc.partition import Namespace, available

#: a dead connection under load is found this long after the cut, at most (the default
#: liveness_timeout is 1.5 s; the rest is the watchdog's wake-up and a busy machine)
FOUND_WITHIN = 3.0


@pytest.fixture
def netns():
    """A private network namespace for the test's cluster and its event loop."""
    why = available()
    if why is not None:
        if os.environ.get("POMELO_RPC_REQUIRE_NETNS"):
            pytest.fail(f"the partition tests need network namespaces: {why}")
        pytest.skip(why)
    with Namespace() as ns:
        yield ns


class Load:
    """``width`` workers calling ``echo`` through the router without pause; each call
    recorded as (start, end, server id or the exception)."""

    def __init__(self, cli, width):
        self.cli = cli
        self.calls = []
        self._stop = False
        self._tasks = [asyncio.ensure_future(self._worker(i)) for i in range(width)]

    async def _worker(self, w):
        echo = self.cli.proxies.user.area.work.echo
        i = 0
        while not self._stop:
            t0 = time.monotonic()
            try:
                outcome = (await echo(None, (w, i)))["server_id"]
            except Exception as exc:  # noqa: BLE001 - recorded, checked by the test
                outcome = exc
                await asyncio.sleep(0.01)
            self.calls.append((t0, time.monotonic(), outcome))
            i += 1

    async def stop(self):
        self._stop = True
        await asyncio.wait_for(asyncio.gather(*self._tasks), 15)

    def between(self, start, end):
        """Calls that ended in [start, end)."""
        return [c for c in self.calls if start <= c[1] < end]


def test_partition_under_load_routes_around_and_heals(netns, aspawn, core):
    """4 servers, 40 calls in flight, rr + failover: one server is cut off both ways.
    Its connection is declared dead within ~2 s, its calls go to the others (none
    fails: failover), the others keep serving throughout, no call waits past a few
    seconds (its timeout is 10 s), and after the heal it is back in rotation."""

    async def scenario(ns):
        servers = await astart_areas(aspawn, 4, core)
        cli = area_client(core, servers, router_type="rr", fail_mode="failover")
        await cli.start()
        load = Load(cli, 40)
        await asyncio.sleep(1.0)
        cut_at = time.monotonic()
        await ns.acut(servers[3].port)
        found = await until(lambda: not cli.server_state("area-3")["available"],
                            FOUND_WITHIN, "area-3 never declared down")
        state = cli.server_state("area-3")
        assert "declared dead" in state["reason"], state
        assert state["dead_connections"] == 1
        await asyncio.sleep(1.5)                 # routed around it meanwhile
        healed_at = time.monotonic()
        await ns.aheal()
        back = await wait_available(cli, "area-3")
        await asyncio.sleep(0.5)
        await load.stop()
        await cli.stop()
        return load, cut_at, found, healed_at, back

    load, cut_at, found, healed_at, back = netns.run(scenario)
    assert found < FOUND_WITHIN
    assert back < 5.5                             # probe_backoff_max + a connect and a ping
    calls = load.calls
    failed = [c for c in calls if isinstance(c[2], Exception)]
    assert not failed, failed[:3]                 # failover resent the dead connection's calls
    # nothing waited for its 10 s timeout: the longest call is the one in flight on the
    # dead connection, about liveness_timeout
    assert max(c[1] - c[0] for c in calls) < FOUND_WITHIN
    after_found = load.between(cut_at + found + 0.2, healed_at)
    assert len(after_found) > 100 and {c[2] for c in after_found} == {
        "area-0", "area-1", "area-2"}
    assert "area-3" in {c[2] for c in load.between(healed_at + back + 0.1, float("inf"))}


@pytest.mark.parametrize("direction", ["to", "from"])
def test_one_way_partition_is_found(netns, aspawn, core, direction):
    """Only the requests are dropped ("to" the server), or only its answers ("from"):
    either way the client hears nothing back, declares the connection dead within ~2 s
    and fails its calls at once, far before their timeout."""

    async def scenario(ns):
        servers = await astart_areas(aspawn, 2, core)
        cli = area_client(core, servers, router_type="rr", timeout=30)
        await cli.start()
        hold = cli.proxies.user.area.work.hold
        assert (await hold.to_server("area-1", 0))["server_id"] == "area-1"
        await ns.acut(servers[1].port, direction)
        cut_at = time.monotonic()
        calls = [asyncio.ensure_future(hold.to_server("area-1", 0.1, i)) for i in range(10)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        ended = time.monotonic() - cut_at
        # the other server keeps serving, and rr leaves the dead one out
        answers = await asyncio.gather(*(hold(None, 0) for _ in range(20)))
        await cli.stop()
        return results, ended, answers

    results, ended, answers = netns.run(scenario)
    for result in results:
        assert isinstance(result, ConnectionLostError), result
        assert not isinstance(result, RpcTimeoutError)
        assert "declared dead" in str(result)
    assert ended < FOUND_WITHIN
    assert {a["server_id"] for a in answers} == {"area-0"}


def test_server_cut_off_at_start(netns, aspawn, core):
    """A server unreachable before the first call (its SYNs dropped): only the calls
    that first went to it wait, at most liveness_timeout (then failover sends them on);
    every other call goes to the reachable servers at once."""

    async def scenario(ns):
        servers = await astart_areas(aspawn, 3, core)
        await ns.acut(servers[2].port)
        cli = area_client(core, servers, router_type="rr", fail_mode="failover")
        await cli.start()
        load = Load(cli, 30)
        await until(lambda: not cli.server_state("area-2")["available"], FOUND_WITHIN,
                    "area-2 never declared down")
        await asyncio.sleep(1.0)
        await load.stop()
        state = cli.server_state("area-2")
        await cli.stop()
        return load, state

    load, state = netns.run(scenario)
    assert "not open after" in state["reason"], state
    calls = load.calls
    assert not [c for c in calls if isinstance(c[2], Exception)]
    slow = [c for c in calls if c[1] - c[0] > 0.5]
    # the calls routed to area-2 before the slow connect was noticed (liveness_interval
    # 0.5 s): at most the workers, each once
    assert len(slow) <= 30, len(slow)
    assert max(c[1] - c[0] for c in calls) < FOUND_WITHIN
    assert len(calls) > 200 and {c[2] for c in calls} == {"area-0", "area-1"}


def test_server_closes_the_connection_of_a_client_cut_off(netns, aspawn, core):
    """A client that vanished without a FIN (its packets dropped) leaves a half-open
    connection on the server: the server closes it after idle_timeout."""

    async def scenario(ns):
        from pomelo_rpc import server as server_mod
        from conftest import REMOTE
        gw = server_mod.create(paths=[{"namespace": "user",
                                       "path": os.path.join(REMOTE, "area")}],
                               core=core, idle_timeout=0.6)
        await gw.start()
        # the client keeps its connection open and silent: no keepalive, no liveness
        cli = client.create(core=core, keepalive=0, liveness_timeout=0)
        cli.add_proxies([{"namespace": "user", "server_type": "area",
                          "path": os.path.join(REMOTE, "area")}])
        cli.add_servers([{"id": "a", "server_type": "area", "port": gw.port}])
        await cli.start()
        await cli.proxies.user.area.work.echo.to_server("a", 1)
        assert len(gw.acceptor.connections) == 1
        await ns.acut(gw.port)               # the client is gone, as far as the server knows
        closed = await until(lambda: not gw.acceptor.connections, 3.0,
                             "the half-open connection was never closed")
        idle_closed = gw.acceptor.idle_closed
        await ns.aheal()
        await cli.stop()
        await gw.stop()
        return closed, idle_closed

    closed, idle_closed = netns.run(scenario)
    assert 0.4 < closed < 1.5, closed        # idle_timeout 0.6 s, swept every 0.15 s
    assert idle_closed == 1
