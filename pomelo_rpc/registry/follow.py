"""The client side of membership: apply each cluster snapshot to the client's server list.

Changes go through the same station methods as ``add_servers``/``remove_servers``; a
server whose record says ``leaving`` (or whose last record said so before it went) is
retired: no new calls, its calls already sent are still answered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .base import LEAVING, Listener, Record, Registry

log = logging.getLogger("pomelo_rpc.registry.follow")

__all__ = ["Follower", "Borrowed"]


class StationLike(Protocol):
    """What the follower uses of the client's MailStation."""

    servers: dict[str, dict[str, Any]]
    by_type: dict[str, list[str]]

    def add_servers(self, servers: Iterable[Mapping[str, Any]]) -> None: ...
    def remove_servers(self, ids: Iterable[str]) -> None: ...
    def retire_servers(self, ids: Iterable[str]) -> None: ...


class Follower:
    """Keeps a station's registry-managed servers equal to the registry's snapshot.

    Servers added by hand (``add_servers``) are left alone unless the registry names
    them too. Each type's list is kept sorted by id, so that every client following
    the same cluster routes a uid to the same server.
    """

    def __init__(self, station: StationLike, registry: Registry) -> None:
        self.station = station
        self.registry = registry
        self.known: dict[str, Record] = {}   # the last snapshot, by server id

    async def start(self) -> None:
        """Open the registry and apply its first snapshot (then follow its changes)."""
        try:
            await self.registry.open()
            self.apply(await self.registry.watch(self.apply))
        except BaseException:
            await self.registry.close()
            raise

    async def close(self) -> None:
        """Stop following (the servers known stay in the list)."""
        await self.registry.close()

    def apply(self, snapshot: dict[str, Record]) -> None:
        """Make the station follow ``snapshot`` (the whole cluster, by id)."""
        station, known = self.station, self.known
        joined = [rec for sid, rec in sorted(snapshot.items())
                  if not rec.get(LEAVING) and known.get(sid) != rec]
        leaving = [sid for sid, rec in snapshot.items()
                   if rec.get(LEAVING) and sid in station.servers]
        gone = [sid for sid in known if sid not in snapshot]
        vanished = [sid for sid in gone if not known[sid].get(LEAVING)]
        self.known = dict(snapshot)
        if not (joined or leaving or vanished):
            return
        if leaving:
            log.info("registry: %s leaving: no new calls", ", ".join(sorted(leaving)))
            station.retire_servers(leaving)
        if vanished:
            log.info("registry: %s vanished: calls in flight fail", ", ".join(sorted(vanished)))
            station.remove_servers(vanished)
        if joined:
            log.info("registry: %s", ", ".join(
                f"{rec['id']} ({rec['server_type']} at {rec['host']}:{rec['port']})"
                for rec in joined))
            station.add_servers(joined)
            for server_type in {rec["server_type"] for rec in joined}:
                station.by_type[server_type].sort()   # in place: routers may hold the list


class Borrowed:
    """A registry another owner opened and registered with (a gateway), followed by a
    client of that process: ``watch`` is the owner's registry's, ``open`` and ``close``
    leave it as it is. With ``pomelo://`` the master's list comes with the server's
    own registration: following it costs no second registration."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def open(self) -> None:
        """Nothing: the owner opened it."""

    async def register(self, record: Record) -> None:
        """Refused: only the owner registers."""
        raise RuntimeError("a borrowed registry registers nothing")

    async def deregister(self, server_id: str) -> None:
        """Nothing: the owner leaves."""

    async def watch(self, listener: Listener) -> dict[str, Record]:
        """The owner's registry's list, and ``listener`` told of its changes."""
        return await self.registry.watch(listener)

    async def close(self) -> None:
        """Nothing: the owner closes it (and stops the listener then)."""
