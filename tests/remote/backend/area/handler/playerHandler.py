"""The test area's handler (tests/test_backend.py): one method per behaviour tested."""

import asyncio

from pomelo_rpc.backend import HandlerError


class PlayerHandler:
    def __init__(self, app):
        self.app = app
        self.notes = []            # what notifies brought
        self.release = None        # slow(): waits for this event

    def echo(self, msg, session):
        return {"code": 200, "msg": msg, "server": self.app.server_id, "sid": session.id,
                "uid": session.uid, "frontend": session.frontend_id,
                "settings": session.settings}

    async def later(self, msg, session):
        await asyncio.sleep(0)
        return {"code": 200, "later": msg["n"]}

    def note(self, msg, session):
        self.notes.append(msg["text"])

    def notes_seen(self, msg, session):
        return {"code": 200, "notes": list(self.notes)}

    def nothing(self, msg, session):
        return None

    def fail(self, msg, session):
        raise RuntimeError("boom")

    def refuse(self, msg, session):
        raise HandlerError("not enough gold", code=msg.get("code", 501))

    async def login(self, msg, session):
        await session.bind(msg["uid"])
        return {"code": 200, "uid": session.uid}

    async def logout(self, msg, session):
        await session.unbind(session.uid)
        return {"code": 200}

    async def remember(self, msg, session):
        for key, value in msg["set"].items():
            session.set(key, value)
        if msg.get("all"):
            await session.push_all()
        else:
            await session.push(*msg["set"])
        return {"code": 200}

    async def join(self, msg, session):
        self.app.channels.get(msg["channel"], create=True).add(session.uid, session.frontend_id)
        return {"code": 200}

    async def say(self, msg, session):
        channel = self.app.channels.get(msg["channel"])
        failed = await channel.push("onChat", {"from": session.uid, "text": msg["text"]})
        return {"code": 200, "failed": failed, "members": sorted(channel.members())}

    async def whisper(self, msg, session):
        failed = await self.app.channels.push_by_uids(
            "onWhisper", {"from": session.uid, "text": msg["text"]},
            [(uid, fid) for uid, fid in msg["to"]])
        return {"code": 200, "failed": failed}

    async def shout(self, msg, session):
        await self.app.channels.broadcast("connector", "onShout", {"from": session.uid},
                                          binded=msg.get("binded", True))
        return {"code": 200}

    async def kick(self, msg, session):
        if msg.get("uid"):
            await self.app.sessions.kick_by_uid(msg["frontend"], msg["uid"], "bye")
        else:
            await session.kick("bye")
        return {"code": 200}

    async def lookup(self, msg, session):
        one = await self.app.sessions.get(session.frontend_id, session.id)
        many = await self.app.sessions.get_by_uid(session.frontend_id, session.uid)
        missing = await self.app.sessions.get(session.frontend_id, 999999)
        return {"code": 200, "one": one.export(), "many": [s.export() for s in many],
                "missing": missing}

    async def ask_node(self, msg, session):
        who = await self.app.rpc.node.relayRemote.whoami.to_server("node-1")
        routed = await self.app.rpc.node.relayRemote.whoami(session)
        return {"code": 200, "who": who["id"], "routed": routed["id"]}

    async def slow(self, msg, session):
        await asyncio.sleep(msg["seconds"])
        return {"code": 200, "slept": msg["seconds"]}


def create(app):
    return PlayerHandler(app)
