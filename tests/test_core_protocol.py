"""The protocol classes of the core, both sides, over real loopback sockets, in process.

Server and client run on one loop (so the sanitized build of ``ctest`` runs them too,
see CMakeLists.txt): many calls in flight of every kind of method, answers split and
coalesced across reads, timeouts with late answers, and the connection closing with
calls in flight. Both cores.
"""

import asyncio
import os

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
