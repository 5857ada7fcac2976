"""The backend session: the player's session as a connector forwarded it with a
request (pomelo's BackendSession). Reading and setting its settings is local; ``push``,
``push_all``, ``bind``, ``unbind`` and ``kick`` change the session the connector holds,
through its ``sys.sessionRemote``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .. import core as cores
from ..core.forward import new_session

if TYPE_CHECKING:
    from ..core.forward import SessionFields as _Fields
    from .app import App
else:
    _Fields = cores.default().forward.SessionFields    # compiled: C fields

__all__ = ["BackendSession", "SessionError"]


class SessionError(ValueError):
    """A session object from the network that is not a pomelo session."""


def _why_not(sid: Any, frontend_id: Any, uid: Any, settings: Any) -> str:
    """What is wrong with the fields of a session ``from_wire`` refuses."""
    if type(sid) not in (int, str) or sid == "":
        return f"the session has no id (a number or string): {sid!r:.40}"
    if type(frontend_id) is not str or not frontend_id:
        return f"the session has no frontendId: {frontend_id!r:.40}"
    if uid is not None and type(uid) not in (str, int, float):
        return f"the session's uid is not a string or number: {uid!r:.40}"
    return f"the session's settings are not an object: {settings!r:.40}"


class BackendSession(_Fields):
    """One player's session, as forwarded: ``id`` (its JSON type kept: a number from
    hybrid and sio connectors), ``frontend_id`` (the connector), ``uid`` (None before
    bind), ``settings``."""

    __slots__ = ()      # the fields are the core's (``core.forward.SessionFields``)

    def __init__(self, app: App, sid: Any, frontend_id: str, uid: Any = None,
                 settings: dict[str, Any] | None = None) -> None:
        self._app = app
        self.id = sid
        self.frontend_id = frontend_id
        self.uid = uid
        self.settings: dict[str, Any] = {} if settings is None else settings

    @classmethod
    def from_wire(cls, app: App, obj: Any) -> BackendSession:
        """The session of pomelo's ``{"id", "frontendId", "uid", "settings"}``;
        SessionError if ``obj`` is not one."""
        session = new_session(cls, app, obj)     # made without __init__ (the core's)
        if session is None:
            if type(obj) is not dict:
                raise SessionError(f"the session is not an object: {obj!r:.80}")
            raise SessionError(_why_not(obj.get("id"), obj.get("frontendId"), obj.get("uid"),
                                        obj.get("settings")))
        result: BackendSession = session
        return result

    def export(self) -> dict[str, Any]:
        """pomelo's form, ``{"id", "frontendId", "uid", "settings"}`` (for an rpc
        argument, as Node's ``session.export()``)."""
        return {"id": self.id, "frontendId": self.frontend_id, "uid": self.uid,
                "settings": self.settings}

    def get(self, key: str, default: Any = None) -> Any:
        """A setting (local; what the connector had when it forwarded the request)."""
        return self.settings.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Change a setting here; ``push(key)`` sends it to the connector."""
        self.settings[key] = value

    def _call(self, method: str, *args: Any) -> Any:
        return self._app.sys_call(self.frontend_id, "sessionRemote", method, *args)

    async def push(self, *keys: str) -> None:
        """Send these settings to the connector's session (one call per key)."""
        settings = self.settings
        calls = [self._call("push", self.id, key, settings.get(key)) for key in keys]
        if len(calls) == 1:
            await calls[0]
        elif calls:
            await asyncio.gather(*calls)

    async def push_all(self) -> None:
        """Send every setting to the connector's session (merged into its own)."""
        await self._call("pushAll", self.id, self.settings)

    async def bind(self, uid: Any) -> None:
        """Bind the player's session to ``uid`` on the connector (a RemoteError if it
        is bound to another already); later requests are routed by it."""
        await self._call("bind", self.id, uid)
        self.uid = uid

    async def unbind(self, uid: Any) -> None:
        """Unbind the session from ``uid`` on the connector."""
        await self._call("unbind", self.id, uid)
        self.uid = None

    async def kick(self, reason: str = "kick") -> None:
        """Close the player's connection (the client gets a KICK with ``reason``)."""
        await self._call("kickBySid", self.id, reason)

    # pomelo's names
    pushAll = push_all

    def __repr__(self) -> str:
        return (f"<BackendSession {self.id!r} on {self.frontend_id} uid={self.uid!r} "
                f"settings={self.settings!r:.80}>")
