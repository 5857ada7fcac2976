"""Backend servers (``handlers=``) inside a running Node pomelo 2.2.7 cluster.

The tests taking ``game`` run against pinus 1.7.4 clusters too (tests/test_pinus_backend.py
collects them with its own ``game``): they use only what both apps have.

One cluster for the module (``pomelo_rpc.pomelo_app``: tests/node/pomelo_app with a
master, two hybridconnectors over WebSocket and a Node server ``node-1``), started on
free loopback ports. Players are pomelo-client-websocket@1.0.13 clients in one Node
process per test. Each test starts its Python area server(s) (type ``area``, the
handlers and remote of tests/remote/backend/area), with each core; the players name
the area server their ``area.*`` requests go to (``connector.entryHandler.entry``
``{area}``), else the connectors route by uid (app.js ``areaRoute``).
"""

import asyncio
import json
import logging
import os
import subprocess
import sys
import time

import pytest

import pomelo_rpc
from conftest import ROOT
from pomelo_rpc import client, server
from pomelo_rpc.pomelo_app import PomeloApp, Players, node_missing
from pomelo_rpc.router import crc32_index

AREA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "remote", "backend", "area")
HANDLERS = os.path.join(AREA, "handler")
REMOTES = [{"namespace": "user", "path": os.path.join(AREA, "remote")}]
STRICT = any(os.environ.get(v, "") not in ("", "0")
             for v in ("POMELO_RPC_REQUIRE_NODE", "POMELO_RPC_REQUIRE_CYTHON"))
#: the connectors' rpc timeout (pomelo's proxyConfig.timeout; 30 s by default): when
#: a backend is killed, the requests it held fail then
RPC_TIMEOUT = 3.0
ENTRY = "connector.entryHandler.entry"
SESSION = "connector.entryHandler.session"


@pytest.fixture(scope="module")
def game(tmp_path_factory):
    """The pomelo app: master, connector-1, connector-2, node-1; up."""
    missing = node_missing()
    if missing is not None:
        (pytest.fail if STRICT else pytest.skip)(f"the backend tests need Node: {missing}")
    app = PomeloApp(connectors=["connector-1", "connector-2"], node=["node-1"],
                    rpc_timeout=RPC_TIMEOUT, base=str(tmp_path_factory.mktemp("pomelo_game")))
    pomelo_rpc.run(app.start())
    yield app
    app.stop()


def py_area(game, sid, core, **opts):
    """A Python area server joining ``game`` (not started), on its rpc transport (a
    ``PomeloApp``'s or a ``PinusApp``'s)."""
    return server.create(transport=game.transport, core=core, handlers=HANDLERS, paths=REMOTES,
                         server_info={"id": sid, "server_type": "area"},
                         registry=game.url("area"), **opts)


async def until(cond, limit, what):
    """Poll async ``cond()`` until it is true (AssertionError after ``limit`` s)."""
    deadline = time.monotonic() + limit
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit} s: {what}")
        await asyncio.sleep(0.02)


async def enter(players, game, player, connector="connector-1", **entry):
    """Connect ``player`` to ``connector`` and send the entry request."""
    await players.connect(player, game.client_ports[connector])
    answer = await players.request(player, ENTRY, entry)
    assert answer["code"] == 200, answer
    return answer


async def reaches(players, player, server_id):
    """Wait until ``player``'s area requests reach ``server_id`` (the connector has
    heard of it from the master)."""
    async def served():
        body = await players.request(player, "area.playerHandler.echo")
        return body.get("server") == server_id
    await until(served, 5, f"{player}'s requests reach {server_id}")


class Backend:
    """A started Python area server and a players process, stopped at exit."""

    def __init__(self, game, sid, core, **opts):
        self.gw = py_area(game, sid, core, **opts)
        self.players = Players()

    async def __aenter__(self):
        await self.gw.start()
        await self.players.start()
        return self.gw, self.players

    async def __aexit__(self, *exc):
        await self.players.stop()
        await self.gw.stop()


# ---------------------------------------------------------------------------------------

