"""Backend servers (``handlers=``) inside a running pinus 1.7.4 cluster: a pinus
connector forwarding player requests to a Python area server, on both of pinus's rpc
transports.

Two clusters for the module, started side by side (``pomelo_rpc.pomelo_app.PinusApp``:
tests/pinus/pinus_app with a master, two hybridconnectors over WebSocket and a Node
server ``node-1``), one on pinus's mqtt rpc and one on its tcp rpc; every test runs on
each, with each core. The Python area servers (tests/remote/backend/area, as in
tests/test_backend.py) advertise the stubs ``python -m pomelo_rpc stubs --backend``
writes: ``sys/msgRemote.js``, from which the connectors build the
``app.sysrpc.area.msgRemote`` they forward through, and ``user/areaRemote.js``. Players
are pomelo-client-websocket@1.0.13 clients (tests/node/players.js): pinus's connectors
speak pomelo's protocol.
"""

import asyncio
import json
import logging
import os
import subprocess
import sys

import pytest

import pomelo_rpc
from conftest import ROOT
from pomelo_rpc import server
from pomelo_rpc.pomelo_app import PINUS_DIR, PinusApp, node_missing
from pomelo_rpc.router import crc32_index
from pomelo_rpc.stubs import remoter_paths
from test_backend import (ENTRY, HANDLERS, REMOTES, SESSION, STRICT, Backend, _refuse_if, enter,
                          reaches, until)

