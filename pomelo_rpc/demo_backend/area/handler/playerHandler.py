"""The area server of ``./dev demo --pomelo`` and ``bench/backend.py``: players move
(``move``, what the bench sends, the same as the Node area's playerHandler.js), join
the world channel, chat in it and name themselves (a setting pushed to the session)."""

from __future__ import annotations

import asyncio
from typing import Any

from pomelo_rpc.backend import App, BackendSession


class PlayerHandler:
    def __init__(self, app: App) -> None:
        self.app = app
        self.positions: dict[Any, tuple[Any, Any]] = {}

    def move(self, msg: dict[str, Any], session: BackendSession) -> dict[str, Any]:
        """``{x, y, push?}``: the position kept; with ``push``, onMove pushed to the
        player (not awaited, as the Node area does not wait for it either)."""
        uid = session.uid
        x, y = msg.get("x"), msg.get("y")
        self.positions[uid] = (x, y)
        if msg.get("push"):
            asyncio.ensure_future(self.app.channels.push_by_uids(
                "onMove", {"uid": uid, "x": x, "y": y}, [(uid, session.frontend_id)]))
        return {"code": 200, "x": x, "y": y}

    async def enter(self, msg: dict[str, Any], session: BackendSession) -> dict[str, Any]:
        """Join the world channel; everyone in it hears of the newcomer."""
        world = self.app.channels.get("world", create=True)
        world.add(session.uid, session.frontend_id)
        await world.push("onEnter", {"uid": session.uid})
        return {"code": 200, "players": sorted(world.members())}

    async def walk(self, msg: dict[str, Any], session: BackendSession) -> dict[str, Any]:
        """Move and tell the world channel."""
        self.move(msg, session)
        await self.app.channels.get("world", create=True).push(
            "onMove", {"uid": session.uid, "x": msg.get("x"), "y": msg.get("y")})
        return {"code": 200}

    async def chat(self, msg: dict[str, Any], session: BackendSession) -> None:
        """Say something to the world channel."""
        await self.app.channels.get("world", create=True).push(
            "onChat", {"from": session.uid, "text": msg.get("text", "")})

    async def rename(self, msg: dict[str, Any], session: BackendSession) -> dict[str, Any]:
        """Set the player's name in its session, on the connector too."""
        session.set("name", msg.get("name"))
        await session.push("name")
        return {"code": 200, "name": session.get("name")}


def create(app: App) -> PlayerHandler:
    return PlayerHandler(app)
