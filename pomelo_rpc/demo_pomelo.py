"""``python -m pomelo_rpc demo --pomelo`` (``./dev demo --pomelo``): a Python area
server inside a Node pomelo 2.2.7 cluster; ``--pinus [mqtt|pinus-tcp]``: inside a
pinus 1.7.4 one.

A pomelo master and two hybridconnectors (Node, ``tests/node/pomelo_app``, from the
committed npm lockfile; with ``--pinus``, ``tests/pinus/pinus_app``), a Python backend
server of type ``area`` (this process, ``pomelo_rpc/demo_backend/area/handler``) and
four simulated players (pomelo-client-websocket, two on each connector). It prints the
requests the area serves, the pushes the players receive and the session changes, as
they happen, then stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from typing import Any

from . import server
from .backend import BackendSession
from .pomelo_app import PINUS_DIR, PinusApp, PomeloApp, Players, node_missing
from .stubs import write_stubs

HANDLERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_backend", "area",
                        "handler")
AREA_ID = "area-py-1"
#: (player, connector)
PLAYERS = [("alice", "connector-1"), ("bob", "connector-2"), ("carol", "connector-1"),
           ("dave", "connector-2")]


class Printer:
    """What the demo prints: requests (handler filters), pushes (players' events),
    session changes (the settings before and after each request)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.counts = {"requests": 0, "pushes": 0, "session changes": 0}
        self._before: dict[int, tuple[Any, dict[str, Any]]] = {}

    def line(self, text: str) -> None:
        """Print ``text`` with the time since the start."""
        print(f"{time.monotonic() - self.t0:7.3f}s  {text}", flush=True)

    def before(self, msg: Any, session: BackendSession) -> None:
        """Handler before filter: note the session as the request found it."""
        self._before[id(session)] = (session.uid, dict(session.settings))

    def after(self, msg: Any, session: BackendSession, resp: Any,
              error: BaseException | None) -> None:
        """Handler after filter: print the request and the session's changes."""
        self.counts["requests"] += 1
        body = {k: v for k, v in msg.items() if k != "__route__"} if isinstance(msg, dict) else msg
        outcome = f"error {error!r}" if error is not None else resp
        self.line(f"request  {msg.get('__route__')} from {session.uid} "
                  f"({session.frontend_id}, session {session.id}): {body} -> {outcome}")
        uid, settings = self._before.pop(id(session), (session.uid, session.settings))
        if uid != session.uid:
            self.change(session, f"bound to uid {session.uid!r}")
        for key in sorted(set(settings) | set(session.settings)):
            old, new = settings.get(key), session.settings.get(key)
            if old != new:
                self.change(session, f"{key}: {old!r} -> {new!r}")

    def change(self, session: BackendSession, what: str) -> None:
        """Print a change of ``session``."""
        self.counts["session changes"] += 1
        self.line(f"session  {session.id} of {session.uid} on {session.frontend_id}: {what}")

    def event(self, event: dict[str, Any]) -> None:
        """A players' event: print pushes and kicks."""
        if event.get("ev") == "push":
            self.counts["pushes"] += 1
            self.line(f"push     {event['route']} to {event['p']}: {event['body']}")
        elif event.get("ev") == "kick":
            self.line(f"kick     {event['p']}")


async def _play(players: Players, app: PomeloApp, printer: Printer) -> None:
    for name, connector in PLAYERS:
        await players.connect(name, app.client_ports[connector])
        answer = await players.request(name, "connector.entryHandler.entry",
                                       {"uid": name, "area": AREA_ID})
        printer.line(f"entry    {name} on {connector}: {answer}")
        await players.request(name, "area.playerHandler.enter")
        await asyncio.sleep(0.05)
    for name, _ in PLAYERS:
        await players.request(name, "area.playerHandler.rename", {"name": name.title()})
    for step in range(2):
        for i, (name, _) in enumerate(PLAYERS):
            await players.request(name, "area.playerHandler.walk",
                                  {"x": 10 * i + step, "y": 5 * step})
    await players.request("alice", "area.playerHandler.move", {"x": 1, "y": 1, "push": True})
    players.notify("bob", "area.playerHandler.chat", {"text": "hello from Bob"})
    await asyncio.sleep(0.3)      # the last pushes arrive
    for name, _ in PLAYERS:
        body = await players.request(name, "connector.entryHandler.session")
        printer.line(f"on the connector, {name}'s session: {body['settings']}")


async def main(args: argparse.Namespace) -> None:
    """Run the demo (see the module docstring)."""
    pinus = getattr(args, "pinus", None)
    missing = node_missing() or (node_missing(PINUS_DIR, PinusApp.packages) if pinus else None)
    if missing is not None:
        raise SystemExit(f"demo --{'pinus' if pinus else 'pomelo'} needs Node and the npm "
                         f"packages: {missing}")
    printer = Printer()
    stubs = tempfile.mkdtemp(prefix="pomelo_rpc_demo_stubs_")
    app: PomeloApp
    if pinus:
        # what the connectors forward through (app.sysrpc.area.msgRemote): the area's
        # sys stub, as `python -m pomelo_rpc stubs --backend --out DIR` writes it
        write_stubs([], stubs, backend=True)
        app = PinusApp(connectors=["connector-1", "connector-2"], transport=pinus, stubs=stubs)
        print(f"starting a pinus 1.7.4 master and two connectors (Node, rpc over {pinus}) ...",
              flush=True)
    else:
        app = PomeloApp(connectors=["connector-1", "connector-2"])
        print("starting a pomelo 2.2.7 master and two connectors (Node) ...", flush=True)
    await app.start()
    gw = server.create(transport=app.transport, handlers=HANDLERS, registry=app.url("area"),
                       server_info={"id": AREA_ID, "server_type": "area"})
    gw.before(printer.before)
    gw.after(printer.after)
    players = Players(on_event=printer.event)
    try:
        await gw.start()
        printer.line(f"Python area server {AREA_ID} on port {gw.port}, registered with the "
                     f"master; it knows {gw.app.client.server_ids('connector') if gw.app else []}")
        await players.start()
        await asyncio.wait_for(_play(players, app, printer), 60)
    finally:
        await players.stop()
        await gw.stop()
        app.stop()
        shutil.rmtree(stubs, ignore_errors=True)
    print("\n" + ", ".join(f"{n} {what}" for what, n in printer.counts.items())
          + "; everything stopped.")
