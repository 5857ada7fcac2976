"""The server's protocol class (``core/server_protocol.py``), both cores, in process over
real loopback sockets: ``async def`` methods run eagerly (one that never suspends is
answered without a Task, one that suspends goes on in a Task in the same context; a
``def`` answering with a coroutine runs it likewise),
errors before and after suspending, CancelledError, the deadline cut and the stop
grace reaching a suspended call, no context leaking from one call into the next, and
the mqtt transport on the same answer path."""

import asyncio
import gc
import os
import weakref

import pytest
from conftest import REMOTE

from pomelo_rpc import client, server
from pomelo_rpc.errors import RemoteError, RpcTimeoutError
from pomelo_rpc.overload import DEADLINE_PASSED

EAGER = os.path.join(REMOTE, "eager")


async def _pair(core, transport="native", **client_opts):
    gw = server.create(paths=[{"namespace": "user", "path": EAGER}], core=core,
                       transport=transport)
    await gw.start()
    cli = client.create(core=core, transport=transport, **client_opts)
    cli.add_proxies([{"namespace": "user", "server_type": "eager", "path": EAGER}])
    cli.add_servers([{"id": "e", "server_type": "eager", "port": gw.port}])
    await cli.start()
    return gw, cli, cli.proxies.user.eager.eager


@pytest.fixture(params=["native", "mqtt"])
def transport(request):
    """The server transport: both share the protocol class's answer path."""
    return request.param


async def test_async_method_that_never_suspends_runs_without_a_task(core, transport):
    gw, cli, svc = await _pair(core, transport)
    try:
        assert await svc.no_suspend(None, 1) == {"in_task": False, "x": 1}
        many = await asyncio.gather(*(svc.no_suspend(None, i) for i in range(200)))
        assert many == [{"in_task": False, "x": i} for i in range(200)]
        assert gw.acceptor.overload.held == 0
        [conn] = gw.acceptor.connections
        assert conn.running == 0
    finally:
        await cli.stop()
        await gw.stop()


async def test_async_method_that_suspends_goes_on_in_a_task(core, transport):
    gw, cli, svc = await _pair(core, transport)
    try:
        # its first step ran eagerly (no Task yet), the rest in a Task
        assert await svc.suspend(None, "a", 0.01) == [False, True, "a"]
        assert await svc.suspend(None, "b") == [False, True, "b"]     # sleep(0)
        assert await svc.yield_none(None, 3) == 3                     # bare yields
        calls = [asyncio.ensure_future(svc.suspend(None, i, 0.5)) for i in range(50)]
        [conn] = gw.acceptor.connections
        waited = 0.0
        while conn.running < 50 and waited < 0.4:     # all read and started (a busy
            await asyncio.sleep(0.005)                # machine may take a few turns)
            waited += 0.005
        assert conn.running == 50 and gw.acceptor.overload.held == 50
        assert await asyncio.gather(*calls) == [[False, True, i] for i in range(50)]
        assert conn.running == 0 and gw.acceptor.overload.held == 0
    finally:
        await cli.stop()
        await gw.stop()


async def test_def_method_answering_with_a_coroutine_runs_it_as_an_async_one(core, transport):
    gw, cli, _svc = await _pair(core, transport)
    try:
        svc = cli.proxies.user.eager.eager
        assert await svc.hands_on(None, 1) == {"in_task": False, "x": 1}
        assert await svc.hands_on(None, "a", 0.01) == [False, True, "a"]
        assert gw.acceptor.overload.held == 0
    finally:
        await cli.stop()
        await gw.stop()


async def test_async_errors_before_and_after_suspending(core, transport):
    gw, cli, svc = await _pair(core, transport)
    try:
        with pytest.raises(RemoteError) as info:
            await svc.raise_now(None, "at once")
        assert info.value.remote_type == "ValueError" and "at once" in info.value.message
        with pytest.raises(RemoteError) as info:
            await svc.raise_later(None, "later")
        assert info.value.remote_type == "KeyError" and "later" in info.value.message
        # CancelledError raised by the handler itself: answered as a cancelled call
        with pytest.raises(RemoteError) as info:
            await svc.cancel_now(None)
        assert info.value.remote_type == "CancelledError"
        assert "the call was cancelled" in info.value.message
        assert await svc.no_suspend(None, "after") == {"in_task": False, "x": "after"}
    finally:
        await cli.stop()
        await gw.stop()


async def test_handler_context_changes_do_not_leak_into_later_calls(core):
    gw, cli, svc = await _pair(core)
    try:
        assert await svc.set_var(None, "eager") is None
        assert await svc.set_var(None, "suspended", True) is None
        assert await svc.get_var_async(None) is None
        assert await svc.get_var(None) is None
        # several in one read: each call its own copy of the connection's context
        seen = await asyncio.gather(*(svc.set_var(None, i, i % 2 == 1) for i in range(20)))
        assert seen == [None] * 20
        assert await svc.get_var(None) is None
    finally:
        await cli.stop()
        await gw.stop()


async def test_deadline_is_read_eagerly_and_in_the_task_and_cut_at_its_end(core):
    gw, cli, svc = await _pair(core)
    try:
        first, later = await svc.remaining(None, 0.02, timeout=1.0)
        assert 0.5 < first <= 1.0 and 0.4 < later < first
        with pytest.raises(RpcTimeoutError):
            await svc.sleepy(None, "cut", 2.0, timeout=0.2)
        await asyncio.sleep(0.2)
        assert ["cut", "cancelled", [DEADLINE_PASSED]] in await svc.events(None)
        assert gw.acceptor.overload.cancelled == 1
        assert gw.acceptor.overload.held == 0
    finally:
        await cli.stop()
        await gw.stop()


async def test_stop_grace_cancels_a_suspended_call_and_answers_it(core):
    gw, cli, svc = await _pair(core)
    try:
        call = asyncio.ensure_future(svc.sleepy(None, "stopped", 5.0))
        await asyncio.sleep(0.05)
        [conn] = gw.acceptor.connections
        assert conn.running == 1
        events = await svc.events(None)
        await gw.stop(grace=0.1)
        with pytest.raises(RemoteError) as info:
            await call
        assert info.value.remote_type == "CancelledError"
        assert "stop grace 0.1 s" in info.value.message
        assert conn.running == 0
        assert not [e for e in events if e[0] == "stopped"]
    finally:
        await cli.stop()


async def test_a_closed_connection_is_freed_without_the_cycle_collector(core):
    """The connection and its protocol refer to each other while it is open; once it
    closes they are freed by reference counting (no garbage left for a full pass)."""
    gw, cli, svc = await _pair(core)
    gc.disable()
    try:
        assert await svc.no_suspend(None, 1) == {"in_task": False, "x": 1}
        assert await svc.suspend(None, 2) == [False, True, 2]
        [conn] = gw.acceptor.connections
        conn_ref = weakref.ref(conn)
        del conn
        await cli.stop()
        for _ in range(200):
            if not gw.acceptor.connections:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert conn_ref() is None
    finally:
        gc.enable()
        await gw.stop()
