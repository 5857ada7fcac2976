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

The tests of tests/test_backend.py that take its ``game`` run here as they are, with
this module's (a ``PinusApp`` per transport): requests and notifies, errors and codes,
filters, bind and routing by uid, session pushes and the session service, channels and
broadcasts, kicks, a Python handler calling node-1 and node-1's handler calling Python,
a graceful stop, a killed backend, hostile forwardMessage arguments. The tests below
cover what is pinus's own.
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
from pomelo_rpc import client, server
from pomelo_rpc.pomelo_app import PINUS_DIR, PinusApp, Players, node_missing
from pomelo_rpc.stubs import remoter_paths
from test_backend import (FORWARD, HANDLERS, REMOTES, RPC_TIMEOUT, STRICT, Backend, enter,
                          run_demo, until)
# tests/test_backend.py's tests, collected here with this module's ``game``: the same
# players, handlers and assertions through pinus's connectors, on both rpc transports
from test_backend import (  # noqa: F401  (collected by pytest)
    test_bind_from_python_then_requests_are_routed_by_uid,
    test_channels_push_by_uids_and_broadcast_across_two_connectors,
    test_errors_reach_the_player_as_codes, test_graceful_stop_answers_requests_in_flight,
    test_hostile_forward_message_arguments_get_errors, test_kick_by_session_and_by_uid,
    test_killed_backend_fails_the_players_requests,
    test_python_handler_calls_node_and_node_handler_calls_python,
    test_requests_and_notifies_through_the_connector,
    test_session_push_and_push_all_reach_the_connector)

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


async def test_the_area_advertises_its_stubs_and_answers_codes_pinus_style(game, core):
    """The Python area advertises the sys and user stubs (the connectors forward through
    the first); a handler's code travels as the response, which pinus's connector reads
    (pomelo's ``[err, {"code": N}]`` would reach the player as 500)."""
    async with Backend(game, f"py-stubs-{core}", core) as (gw, players):
        sid = gw.app.server_id
        record = (await game.server_list())[sid]
        assert record["remoterPaths"] == [
            {"namespace": ns, "serverType": "area", "path": os.path.join(game.stubs, ns)}
            for ns in ("sys", "user")]
        raw = client.create(transport=game.transport, core=core)
        raw.add_servers([{"id": sid, "server_type": "area", "port": gw.port}])
        await raw.start()
        try:
            msg = {"id": 1, "type": 0, "route": "area.playerHandler.refuse", "body": {}}
            session = {"id": 1, "frontendId": "connector-1", "uid": "u1", "settings": {}}
            assert await raw.rpc_invoke(sid, dict(FORWARD, args=[msg, session])) == [
                {"code": 501}, None]
        finally:
            await raw.stop()


async def test_a_backend_without_the_sys_stub_is_warned_about(games, caplog):
    """A backend advertising no sys remoterPath is logged: the connectors cannot forward
    to it (the player gets 500, the connector logs why), unless another server of its
    type advertised one (pinus builds one proxy per server type): so a type of its own
    here, "py". (A stubs folder not on this host is advertised with both namespaces.)"""
    assert [p["namespace"] for p in remoter_paths("/nowhere", "area", backend=True)] == [
        "sys", "user"]
    game = games["mqtt"]
    gw = server.create(transport="mqtt", handlers=HANDLERS,
                       server_info={"id": "py-nosys", "server_type": "py",
                                    "remoterPaths": []},
                       registry=game.url("py"))
    players = await Players().start()
    try:
        with caplog.at_level(logging.WARNING, logger="pomelo_rpc.registry"):
            await gw.start()
        assert "py-nosys has handlers but advertises no sys remoterPath" in caplog.text
        assert "stubs --backend" in caplog.text
        await enter(players, game, "p1")

        async def refused_for_want_of_sys():
            assert await players.request("p1", "py.playerHandler.echo") == {"code": 500}
            return "reading 'msgRemote'" in game.log_tail(20000)
        await until(refused_for_want_of_sys, 5, "the connector finds no app.sysrpc.py")
    finally:
        await players.stop()
        await gw.stop()


def test_demo_pinus_runs_and_ends_by_itself(games):
    out = run_demo("--pinus", "pinus-tcp")
    assert "pinus 1.7.4 master and two connectors (Node, rpc over pinus-tcp)" in out