async def test_requests_and_notifies_through_the_connector(game, core):
    async with Backend(game, f"py-rr-{core}", core) as (gw, players):
        entry = await enter(players, game, "p1", uid="u1", area=gw.app.server_id)
        assert type(entry["sid"]) is int
        await reaches(players, "p1", gw.app.server_id)
        body = await players.request("p1", "area.playerHandler.echo", {"x": 10, "s": "é"})
        assert body == {"code": 200, "msg": {"x": 10, "s": "é", "__route__":
                                             "area.playerHandler.echo"},
                        "server": gw.app.server_id, "sid": entry["sid"], "uid": "u1",
                        "frontend": "connector-1", "settings": {"area": gw.app.server_id}}
        # an async handler that suspends; one returning None (the player gets {})
        assert await players.request("p1", "area.playerHandler.later", {"n": 5}) == {
            "code": 200, "later": 5}
        assert await players.request("p1", "area.playerHandler.nothing") == {}
        # notifies run their handler (no response); a request after them sees them
        players.notify("p1", "area.playerHandler.note", {"text": "a"})
        players.notify("p1", "area.playerHandler.note", {"text": "b"})
        body = await players.request("p1", "area.playerHandler.notes_seen")
        assert body == {"code": 200, "notes": ["a", "b"]}


async def test_errors_reach_the_player_as_codes(game, core, caplog):
    async with Backend(game, f"py-err-{core}", core) as (gw, players):
        await enter(players, game, "p1", uid="u1", area=gw.app.server_id)
        await reaches(players, "p1", gw.app.server_id)
        with caplog.at_level(logging.INFO, logger="pomelo_rpc.backend"):
            assert await players.request("p1", "area.playerHandler.fail") == {"code": 500}
            assert await players.request("p1", "area.playerHandler.refuse") == {"code": 501}
            assert await players.request("p1", "area.playerHandler.refuse",
                                         {"code": 404}) == {"code": 404}
            for route in ("area.nohandler.x", "area.playerHandler.nope",
                          "area.playerHandler._private", "area.playerHandler.create"):
                assert await players.request("p1", route) == {"code": 500}, route
        assert "RuntimeError: boom" in caplog.text and "no handler 'nohandler'" in caplog.text
        # a before filter refusing with a code, an after filter seeing every outcome
        seen = []
        gw.before(lambda msg, session: _refuse_if(msg.get("forbidden")))
        gw.after(lambda msg, session, resp, error: seen.append(
            (msg["__route__"], resp, type(error).__name__ if error else None)))
        assert await players.request("p1", "area.playerHandler.echo",
                                     {"forbidden": True}) == {"code": 403}
        body = await players.request("p1", "area.playerHandler.later", {"n": 1})
        assert body == {"code": 200, "later": 1}
        assert seen == [("area.playerHandler.echo", None, "HandlerError"),
                        ("area.playerHandler.later", {"code": 200, "later": 1}, None)]


def _refuse_if(flag):
    from pomelo_rpc.backend import HandlerError
    if flag:
        raise HandlerError("forbidden", code=403)


async def test_bind_from_python_then_requests_are_routed_by_uid(game, core):
    ids = [f"py-bind-{core}-a", f"py-bind-{core}-b"]
    uid = next(f"user{n}" for n in range(100) if crc32_index(f"user{n}", 2) == 1)
    second = Backend(game, ids[1], core)
    async with Backend(game, ids[0], core) as (gw, players), second:
        async def listed():      # and no other area server (the routing is over them)
            servers = await game.server_list()
            return sorted(s for s, rec in servers.items() if rec["server_type"] == "area") == ids
        await until(listed, 5, "the master lists both area servers, and no other")
        await enter(players, game, "p1")                # no uid, no area: routed by uid ""
        await reaches(players, "p1", ids[0])             # crc32("") = 0: the first by id
        assert await players.request("p1", "area.playerHandler.login", {"uid": uid}) == {
            "code": 200, "uid": uid}
        body = await players.request("p1", SESSION)
        assert body["uid"] == uid                        # the connector's session is bound
        body = await players.request("p1", "area.playerHandler.echo")
        assert body["server"] == ids[1] and body["uid"] == uid   # crc32(uid) % 2 == 1
        assert (await players.request("p1", "area.playerHandler.logout"))["code"] == 200
        assert (await players.request(  "p1", SESSION))["uid"] is None