#: the connectors' rpc timeout (proxyConfig.timeout), s
RPC_TIMEOUT = 3.0
TRANSPORTS = ("mqtt", "pinus-tcp")


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    """The stubs of the Python area server, written by ``python -m pomelo_rpc stubs
    --backend``."""
    out = str(tmp_path_factory.mktemp("area_stubs"))
    done = subprocess.run([sys.executable, "-m", "pomelo_rpc", "stubs", "--backend",
                           "--remote", f"user={REMOTES[0]['path']}", "--out", out,
                           "--server-type", "area"],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sorted(os.path.relpath(p, out) for p in report["written"]) == [
        os.path.join("sys", "msgRemote.js"), os.path.join("user", "areaRemote.js")]
    assert report["remoterPaths"] == [
        {"namespace": "sys", "serverType": "area", "path": os.path.join(out, "sys")},
        {"namespace": "user", "serverType": "area", "path": os.path.join(out, "user")}]
    return out


@pytest.fixture(scope="module")
def games(stubs, tmp_path_factory):
    """Both pinus clusters (mqtt, pinus-tcp) with their connectors, up."""
    missing = node_missing(PINUS_DIR, PinusApp.packages) or node_missing()
    if missing is not None:
        (pytest.fail if STRICT else pytest.skip)(f"the pinus backend tests need Node: {missing}")
    started = {}
    try:
        for transport in TRANSPORTS:
            started[transport] = PinusApp(
                connectors=["connector-1", "connector-2"], node=["node-1"],
                transport=transport, stubs=stubs, rpc_timeout=RPC_TIMEOUT,
                base=str(tmp_path_factory.mktemp(f"pinus_game_{transport}")))
        pomelo_rpc.run(_start_all(started.values()))
        yield started
    finally:
        for app in started.values():
            app.stop()


async def _start_all(apps):
    await asyncio.gather(*(app.start() for app in apps))


@pytest.fixture(params=TRANSPORTS)
def game(request, games):
    """One pinus cluster, per rpc transport."""
    return games[request.param]


# ---------------------------------------------------------------------------------------

async def test_requests_and_notifies_through_the_pinus_connector(game, core):
    async with Backend(game, f"py-rr-{core}", core) as (gw, players):
        sid = gw.app.server_id
        # what the Python area advertises: the sys entry the connectors forward through
        record = (await game.server_list())[sid]
        assert [p["namespace"] for p in record["remoterPaths"]] == ["sys", "user"]
        entry = await enter(players, game, "p1", uid="u1", area=sid)
        assert type(entry["sid"]) is int
        await reaches(players, "p1", sid)
        body = await players.request("p1", "area.playerHandler.echo", {"x": 10, "s": "é"})
        assert body == {"code": 200, "msg": {"x": 10, "s": "é", "__route__":
                                             "area.playerHandler.echo"},
                        "server": sid, "sid": entry["sid"], "uid": "u1",
                        "frontend": "connector-1", "settings": {"area": sid}}
        assert await players.request("p1", "area.playerHandler.later", {"n": 5}) == {
            "code": 200, "later": 5}
        assert await players.request("p1", "area.playerHandler.nothing") == {}
        players.notify("p1", "area.playerHandler.note", {"text": "a"})
        players.notify("p1", "area.playerHandler.note", {"text": "b"})
        body = await players.request("p1", "area.playerHandler.notes_seen")
        assert body == {"code": 200, "notes": ["a", "b"]}


async def test_errors_and_explicit_codes_reach_the_player(game, core, caplog):
    async with Backend(game, f"py-err-{core}", core) as (gw, players):
        await enter(players, game, "p1", uid="u1", area=gw.app.server_id)
        await reaches(players, "p1", gw.app.server_id)
        with caplog.at_level(logging.INFO, logger="pomelo_rpc.backend"):
            assert await players.request("p1", "area.playerHandler.fail") == {"code": 500}
            # pinus drops what follows an error: a code travels as the response
            assert await players.request("p1", "area.playerHandler.refuse") == {"code": 501}
            assert await players.request("p1", "area.playerHandler.refuse",
                                         {"code": 404}) == {"code": 404}
            for route in ("area.nohandler.x", "area.playerHandler.nope"):
                assert await players.request("p1", route) == {"code": 500}, route
        assert "RuntimeError: boom" in caplog.text and "no handler 'nohandler'" in caplog.text
        seen = []
        gw.before(lambda msg, session: _refuse_if(msg.get("forbidden")))
        gw.after(lambda msg, session, resp, error: seen.append(
            (msg["__route__"], type(error).__name__ if error else None)))
        assert await players.request("p1", "area.playerHandler.echo",
                                     {"forbidden": True}) == {"code": 403}
        assert (await players.request("p1", "area.playerHandler.later", {"n": 1}))["later"] == 1
        assert seen == [("area.playerHandler.echo", "HandlerError"),
                        ("area.playerHandler.later", None)]


async def test_bind_then_requests_are_routed_by_uid(game, core):
    ids = [f"py-bind-{core}-a", f"py-bind-{core}-b"]
    uid = next(f"user{n}" for n in range(100) if crc32_index(f"user{n}", 2) == 1)
    second = Backend(game, ids[1], core)
    async with Backend(game, ids[0], core) as (gw, players), second:
        async def listed():
            servers = await game.server_list()
            return sorted(s for s, rec in servers.items() if rec["server_type"] == "area") == ids
        await until(listed, 5, "the master lists both area servers, and no other")
        await enter(players, game, "p1")                 # no uid, no area: routed by uid ""
        await reaches(players, "p1", ids[0])
        assert await players.request("p1", "area.playerHandler.login", {"uid": uid}) == {
            "code": 200, "uid": uid}
        assert (await players.request("p1", SESSION))["uid"] == uid
        body = await players.request("p1", "area.playerHandler.echo")
        assert body["server"] == ids[1] and body["uid"] == uid   # crc32(uid) % 2 == 1
        assert (await players.request("p1", "area.playerHandler.logout"))["code"] == 200
        assert (await players.request("p1", SESSION))["uid"] is None


async def test_session_push_push_all_and_the_session_service(game, core):
    async with Backend(game, f"py-sess-{core}", core) as (gw, players):
        entry = await enter(players, game, "p1", uid="u1", area=gw.app.server_id)
        await reaches(players, "p1", gw.app.server_id)
        assert await players.request("p1", "area.playerHandler.remember",
                                     {"set": {"level": 3, "gold": 7}}) == {"code": 200}
        await players.request("p1", "area.playerHandler.remember",
                              {"set": {"level": 4, "hp": {"max": 9}}, "all": True})
        settings = (await players.request("p1", SESSION))["settings"]
        assert settings == {"area": gw.app.server_id, "level": 4, "gold": 7, "hp": {"max": 9}}
        body = await players.request("p1", "area.playerHandler.lookup")
        exported = {"id": entry["sid"], "frontendId": "connector-1", "uid": "u1",
                    "settings": settings}
        assert body == {"code": 200, "one": exported, "many": [exported], "missing": None}


async def test_channel_push_and_broadcast_across_two_connectors(game, core):
    async with Backend(game, f"py-chan-{core}", core) as (gw, players):
        sid = gw.app.server_id
        await enter(players, game, "p1", "connector-1", uid="u1", area=sid)
        await enter(players, game, "p2", "connector-2", uid="u2", area=sid)
        await enter(players, game, "p3", "connector-2", area=sid)   # not bound
        await reaches(players, "p1", sid)
        await reaches(players, "p2", sid)
        for p in ("p1", "p2"):
            await players.request(p, "area.playerHandler.join", {"channel": "room"})
        body = await players.request("p1", "area.playerHandler.say",
                                     {"channel": "room", "text": "hi"})
        assert body == {"code": 200, "failed": [], "members": ["u1", "u2"]}
        for p in ("p1", "p2"):
            push = await players.next_event(p, "push")
            assert push["route"] == "onChat" and push["body"] == {"from": "u1", "text": "hi"}
        body = await players.request("p2", "area.playerHandler.whisper", {
            "text": "psst", "to": [["u1", "connector-1"], ["u9", "connector-2"]]})
        assert body == {"code": 200, "failed": ["u9"]}
        push = await players.next_event("p1", "push")
        assert push["route"] == "onWhisper" and push["body"] == {"from": "u2", "text": "psst"}
        await players.request("p1", "area.playerHandler.shout")
        for p in ("p1", "p2"):
            assert (await players.next_event(p, "push"))["route"] == "onShout"
        await players.request("p1", "area.playerHandler.shout", {"binded": False})
        for p in ("p1", "p2", "p3"):
            assert (await players.next_event(p, "push"))["route"] == "onShout"


async def test_kick_by_session_and_by_uid(game, core):
    async with Backend(game, f"py-kick-{core}", core) as (gw, players):
        sid = gw.app.server_id
        await enter(players, game, "p1", "connector-1", uid="u1", area=sid)
        await enter(players, game, "p2", "connector-2", uid="u2", area=sid)
        await reaches(players, "p1", sid)
        assert await players.request("p1", "area.playerHandler.kick",
                                     {"uid": "u2", "frontend": "connector-2"}) == {"code": 200}
        await players.next_event("p2", "kick")
        await players.next_event("p2", "closed")
        players.notify("p1", "area.playerHandler.kick")
        await players.next_event("p1", "kick")
        await players.next_event("p1", "closed")


async def test_python_handler_calls_the_pinus_node_server(game, core):
    async with Backend(game, f"py-rpc-{core}", core) as (gw, players):
        await enter(players, game, "p1", uid="u1", area=gw.app.server_id)
        await reaches(players, "p1", gw.app.server_id)
        # app.rpc.node.relayRemote.whoami, to node-1 and routed by the session's uid
        assert await players.request("p1", "area.playerHandler.ask_node") == {
            "code": 200, "who": "node-1", "routed": "node-1"}


async def test_a_backend_without_the_sys_stub_is_warned_about(games, caplog):
    """A backend advertising no sys remoterPath cannot be forwarded to: logged. (A stubs
    folder not on this host is advertised with both namespaces, sys and user.)"""
    assert [p["namespace"] for p in remoter_paths("/nowhere", "area", backend=True)] == [
        "sys", "user"]
    game = games["mqtt"]
    gw = server.create(transport="mqtt", handlers=HANDLERS,
                       server_info={"id": "py-nosys", "server_type": "area",
                                    "remoterPaths": []},
                       registry=game.url("area"))
    with caplog.at_level(logging.WARNING, logger="pomelo_rpc.registry"):
        await gw.start()
        await gw.stop()
    assert "py-nosys has handlers but advertises no sys remoterPath" in caplog.text
    assert "stubs --backend" in caplog.text


def test_demo_pinus_runs_and_ends_by_itself(games):
    done = subprocess.run([sys.executable, "-m", "pomelo_rpc", "demo", "--pinus", "pinus-tcp"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "pinus 1.7.4 master and two connectors (Node, rpc over pinus-tcp)" in out
    assert "request  area.playerHandler.walk from alice" in out
    assert "push     onChat to dave: {'from': 'bob', 'text': 'hello from Bob'}" in out
    assert "on the connector, carol's session: {'area': 'area-py-1', 'name': 'Carol'}" in out
    assert "everything stopped." in out
