"""The protocol classes of the core, both sides, over real loopback sockets, in process.

Server and client run on one loop (so the sanitized build of ``ctest`` runs them too,
see CMakeLists.txt): many calls in flight of every kind of method, answers split and
coalesced across reads, timeouts with late answers, and the connection closing with
calls in flight. Both cores.
"""

import asyncio
import os
import sys
import weakref

import pytest
from conftest import REMOTE, until

from pomelo_rpc import client, server
from pomelo_rpc.errors import ConnectionLostError, RemoteError, RpcTimeoutError

TEST_REMOTE = os.path.join(REMOTE, "test")


async def _pair(core, **client_opts):
    gw = server.create(paths=[{"namespace": "user", "path": TEST_REMOTE}], core=core)
    await gw.start()
    cli = client.create(core=core, **client_opts)
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_REMOTE}])
    cli.add_servers([{"id": "t", "server_type": "test", "port": gw.port}])
    await cli.start()
    return gw, cli, cli.proxies.user.test.service


async def test_every_kind_of_call_many_in_flight(core):
    gw, cli, svc = await _pair(core)
    try:
        calls, expected = [], []
        for i in range(600):
            kind = i % 6
            if kind == 0:
                calls.append(svc.echo(None, i))
                expected.append(i)
            elif kind == 1:         # async def, answered without suspending
                calls.append(svc.slow_echo(None, i))
                expected.append(i)
            elif kind == 2:         # async def that suspends
                calls.append(svc.slow_echo(None, i, 0.001))
                expected.append(i)
            elif kind == 3:
                calls.append(svc.fail(None, f"no {i}"))
                expected.append(RemoteError)
            elif kind == 4:         # raises after suspending
                calls.append(svc.async_fail(None, f"no {i}"))
                expected.append(RemoteError)
            else:                   # a method the server does not have: sent by name
                calls.append(cli.rpc_invoke("t", {"namespace": "user", "server_type": "test",
                                                  "service": "service", "method": "nope",
                                                  "args": [i]}))
                expected.append(RemoteError)
        results = await asyncio.gather(*calls, return_exceptions=True)
        for i, (got, want) in enumerate(zip(results, expected)):
            if want is RemoteError:
                assert isinstance(got, RemoteError), (i, got)
            else:
                assert got == want, (i, got)
        assert cli.in_flight("t") == 0
    finally:
        await cli.stop()
        await gw.stop()


async def test_large_answers_split_across_reads_and_small_ones_coalesced(core):
    gw, cli, svc = await _pair(core)
    try:
        big = "x" * 300_000      # several reads each way
        small = await asyncio.gather(*(svc.echo(None, i) for i in range(300)))
        large = await asyncio.gather(*(svc.echo(None, big + str(i)) for i in range(8)))
        assert small == list(range(300))
        assert large == [big + str(i) for i in range(8)]
    finally:
        await cli.stop()
        await gw.stop()


async def test_late_answers_after_timeouts_are_dropped_and_leave_nothing(core):
    gw, cli, svc = await _pair(core)
    try:
        late = [svc.slow_echo(None, i, 0.2, timeout=0.02) for i in range(50)]
        prompt = [svc.echo(None, i, timeout=2.0) for i in range(50)]
        results = await asyncio.gather(*late, *prompt, return_exceptions=True)
        assert all(isinstance(r, RpcTimeoutError) for r in results[:50]), results[:50]
        assert results[50:] == list(range(50))
        # a call the server answers 0.2 s after it was sent, sent after the late ones:
        # its answer follows theirs on the connection, so they have arrived and found no call
        assert await svc.slow_echo(None, "after", 0.2, timeout=5.0) == "after"
        protocol = cli._station.mailboxes["t"].protocol
        # every deadline slot leaves the table (answered ones at once or at their time)
        await until(lambda: len(protocol.table) == 0 and protocol.table.slot_count == 0
                    and protocol.deadlines.handle is None, 10.0,
                    f"{len(protocol.table)} calls, {protocol.table.slot_count} slots left")
        assert await svc.echo(None, "still") == "still"
    finally:
        await cli.stop()
        await gw.stop()


async def test_a_call_in_flight_holds_neither_its_message_nor_its_arguments(core):
    # (its table entry holds its route: the message and its arguments are freed once
    # the request is written, not kept by the cyclic GC's generations until the answer)
    gw, cli, svc = await _pair(core)
    try:
        assert await svc.echo(None, "open") == "open"
        arg = ["held by the caller alone"]
        before = sys.getrefcount(arg)
        calls = [svc.slow_echo(None, arg, 0.3, timeout=0.05),
                 svc.slow_echo(None, arg, 0.3, timeout=5.0)]
        assert cli.in_flight("t") == 2
        assert sys.getrefcount(arg) == before
        late, answered = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(late, RpcTimeoutError)
        assert "user.service.slow_echo to t got no response in time" in str(late)
        assert answered == arg
    finally:
        await cli.stop()
        await gw.stop()