async def test_session_push_and_push_all_reach_the_connector(game, core):
    async with Backend(game, f"py-sess-{core}", core) as (gw, players):
        entry = await enter(players, game, "p1", uid="u1", area=gw.app.server_id)
        await reaches(players, "p1", gw.app.server_id)
        answer = await players.request("p1", "area.playerHandler.remember",
                                       {"set": {"level": 3, "gold": 7}})
        assert answer == {"code": 200}
        settings = (await players.request("p1", SESSION))["settings"]
        assert settings == {"area": gw.app.server_id, "level": 3, "gold": 7}
        await players.request("p1", "area.playerHandler.remember",
                              {"set": {"level": 4, "hp": {"max": 9}}, "all": True})
        settings = (await players.request("p1", SESSION))["settings"]
        assert settings == {"area": gw.app.server_id, "level": 4, "gold": 7, "hp": {"max": 9}}
        # the next forwarded request carries what the connector holds now
        body = await players.request("p1", "area.playerHandler.echo")
        assert body["settings"] == settings
        # the session service asks the connector
        body = await players.request("p1", "area.playerHandler.lookup")
        exported = {"id": entry["sid"], "frontendId": "connector-1", "uid": "u1", "settings": settings}
        assert body == {"code": 200, "one": exported, "many": [exported], "missing": None}


async def test_channels_push_by_uids_and_broadcast_across_two_connectors(game, core):
    async with Backend(game, f"py-chan-{core}", core) as (gw, players):
        sid = gw.app.server_id
        await enter(players, game, "p1", "connector-1", uid="u1", area=sid)
        await enter(players, game, "p2", "connector-2", uid="u2", area=sid)
        await enter(players, game, "p3", "connector-2", area=sid)   # not bound
        await reaches(players, "p1", sid)
        await reaches(players, "p2", sid)
        for p in ("p1", "p2"):
            body = await players.request(p, "area.playerHandler.join", {"channel": "room"})
            assert body == {"code": 200}
        await players.request("p1", "area.playerHandler.join", {"channel": "room"})  # twice
        body = await players.request("p1", "area.playerHandler.say",
                                     {"channel": "room", "text": "hi"})
        assert body == {"code": 200, "failed": [], "members": ["u1", "u2"]}
        for p in ("p1", "p2"):
            push = await players.next_event(p, "push")
            assert push["route"] == "onChat" and push["body"] == {"from": "u1", "text": "hi"}
        # to given uids, each on its connector
        body = await players.request("p2", "area.playerHandler.whisper", {
            "text": "psst", "to": [["u1", "connector-1"], ["u9", "connector-2"]]})
        assert body == {"code": 200, "failed": ["u9"]}
        push = await players.next_event("p1", "push")
        assert push["route"] == "onWhisper" and push["body"] == {"from": "u2", "text": "psst"}
        # broadcast: every bound player of every connector; binded=False: all of them
        await players.request("p1", "area.playerHandler.shout")
        for p in ("p1", "p2"):
            assert (await players.next_event(p, "push"))["route"] == "onShout"
        await players.request("p1", "area.playerHandler.shout", {"binded": False})
        for p in ("p1", "p2", "p3"):
            assert (await players.next_event(p, "push"))["route"] == "onShout"
        # a member gone from its connector is reported as failed
        players.close("p2")
        await players.next_event("p2", "closed")

        async def u2_failed():      # once connector-2 has closed u2's session too
            body = await players.request("p1", "area.playerHandler.say",
                                         {"channel": "room", "text": "anyone?"})
            return body["failed"] == ["u2"]
        await until(u2_failed, 5, "a push to u2, gone, fails")
        assert gw.app.channels.get("room").members() == ["u1", "u2"]


async def test_kick_by_session_and_by_uid(game, core):
    async with Backend(game, f"py-kick-{core}", core) as (gw, players):
        sid = gw.app.server_id
        await enter(players, game, "p1", "connector-1", uid="u1", area=sid)
        await enter(players, game, "p2", "connector-2", uid="u2", area=sid)
        await reaches(players, "p1", sid)
        answer = await players.request("p1", "area.playerHandler.kick",
                                       {"uid": "u2", "frontend": "connector-2"})
        assert answer == {"code": 200}
        await players.next_event("p2", "kick")
        await players.next_event("p2", "closed")
        # kicking the player's own session: it is closed before its answer
        players.notify("p1", "area.playerHandler.kick")
        await players.next_event("p1", "kick")
        await players.next_event("p1", "closed")


