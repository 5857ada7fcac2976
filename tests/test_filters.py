"""Filters and the error handler, with real server processes behind them.

Filters run in the client's Python layer; the tests use one client core.
"""

import asyncio

import pytest

from cluster import area_client, area_msg, astart_areas, server_calls
from pomelo_rpc import ConnectionLostError, RemoteError, RpcError

CORE = "cython"


async def test_before_filters_change_target_and_message(aspawn):
    servers = await astart_areas(aspawn, 2)
    cli = area_client(CORE, servers, router=lambda param, msg, ctx: "area-0")
    seen = []

    def to_area_1(server_id, msg):                  # sync: a new target
        seen.append(("sync", server_id, msg["method"], list(msg["args"])))
        return "area-1"

    async def shout(server_id, msg):                # async: a new message
        await asyncio.sleep(0)
        seen.append(("async", server_id, list(msg["args"])))
        return dict(msg, args=[str(msg["args"][0]).upper()])

    cli.before(to_area_1)
    cli.before(shout)
    await cli.start()
    echo = cli.proxies.user.area.work.echo
    assert await echo(None, "hi") == {"server_id": "area-1", "value": "HI"}
    assert seen == [("sync", "area-0", "echo", ["hi"]), ("async", "area-1", ["hi"])]
    # rpc_invoke and to_server go through the filters too
    assert (await cli.rpc_invoke("area-0", area_msg("echo", "x")))["value"] == "X"
    assert await echo.to_server("area-0", "y") == {"server_id": "area-1", "value": "Y"}
    assert await server_calls(servers) == {"area-0": 0, "area-1": 3}
    await cli.stop()

    # a pair changes both; None in the pair keeps that part; a filter may pick another method
    cli = area_client(CORE, servers, router=lambda param, msg, ctx: "area-0")
    cli.before(lambda sid, msg: (None, dict(msg, args=[msg["args"][0] * 2])))
    cli.before(lambda sid, msg: ("area-1", dict(msg, method="hold", args=[0, msg["args"][0]])))
    await cli.start()
    answer = await cli.proxies.user.area.work.echo(None, 21)
    assert (answer["server_id"], answer["tag"]) == ("area-1", 42)
    await cli.stop()


async def test_after_filters_see_results_and_errors_and_may_replace_results(aspawn):
    servers = await astart_areas(aspawn, 1)
    cli = area_client(CORE, servers)
    seen = []

    def record(server_id, msg, result, error):
        seen.append((server_id, msg["method"], result, type(error).__name__ if error else None))

    async def wrap(server_id, msg, result, error):
        await asyncio.sleep(0)
        if error is None and msg["method"] == "echo":
            return {"wrapped": result["value"]}
        return None

    cli.after(record)
    cli.after(wrap)
    await cli.start()
    work = cli.proxies.user.area.work
    assert await work.echo(None, 5) == {"wrapped": 5}
    assert (await work.hold(None, 0, "t"))["tag"] == "t"      # None: the result stands
    with pytest.raises(RemoteError, match="bad input"):
        await work.fail(None, "bad input")
    assert seen[0] == ("area-0", "echo", {"server_id": "area-0", "value": 5}, None)
    assert seen[1][:2] == ("area-0", "hold") and seen[1][3] is None
    assert seen[2] == ("area-0", "fail", None, "RemoteError")
    await cli.stop()


async def test_filter_object_adds_both_kinds(aspawn):
    servers = await astart_areas(aspawn, 2)
    cli = area_client(CORE, servers, router_type="rr")

    class Sticky:
        """Sends every call to area-1 and stamps the answer."""

        def __init__(self):
            self.log = []

        def before(self, server_id, msg):
            self.log.append(("before", server_id))
            return "area-1"

        async def after(self, server_id, msg, result, error):
            self.log.append(("after", server_id))
            return dict(result, stamped=True)

    sticky = Sticky()
    cli.filter(sticky)
    await cli.start()
    answers = [await cli.proxies.user.area.work.echo(None, i) for i in range(4)]
    assert all(a == {"server_id": "area-1", "value": i, "stamped": True}
               for i, a in enumerate(answers))
    assert sticky.log[:4] == [("before", "area-0"), ("after", "area-1"),
                              ("before", "area-1"), ("after", "area-1")]
    with pytest.raises(TypeError, match="before and/or .after"):
        cli.filter(lambda sid, msg: None)
    await cli.stop()


async def test_raising_filters_reach_the_caller_and_never_hang(aspawn):
    servers = await astart_areas(aspawn, 1)

    class Refused(Exception):
        pass

    def sync_refuse(sid, msg):
        raise Refused(f"no calls to {sid}")

    async def async_refuse(sid, msg):
        await asyncio.sleep(0)
        raise Refused("not now")

    def after_refuse(sid, msg, result, error):
        raise RpcError(f"after saw {result['value']}")

    for kind, f, error, text in (("before", sync_refuse, Refused, "no calls to area-0"),
                                 ("before", async_refuse, Refused, "not now"),
                                 ("after", after_refuse, RpcError, "after saw 7")):
        cli = area_client(CORE, servers)
        getattr(cli, kind)(f)
        handled = []
        cli.set_error_handler(lambda err, sid, msg: handled.append((type(err), sid)))
        await cli.start()
        for _ in range(2):
            with pytest.raises(error, match=text):
                await asyncio.wait_for(cli.proxies.user.area.work.echo(None, 7), 5)
        assert handled == [(error, "area-0")] * 2
        await cli.stop()

    # a refused before filter means no call was made; the after filter ran after the call
    cli = area_client(CORE, servers)
    await cli.start()
    assert await server_calls(servers) == {"area-0": 2}
    await cli.stop()


async def test_error_handler_gets_error_server_and_message(aspawn):
    servers = await astart_areas(aspawn, 2)
    cli = area_client(CORE, servers, router_type="rr")
    handled = []

    async def handler(error, server_id, msg):
        await asyncio.sleep(0)
        handled.append((type(error), server_id, msg["method"], msg["args"]))

    cli.set_error_handler(handler)
    await cli.start()
    work = cli.proxies.user.area.work
    assert (await work.echo(None, 1))["server_id"] == "area-0"
    with pytest.raises(RemoteError, match="nope"):
        await work.fail(None, "nope")
    assert handled == [(RemoteError, "area-1", "fail", ["nope"])]

    await servers[0].akill()
    with pytest.raises(ConnectionLostError):
        await work.echo(None, 2)
    assert handled[1] == (ConnectionLostError, "area-0", "echo", [2])

    # a handler that raises is logged; the caller still gets the call's own error
    def broken(error, server_id, msg):
        raise KeyError("handler bug")

    cli.set_error_handler(broken)
    with pytest.raises(RemoteError, match="again"):
        await work.fail.to_server("area-1", "again")
    assert (await work.echo.to_server("area-1", 3))["value"] == 3
    await cli.stop()