async def test_an_answered_call_lets_go_of_its_future_while_its_deadline_slot_lives_on(core):
    gw, cli, svc = await _pair(core)
    try:
        assert await svc.echo(None, "open") == "open"
        # one turn, one timeout: one deadline slot, which the slow call keeps
        slow = svc.slow_echo(None, "slow", 0.5, timeout=5.0)
        fast = svc.echo(None, "fast", timeout=5.0)
        answered = weakref.ref(fast)
        assert await fast == "fast"
        del fast
        await asyncio.sleep(0)      # (the loop's handle that woke this task holds it)
        assert answered() is None
        assert cli.in_flight("t") == 1
        assert await slow == "slow"
    finally:
        await cli.stop()
        await gw.stop()


@pytest.mark.parametrize("grace", [0.0, 1.0])
async def test_server_stopping_with_calls_in_flight(core, grace):
    gw, cli, svc = await _pair(core)
    try:
        assert await svc.echo(None, "up") == "up"
        calls = [asyncio.ensure_future(svc.slow_echo(None, i, 0.3)) for i in range(20)]
        await asyncio.sleep(0.05)
        await gw.stop(grace=grace)
        results = await asyncio.gather(*calls, return_exceptions=True)
        if grace:
            assert results == list(range(20))    # answered within the grace
        else:
            for r in results:                    # cancelled and answered, or cut
                assert isinstance(r, (RemoteError, ConnectionLostError)), r
        assert cli.in_flight("t") == 0
    finally:
        await cli.stop()


async def test_connections_of_one_loop_share_the_deadline_slots_and_still_time_out(core):
    """Calls over several servers: every connection's deadlines are in the loop's one
    set of slots with one timer; each call times out at its own deadline, answered ones
    do not, a connection closed with calls in flight fails its own and leaves the
    others' deadlines working, and nothing is left afterwards."""
    gws = [server.create(paths=[{"namespace": "user", "path": TEST_REMOTE}], core=core)
           for _ in range(3)]
    for gw in gws:
        await gw.start()
    cli = client.create(core=core, router_type="rr")
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_REMOTE}])
    cli.add_servers([{"id": f"t{i}", "server_type": "test", "port": gw.port}
                     for i, gw in enumerate(gws)])
    await cli.start()
    svc = cli.proxies.user.test.service
    try:
        for i in range(3):
            assert await svc.echo.to_server(f"t{i}", i) == i
        protocols = [cli._station.mailboxes[f"t{i}"].protocol for i in range(3)]
        assert protocols[0].deadlines is protocols[1].deadlines is protocols[2].deadlines
        assert protocols[0].table.slots is protocols[2].table.slots
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        late = [svc.slow_echo(None, i, 0.5, timeout=0.05) for i in range(30)]
        prompt = [svc.echo(None, i, timeout=5.0) for i in range(30)]
        results = await asyncio.gather(*late, *prompt, return_exceptions=True)
        assert all(isinstance(r, RpcTimeoutError) for r in results[:30]), results[:30]
        assert results[30:] == list(range(30))
        assert loop.time() - t0 < 0.4              # at their deadline, not the answer's
        # a connection lost with calls in flight: its calls fail, the others' still
        # time out at their deadlines
        lost = [svc.slow_echo.to_server("t0", i, 5.0, timeout=10.0) for i in range(3)]
        others = [svc.slow_echo.to_server("t1", i, 0.5, timeout=0.05) for i in range(3)]
        await asyncio.sleep(0.01)
        cli._station.mailboxes["t0"].abort("test")
        results = await asyncio.gather(*lost, *others, return_exceptions=True)
        assert all(isinstance(r, ConnectionLostError) for r in results[:3]), results[:3]
        assert all(isinstance(r, RpcTimeoutError) for r in results[3:]), results[3:]
        shared = protocols[1]
        await until(lambda: all(len(p.table) == 0 for p in protocols)
                    and shared.table.slot_count == 0 and shared.deadlines.handle is None,
                    10.0, f"{shared.table.slot_count} slots left")
        assert await svc.echo.to_server("t2", "still") == "still"
    finally:
        await cli.stop()
        for gw in gws:
            await gw.stop()