async def test_python_handler_calls_node_and_node_handler_calls_python(game, core):
    async with Backend(game, f"py-rpc-{core}", core) as (gw, players):
        sid = gw.app.server_id
        await enter(players, game, "p1", uid="u1", area=sid)
        await reaches(players, "p1", sid)
        assert await players.request("p1", "area.playerHandler.ask_node") == {
            "code": 200, "who": "node-1", "routed": "node-1"}

        async def node_knows():     # node-1 hears of the Python server from the master
            body = await players.request("p1", "node.relayHandler.callPy",
                                         {"target": sid, "payload": {"k": [1, "é"]}})
            return body["code"] == 200
        await until(node_knows, 5, "node-1 calls the Python area")
        body = await players.request("p1", "node.relayHandler.callPy",
                                     {"target": sid, "payload": {"k": [1, "é"]}})
        assert body == {"code": 200, "via": "node-1",
                        "answer": {"server_id": sid, "msg": {"k": [1, "é"]}}}


async def test_graceful_stop_answers_requests_in_flight(game, core):
    sid = f"py-stop-{core}"
    gw = py_area(game, sid, core)
    await gw.start()
    players = await Players().start()
    try:
        for p in ("p1", "p2", "p3"):
            await enter(players, game, p, uid=p, area=sid)
        await reaches(players, "p1", sid)
        calls = [asyncio.ensure_future(players.request(p, "area.playerHandler.slow",
                                                       {"seconds": 0.4}))
                 for p in ("p1", "p2", "p3")]
        await asyncio.sleep(0.1)
        await gw.stop()              # leaves the master, drains, closes
        assert await asyncio.gather(*calls) == [{"code": 200, "slept": 0.4}] * 3
        # gone from the connector: a request now is refused at once by its route
        t0 = time.monotonic()
        assert await players.request("p1", "area.playerHandler.echo") == {"code": 500}
        assert time.monotonic() - t0 < 1.0
    finally:
        await players.stop()
        await gw.stop()


async def test_killed_backend_fails_the_players_requests(game, core):
    sid = f"py-killed-{core}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pomelo_rpc", "serve", "--transport", game.transport, "--server-id",
        sid, "--server-type", "area", "--handlers", HANDLERS, "--remote",
        f"user={REMOTES[0]['path']}", "--registry", game.url("area"),
        stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=ROOT, POMELO_RPC_PURE="1" if core == "python" else "0"))
    players = await Players().start()
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert json.loads(line)["implementation"] == core
        await enter(players, game, "p1", uid="u1", area=sid)
        await reaches(players, "p1", sid)
        calls = [asyncio.ensure_future(players.request("p1", "area.playerHandler.slow",
                                                       {"seconds": 60}))
                 for _ in range(3)]
        await asyncio.sleep(0.2)
        proc.kill()
        await proc.wait()
        t0 = time.monotonic()
        assert await asyncio.gather(*calls) == [{"code": 500}] * 3
        took = time.monotonic() - t0
        print(f"killed backend: its players' requests failed {took:.2f} s after the kill")
        assert took < RPC_TIMEOUT + 1
        assert await players.request("p1", "area.playerHandler.echo") == {"code": 500}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await players.stop()


FORWARD = {"namespace": "sys", "server_type": "area", "service": "msgRemote",
           "method": "forwardMessage"}
SESSION_OK = {"id": 1, "frontendId": "connector-1", "uid": None, "settings": {}}


