"""The channel service (``app.channels``): named groups of players across connectors,
pushed to with one ``sys.channelRemote.pushMessage`` per connector (pomelo's
ChannelService); pushes to given uids and broadcasts to every player of a connector
type. The members live in this process, as in pomelo's (a channel is the backend's)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("pomelo_rpc.backend.channels")

__all__ = ["Channel", "ChannelService"]

#: uids by frontend (connector) id
Groups = Mapping[str, Iterable[Any]]


def push_options(user_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """pomelo's options of a push (``channelRemote.pushMessage``'s fourth argument)."""
    return {"type": "push", "userOptions": dict(user_options or {}), "isPush": True}


def broadcast_options(binded: bool) -> dict[str, Any]:
    """pomelo's options of a broadcast (``channelRemote.broadcast``'s third argument)."""
    return {"type": "broadcast", "userOptions": {"binded": binded}, "isBroadcast": True,
            "binded": binded}


class Channel:
    """Players (uid, frontend id) receiving the pushes of one name."""

    def __init__(self, service: ChannelService, name: str) -> None:
        self.service = service
        self.name = name
        self._groups: dict[str, dict[Any, None]] = {}   # frontend id -> uids (ordered)
        self._records: dict[Any, str] = {}               # uid -> frontend id

    def add(self, uid: Any, frontend_id: str) -> bool:
        """Add a player (False if already there on that connector)."""
        group = self._groups.setdefault(frontend_id, {})
        if uid in group:
            return False
        group[uid] = None
        self._records[uid] = frontend_id
        return True

    def leave(self, uid: Any, frontend_id: str) -> bool:
        """Remove a player (False if it was not there on that connector)."""
        group = self._groups.get(frontend_id)
        if group is None or uid not in group:
            return False
        del group[uid]
        if not group:
            del self._groups[frontend_id]
        if self._records.get(uid) == frontend_id:
            del self._records[uid]
        return True

    def members(self) -> list[Any]:
        """The uids of the channel."""
        return [uid for group in self._groups.values() for uid in group]

    def member(self, uid: Any) -> str | None:
        """The frontend id of member ``uid`` (None if not a member)."""
        return self._records.get(uid)

    def __len__(self) -> int:
        return sum(len(group) for group in self._groups.values())

    async def push(self, route: str, msg: Any, options: Mapping[str, Any] | None = None
                   ) -> list[Any]:
        """Push ``msg`` on ``route`` to every member: one call per connector; the uids
        that failed (not on their connector any more, or the connector's call failed)."""
        return await self.service.push_groups(route, msg, self._groups, options)

    pushMessage = push     # pomelo's name

    def __repr__(self) -> str:
        return f"<Channel {self.name!r} {len(self)} members>"


class ChannelService:
    """The channels of this server, and pushes to players by uid."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.channels: dict[str, Channel] = {}

    @overload
    def get(self, name: str, create: Literal[True]) -> Channel: ...
    @overload
    def get(self, name: str, create: bool = False) -> Channel | None: ...

    def get(self, name: str, create: bool = False) -> Channel | None:
        """Channel ``name``; with ``create``, made if it does not exist."""
        channel = self.channels.get(name)
        if channel is None and create:
            channel = self.channels[name] = Channel(self, name)
        return channel

    def create(self, name: str) -> Channel:
        """Channel ``name``, made if it does not exist (pomelo's ``createChannel``)."""
        return self.get(name, create=True)

    def destroy(self, name: str) -> None:
        """Forget channel ``name``."""
        self.channels.pop(name, None)

    async def push_by_uids(self, route: str, msg: Any, receivers: Iterable[Any],
                           options: Mapping[str, Any] | None = None) -> list[Any]:
        """Push to ``[(uid, frontend_id), ...]`` (or pomelo's ``[{"uid", "sid"}]``): one
        call per connector; the uids that failed."""
        groups: dict[str, dict[Any, None]] = {}
        for receiver in receivers:
            if isinstance(receiver, Mapping):
                uid, frontend_id = receiver["uid"], receiver["sid"]
            else:
                uid, frontend_id = receiver
            groups.setdefault(frontend_id, {})[uid] = None
        if not groups:
            raise ValueError("push_by_uids: no receivers")
        return await self.push_groups(route, msg, groups, options)

    async def push_groups(self, route: str, msg: Any, groups: Groups,
                          options: Mapping[str, Any] | None = None) -> list[Any]:
        """Push to the uids of each connector in ``groups``; the uids that failed."""
        if msg is None:
            raise ValueError("can not push an empty message (None)")
        opts = push_options(options)
        targets = [(fid, list(uids)) for fid, uids in groups.items() if uids]
        if not targets:
            return []
        calls = [self.app.sys_call(fid, "channelRemote", "pushMessage", route, msg, uids, opts)
                 for fid, uids in targets]
        outcomes: list[Any]
        if len(calls) == 1:      # one connector (the common case): no gather
            try:
                outcomes = [await calls[0]]
            except Exception as exc:
                outcomes = [exc]
        else:
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        failed: list[Any] = []
        for (fid, uids), outcome in zip(targets, outcomes):
            if isinstance(outcome, BaseException):
                log.warning("pushing %s to %d player(s) on %s failed: %s", route, len(uids),
                            fid, outcome)
                failed.extend(uids)
            elif outcome:
                failed.extend(outcome)
        return failed

    async def broadcast(self, frontend_type: str, route: str, msg: Any,
                        binded: bool = True) -> None:
        """Push to every player of every connector of ``frontend_type`` (only those
        bound to a uid when ``binded``). RpcError if every connector failed."""
        servers = list(self.app.client.server_ids(frontend_type))
        if not servers:
            return
        opts = broadcast_options(binded)
        outcomes = await asyncio.gather(
            *(self.app.sys_call(fid, "channelRemote", "broadcast", route, msg, opts)
              for fid in servers), return_exceptions=True)
        errors = [(fid, o) for fid, o in zip(servers, outcomes) if isinstance(o, BaseException)]
        for fid, exc in errors:
            log.warning("broadcasting %s on %s failed: %s", route, fid, exc)
        if errors and len(errors) == len(servers):
            raise errors[0][1]

    # pomelo's names
    getChannel = get
    createChannel = create
    destroyChannel = destroy
    pushMessageByUids = push_by_uids
