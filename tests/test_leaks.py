"""No leaks in the client's request table: 100,000 calls to a real server process,
some answered, some timing out, some abandoned by their caller. Once the last
deadline has passed, nothing is left: no entry, no deadline slot, no timer.

The minutes-long soak under load (memory over time) is ``bench/soak.py``.
"""

import asyncio
import gc
import os
import time
import weakref

from conftest import REMOTE
from pomelo_rpc import RpcTimeoutError, client
from pomelo_rpc.processes import rss_kb

TEST_DIR = os.path.join(REMOTE, "test")
CALLS = 100_000
BATCH = 1000


async def started(method, *args):
    """Make the call ``method(None, *args)`` when this coroutine runs (a proxy call
    starts as it is made), and wait for it."""
    return await method(None, *args)


async def test_100k_calls_with_timeouts_leave_no_entry_slot_or_timer(aspawn, core):
    srv = await aspawn("test-1", core=core)
    cli = client.create(core=core, timeout=2)
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_DIR}])
    cli.add_servers([srv.info])
    await cli.start()
    svc = cli.proxies.user.test.service
    assert await svc.echo(None, "warm") == "warm"
    mailbox = cli._station.mailboxes["test-1"]
    protocol = mailbox.protocol
    table = protocol.table

    def call(i):
        kind = i % 50
        if kind == 0:       # answered after 30 ms, but the call's timeout is 10 ms
            return "timeout", svc.slow_echo(None, i, 0.03, timeout=0.01)
        if kind == 1:       # the caller gives up (cancels) before the answer: the call
            # starts inside wait_for, so that the 300 ms answer cannot beat the 5 ms
            # (even when a busy machine stalls this loop for tens of ms: a timer and an
            # answer due in the same loop turn let wait_for return the answer)
            return "abandoned", asyncio.wait_for(started(svc.slow_echo, i, 0.3), 0.005)
        if kind == 2:       # answered long after its 50 ms timeout
            return "timeout", svc.slow_echo(None, i, 1.0, timeout=0.05)
        return "ok", svc.echo(None, i)

    counts = {"ok": 0, "timeout": 0, "abandoned": 0}
    rss_half = None
    t0 = time.monotonic()
    for start in range(0, CALLS, BATCH):
        kinds, calls = zip(*(call(i) for i in range(start, start + BATCH)))
        results = await asyncio.gather(*calls, return_exceptions=True)
        for i, (kind, result) in enumerate(zip(kinds, results), start):
            if kind == "ok":
                assert result == i, result
            elif kind == "timeout":
                assert isinstance(result, RpcTimeoutError), result
            else:
                assert isinstance(result, asyncio.TimeoutError), result
            counts[kind] += 1
        if start + BATCH == CALLS // 2:
            gc.collect()
            rss_half = rss_kb(os.getpid())
    elapsed = time.monotonic() - t0
    assert counts == {"ok": 94_000, "timeout": 4_000, "abandoned": 2_000}

    # the abandoned calls' answers arrive within 300 ms; every deadline is at most 2 s
    deadline = time.monotonic() + 5
    while (len(table) or table.slot_count or protocol.deadlines.handle is not None) \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(table) == 0
    assert cli.in_flight("test-1") == 0
    assert table.slot_count == 0
    assert protocol.deadlines.handle is None and protocol.deadlines.at is None
    assert table.next_deadline() is None
    assert mailbox.waiting == 0 and protocol.writer.queued == 0
    gc.collect()
    # the client's own memory did not grow in the second half of the run
    assert rss_kb(os.getpid()) - rss_half < 5000
    # the connection is the same one and still works
    assert cli._station.mailboxes["test-1"] is mailbox
    assert await svc.echo(None, "after") == "after"
    await cli.stop()
    assert elapsed < 30, elapsed


class Echo:
    def echo(self, value):
        return value


def test_a_closed_loop_and_what_was_made_for_it_are_freed(core):
    """A client and a server that ran on an event loop (``asyncio.run`` once per job, a
    test's own loop) keep nothing of it once they stopped and it closed: not the loop,
    not its turn of writes, not its shared deadline slots (``per_loop``'s registries hold
    them weakly), however many loops run one after another."""
    import uvloop
    from pomelo_rpc import server

    async def job():
        gw = server.create(services={"user": {"echo": Echo()}}, core=core,
                           context={"server_id": "echo-1"})
        await gw.start()
        cli = client.create(core=core, timeout=5)
        cli.add_servers([{"id": "echo-1", "server_type": "echo", "port": gw.port}])
        await cli.start()
        try:
            assert await cli.rpc_invoke("echo-1", {
                "namespace": "user", "server_type": "echo", "service": "echo",
                "method": "echo", "args": [7]}) == 7
        finally:
            await cli.stop()
            await gw.stop()
        return weakref.ref(asyncio.get_running_loop())

    loops = [uvloop.run(job()) for _ in range(3)]
    gc.collect()
    assert [ref() for ref in loops] == [None, None, None]