async def test_hostile_forward_message_arguments_get_errors(game, core, caplog):
    async with Backend(game, f"py-hostile-{core}", core) as (gw, players):
        raw = client.create(transport=game.transport, core=core)
        raw.add_servers([{"id": "target", "server_type": "area", "port": gw.port}])
        await raw.start()
        try:
            ok = {"id": 1, "type": 0, "route": "area.playerHandler.echo", "body": {}}
            hostile = [
                [dict(ok, route="nodots"), SESSION_OK],
                [dict(ok, route="area.playerHandler"), SESSION_OK],
                [dict(ok, route="a.b.c.d"), SESSION_OK],
                [dict(ok, route="chat.playerHandler.echo"), SESSION_OK],
                [dict(ok, route="area.nohandler.echo"), SESSION_OK],
                [dict(ok, route="area.playerHandler.missing"), SESSION_OK],
                [dict(ok, route=12), SESSION_OK],
                [dict(ok, route=None), SESSION_OK],
                [{"id": 1}, SESSION_OK],
                [[1, 2], SESSION_OK],
                ["a string", SESSION_OK],
                [ok, None],
                [ok, "a string"],
                [ok, {}],
                [ok, {"id": 1}],
                [ok, {"frontendId": "connector-1"}],
                [ok, {"id": {"x": 1}, "frontendId": "connector-1"}],
                [ok, {"id": 1, "frontendId": 5}],
                [ok, {"id": 1, "frontendId": "c", "uid": [1]}],
                [ok, {"id": 1, "frontendId": "c", "settings": [1]}],
                [ok],
                [],
                [ok, SESSION_OK, "extra"],
            ]
            for args in hostile:
                with pytest.raises(pomelo_rpc.RemoteError):
                    await raw.rpc_invoke("target", dict(FORWARD, args=args))
            # the session's JSON types are kept; a body that is not an object is passed
            # as it is
            body = await raw.rpc_invoke("target", dict(FORWARD, args=[
                dict(ok, body="text"), dict(SESSION_OK, id="s-1", uid=7)]))
            assert body[0]["msg"] == "text" and body[0]["sid"] == "s-1"
            assert body[0]["uid"] == 7 and body[1] is None
        finally:
            await raw.stop()
        assert "forwardMessage refused" in caplog.text
        # the server goes on serving players
        await enter(players, game, "p1", uid="u1", area=gw.app.server_id)
        await reaches(players, "p1", gw.app.server_id)


async def test_handlers_reload_when_their_files_change(core, tmp_path):
    handlers = tmp_path / "handler"
    handlers.mkdir()
    (handlers / "roomHandler.py").write_text(
        "def hello(msg, session):\n    return {'code': 200, 'v': 1}\n")
    gw = server.create(transport="mqtt", core=core, handlers=str(handlers),
                       reload_handlers=True, reload_interval=0.05,
                       server_info={"id": "py-reload", "server_type": "room"})
    await gw.start()
    raw = client.create(transport="mqtt", core=core)
    raw.add_servers([{"id": "py-reload", "server_type": "room", "port": gw.port}])
    await raw.start()

    async def call(route):
        msg = {"id": 1, "type": 0, "route": route, "body": {}}
        return (await raw.rpc_invoke("py-reload", dict(FORWARD, args=[msg, SESSION_OK])))[0]
    try:
        assert await call("room.roomHandler.hello") == {"code": 200, "v": 1}
        (handlers / "roomHandler.py").write_text(
            "def hello(msg, session):\n    return {'code': 200, 'v': 2}\n\n"
            "async def bye(msg, session):\n    return {'code': 200, 'bye': True}\n")

        async def reloaded():
            return (await call("room.roomHandler.hello"))["v"] == 2
        await until(reloaded, 5, "the edited handler serves")
        assert await call("room.roomHandler.bye") == {"code": 200, "bye": True}
        (handlers / "roomHandler.py").write_text("def hello(:\n")      # broken: old code stays
        (handlers / "lobbyHandler.py").write_text(
            "def create(app):\n    return {'who': lambda msg, session: {'id': app.server_id}}\n")

        async def added():
            try:
                return await call("room.lobbyHandler.who") == {"id": "py-reload"}
            except pomelo_rpc.RemoteError:
                return False
        await until(added, 5, "a new handler file serves")
        assert (await call("room.roomHandler.hello"))["v"] == 2
    finally:
        await raw.stop()
        await gw.stop()


def run_demo(*flags):
    """``python -m pomelo_rpc demo *flags``: it ran, showed requests, pushes and session
    changes, and ended by itself; its output."""
    done = subprocess.run([sys.executable, "-m", "pomelo_rpc", "demo", *flags],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "request  area.playerHandler.walk from alice" in out
    assert "push     onChat to dave: {'from': 'bob', 'text': 'hello from Bob'}" in out
    assert "session  " in out and "name: None -> 'Carol'" in out
    assert "on the connector, carol's session: {'area': 'area-py-1', 'name': 'Carol'}" in out
    assert "everything stopped." in out
    return out


def test_demo_pomelo_runs_and_ends_by_itself(game):
    assert "pomelo 2.2.7 master and two connectors" in run_demo("--pomelo")
