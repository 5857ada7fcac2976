"""The Registry protocol: where servers publish their record and clients follow the cluster.

A *record* is a normalized server info (``station.normalize_server``): ``id``,
``server_type``, ``host``, ``port``, plus any extra keys (``weight``, pomelo's own)
that travel with it. A backend keeps one record per live server of one *cluster*.

Graceful versus vanished: ``deregister`` first publishes the record with
``"leaving": True``, then deletes it. A client gives a leaving server no new calls but
keeps its connection until the calls already sent are answered; a server that
disappears without leaving (TTL expired, lease lost) fails its calls in flight at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ..errors import RpcError

__all__ = ["Record", "Listener", "RegistryError", "Registry", "LEAVING"]

#: A normalized server info: id, server_type, host, port, plus extras.
Record = dict[str, Any]
#: ``listener(full_current_map)``, called after every change (and after each resync).
Listener = Callable[[dict[str, Record]], None]

#: The record key a graceful leave sets before the record is deleted.
LEAVING = "leaving"


class RegistryError(RpcError):
    """The membership engine is unreachable or refused an operation."""


@runtime_checkable
class Registry(Protocol):
    """Membership of one cluster on one engine (see the module docstring)."""

    async def open(self) -> None:
        """Connect; RegistryError within ``connect_timeout`` if the engine is unreachable."""

    async def register(self, record: Record) -> None:
        """Publish this server's record and keep it alive (ttl) until deregister/close.

        The record is published again whenever the engine comes back, even empty.
        """

    async def deregister(self, server_id: str) -> None:
        """Graceful leave: publish the record with ``leaving: True``, then delete it."""

    async def watch(self, listener: Listener) -> dict[str, Record]:
        """Return the cluster's current ``{id: record}``; afterwards call ``listener``
        with the full current map after every change (and after each resync)."""

    async def close(self) -> None:
        """Stop keeping records alive and watching; release the connection."""
