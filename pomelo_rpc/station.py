"""The mail station: the client's server list and one mailbox per server, opened lazily;
which servers are down (``pomelo_rpc.health``) and the watchdog of the open
connections (``pomelo_rpc.liveness``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import NoServerError
from .health import Health
from .liveness import Watchdog, tick_period
from .mailbox import CONNECTING, NativeMailbox
from .mqtt_mailbox import MqttMailbox
from .pinus_tcp_mailbox import PinusTcpMailbox
from .registry.base import normalize_server

__all__ = ["MailStation", "normalize_server", "register_transport"]

if TYPE_CHECKING:
    from typing import Protocol

    from .core import Core

    class MailboxLike(Protocol):
        """What the station and the client use of a mailbox (``Mailbox`` or a custom
        one from ``mailbox_factory``)."""

        on_close: Callable[[Any], None] | None   # callable(mailbox), set by the station
        # optional (the station reads them with getattr): on_state, failure, close_reason,
        # pings_answered, ping(timeout), check_liveness(now, stalled)

        @property
        def server_id(self) -> str: ...
        @property
        def in_flight(self) -> int: ...
        def send(self, msg: dict[str, Any], timeout: float | None = ...) -> Awaitable[Any]: ...
        async def connect(self) -> None: ...
        def abort(self, reason: str = ...) -> None: ...
        async def close(self, reason: str = ...) -> None: ...

    #: ``mailbox_class(server_info, opts, core)``
    MailboxClass = Callable[[dict[str, Any], dict[str, Any], Core], MailboxLike]

log = logging.getLogger("pomelo_rpc.station")

#: seconds between two checks for retiring mailboxes whose calls are all answered
RETIRE_POLL = 0.05

_MAILBOXES: dict[str, MailboxClass] = {"native": NativeMailbox}


def register_transport(name: str, mailbox_class: MailboxClass) -> None:
    """Make ``transport=name`` build ``mailbox_class(server_info, opts, core)``."""
    _MAILBOXES[name] = mailbox_class


register_transport("mqtt", MqttMailbox)
register_transport("pinus-tcp", PinusTcpMailbox)


class MailStation:
    """Server infos by id and type, and the mailboxes to them."""

    def __init__(self, opts: dict[str, Any], core: Core) -> None:
        self.opts = opts
        self.core = core
        self.servers: dict[str, dict[str, Any]] = {}   # id -> info
        self.by_type: dict[str, list[str]] = {}        # server_type -> [ids], in the order added
        self.mailboxes: dict[str, MailboxLike] = {}    # id -> mailbox
        # callable(server_id), called for each server removed
        self.on_removed: Callable[[str], None] | None = None
        # mailboxes of servers that left gracefully, closed once their calls are answered
        self._retiring: set[MailboxLike] = set()
        self._retire_task: asyncio.Task[None] | None = None
        #: servers down now, probed until they answer again (docs/liveness.md)
        self.health = Health(self, opts)
        #: servers whose connection has been opening for ``liveness_interval`` s or more:
        #: the load-spreading routers leave them out while their type has another
        self.slow: set[str] = set()
        #: the one timer checking the liveness of the open connections
        self.watchdog = Watchdog(self._live_mailboxes, tick_period(opts))
        factory = opts["mailbox_factory"]
        if factory is None:
            transport = opts["transport"]
            if transport not in _MAILBOXES:
                raise ValueError(f"unknown transport {transport!r}; "
                                 f"known: {', '.join(sorted(_MAILBOXES))}")
            cls = _MAILBOXES[transport]
            factory = lambda info, o: cls(info, o, core)  # noqa: E731
        self._factory: Callable[[dict[str, Any], dict[str, Any]], MailboxLike] = factory

    def add_servers(self, servers: Iterable[Mapping[str, Any]]) -> None:
        """Add or update server infos.

        A known server keeps its place in its type's list (so the default router's
        choices stay put); a changed address closes its old connection.
        """
        for raw in servers:
            info = normalize_server(raw)
            sid = info["id"]
            old = self.servers.get(sid)
            if old is not None:
                if old["server_type"] != info["server_type"]:
                    self.remove_servers([sid])
                else:
                    self.servers[sid] = info
                    if (old["host"], old["port"]) != (info["host"], info["port"]):
                        self._drop_mailbox(sid, f"server {sid} moved to "
                                                f"{info['host']}:{info['port']}")
                        self.health.forget(sid)      # a new address gets a fresh start
                    continue
            self.servers[sid] = info
            self.by_type.setdefault(info["server_type"], []).append(sid)

    def remove_servers(self, ids: Iterable[str]) -> None:
        """Forget servers; their calls in flight fail at once with ConnectionLostError."""
        for sid in ids:
            if self._forget(sid):
                self._drop_mailbox(sid, f"server {sid} was removed")
                self._removed(sid)

    def retire_servers(self, ids: Iterable[str]) -> None:
        """Forget servers that leave gracefully: they get no new calls, but their
        connections stay open until the calls already sent are answered (or time out)."""
        for sid in ids:
            if not self._forget(sid):
                continue
            mailbox = self.mailboxes.pop(sid, None)
            self.slow.discard(sid)
            if mailbox is not None:
                mailbox.on_close = self._retiring.discard
                self._retiring.add(mailbox)
                if self._retire_task is None:
                    self._retire_task = asyncio.get_running_loop().create_task(
                        self._close_retired())
            self._removed(sid)

    async def _close_retired(self) -> None:
        """Close each retiring mailbox once it has no call in flight."""
        try:
            while self._retiring:
                for mailbox in [m for m in self._retiring if not m.in_flight]:
                    self._retiring.discard(mailbox)
                    mailbox.on_close = None
                    await mailbox.close(f"server {mailbox.server_id} left")
                await asyncio.sleep(RETIRE_POLL)
        finally:
            self._retire_task = None

    def _forget(self, sid: str) -> bool:
        """Drop ``sid`` from the server list and routing; False if it was unknown."""
        info = self.servers.pop(sid, None)
        if info is None:
            return False
        self.health.forget(sid)
        ids_of_type = self.by_type.get(info["server_type"])
        if ids_of_type is not None:
            ids_of_type.remove(sid)
            if not ids_of_type:
                del self.by_type[info["server_type"]]
        return True

    def _removed(self, sid: str) -> None:
        if self.on_removed is not None:
            self.on_removed(sid)

    def _drop_mailbox(self, sid: str, reason: str) -> None:
        self.slow.discard(sid)
        mailbox = self.mailboxes.pop(sid, None)
        if mailbox is not None:
            mailbox.on_close = None
            mailbox.abort(reason)

    def replace_servers(self, servers: Iterable[Mapping[str, Any]]) -> None:
        """Make the server list exactly ``servers``, in their order.

        Servers that stay, at the same address, keep their connections.
        """
        infos = [normalize_server(s) for s in servers]
        keep = {info["id"] for info in infos}
        self.remove_servers([sid for sid in list(self.servers) if sid not in keep])
        self.add_servers(infos)
        by_type: dict[str, list[str]] = {}
        for info in infos:
            ids = by_type.setdefault(info["server_type"], [])
            if info["id"] not in ids:
                ids.append(info["id"])
        for server_type, ids in by_type.items():
            self.by_type[server_type][:] = ids   # in place: routers may hold the list

    def mailbox(self, sid: str) -> MailboxLike:
        """The mailbox to server ``sid``, created (not yet connected) on first use;
        ServerUnavailableError while ``sid`` is down (the call is not sent)."""
        mailbox = self.mailboxes.get(sid)
        if mailbox is None:
            info = self.servers.get(sid)
            if info is None:
                raise NoServerError(f"unknown server id {sid!r}")
            if sid in self.health.down:
                raise self.health.error(sid)
            mailbox = self._factory(info, self.opts)
            self._attach(sid, mailbox)
        return mailbox

    def _attach(self, sid: str, mailbox: MailboxLike) -> None:
        mailbox.on_close = self._mailbox_closed
        if not self.health.answers_pings(sid):
            mailbox.pings_answered = False      # type: ignore[attr-defined]
        if hasattr(mailbox, "on_state"):
            mailbox.on_state = self._mailbox_state
        self.mailboxes[sid] = mailbox

    def probe_mailbox(self, sid: str) -> MailboxLike | None:
        """A new mailbox to ``sid`` outside the station (a health probe's), or None
        if ``sid`` is no longer known."""
        info = self.servers.get(sid)
        if info is None:
            return None
        mailbox = self._factory(info, self.opts)
        if not self.health.answers_pings(sid):
            mailbox.pings_answered = False      # type: ignore[attr-defined]
        return mailbox

    def adopt(self, sid: str, mailbox: MailboxLike) -> None:
        """A probe's open mailbox becomes ``sid``'s (its connection is reused)."""
        if sid not in self.servers or sid in self.mailboxes:
            mailbox.abort("not needed")
            return
        self._attach(sid, mailbox)
        self.watchdog.kick()

    def _live_mailboxes(self) -> list[MailboxLike]:
        return list(self.mailboxes.values()) + list(self._retiring)

    def _mailbox_state(self, mailbox: MailboxLike) -> None:
        """A mailbox of the station began connecting, was slow to, or opened."""
        sid = mailbox.server_id
        if self.mailboxes.get(sid) is not mailbox:
            return
        if getattr(mailbox, "state", None) == CONNECTING and getattr(mailbox, "slow", False):
            self.slow.add(sid)
        else:
            self.slow.discard(sid)
        self.watchdog.kick()

    def _mailbox_closed(self, mailbox: MailboxLike) -> None:
        sid = mailbox.server_id
        if self.mailboxes.get(sid) is mailbox:
            del self.mailboxes[sid]
            self.slow.discard(sid)
        self.health.learned(mailbox)
        if getattr(mailbox, "failure", None) is not None:
            self.health.failed(mailbox, getattr(mailbox, "close_reason", None) or "failed")

    def routable(self, ids: list[str]) -> list[str]:
        """The servers of ``ids`` a load-spreading router should choose from: those
        neither down nor slow to connect, else those not down, else all of them (whose
        calls then fail at once with ServerUnavailableError)."""
        down = self.health.down
        slow = self.slow
        if not down and not slow:
            return ids
        ready = [sid for sid in ids if sid not in down and sid not in slow]
        if ready:
            return ready
        return [sid for sid in ids if sid not in down] or ids

    def in_flight(self, sid: str) -> int:
        """Calls in flight to server ``sid``."""
        mailbox = self.mailboxes.get(sid)
        return mailbox.in_flight if mailbox is not None else 0

    async def close(self, reason: str = "client stopped") -> None:
        """Close every mailbox (those of retiring servers too)."""
        if self._retire_task is not None:
            self._retire_task.cancel()
        self.health.close()
        self.watchdog.close()
        self.slow.clear()
        mailboxes = list(self.mailboxes.values()) + list(self._retiring)
        self.mailboxes.clear()
        self._retiring.clear()
        for mailbox in mailboxes:
            mailbox.on_close = None
            await mailbox.close(reason)
