"""The session service (``app.sessions``): the sessions a connector holds, asked by
session id or uid, and kicks, through the connector's ``sys.sessionRemote`` (pomelo's
BackendSessionService)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .session import BackendSession

if TYPE_CHECKING:
    from .app import App

__all__ = ["SessionService"]


class SessionService:
    """Sessions of the players on the cluster's connectors."""

    def __init__(self, app: App) -> None:
        self.app = app

    def _call(self, frontend_id: str, method: str, *args: Any) -> Any:
        return self.app.sys_call(frontend_id, "sessionRemote", method, *args)

    async def get(self, frontend_id: str, sid: Any) -> BackendSession | None:
        """The session ``sid`` on connector ``frontend_id``, or None if it has none."""
        found = await self._call(frontend_id, "getBackendSessionBySid", sid)
        return None if found is None else BackendSession.from_wire(self.app, found)

    async def get_by_uid(self, frontend_id: str, uid: Any) -> list[BackendSession]:
        """The sessions bound to ``uid`` on connector ``frontend_id`` (maybe none)."""
        found = await self._call(frontend_id, "getBackendSessionsByUid", uid)
        return [BackendSession.from_wire(self.app, s) for s in found or ()]

    async def kick_by_sid(self, frontend_id: str, sid: Any, reason: str = "kick") -> None:
        """Close session ``sid`` on connector ``frontend_id`` (its player gets KICK)."""
        await self._call(frontend_id, "kickBySid", sid, reason)

    async def kick_by_uid(self, frontend_id: str, uid: Any, reason: str = "kick") -> None:
        """Close every session bound to ``uid`` on connector ``frontend_id``."""
        await self._call(frontend_id, "kickByUid", uid, reason)

    # pomelo's names
    getBySid = get
    getByUid = get_by_uid
    kickBySid = kick_by_sid
    kickByUid = kick_by_uid
