"""Health-aware routing: the servers a client knows to be down, and the probes that
bring them back.

A server is *unavailable* from the moment its connection fails (closed under calls in
flight, declared dead by the watchdog of ``pomelo_rpc.liveness``, or a connect that
failed or timed out) until a background probe, never a user call, finds it alive
again: a new connection and a ping answered. Probes start ``probe_backoff`` s after
the failure and each failed one doubles the wait, up to ``probe_backoff_max`` s
(counted from the start of the probe before, so a server healed during a long probe
is found within about that bound). Meanwhile the station refuses calls to it at once
with ``ServerUnavailableError`` (nothing waits in a mailbox queue for a server known
to be down), and the load-spreading routers (rr, wrr, la, rd) leave it out while its
type has another server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ConnectionLostError, ServerUnavailableError
from .security import RateLimitedLog

if TYPE_CHECKING:
    from .station import MailboxLike, MailStation

log = logging.getLogger("pomelo_rpc.health")

__all__ = ["Health"]

#: at most one "unavailable" (and one "available again") line per server this often
LOG_INTERVAL = 5.0


class _Down:
    """One unavailable server: since when, why, and its probe."""

    __slots__ = ("since", "reason", "failures", "backoff", "next_at", "task")

    def __init__(self, since: float, reason: str, backoff: float) -> None:
        self.since = since            # loop time it became unavailable
        self.reason = reason          # the last failure
        self.failures = 1             # the failure that made it down, then failed probes
        self.backoff = backoff        # the wait before the next probe
        self.next_at = since + backoff
        self.task: asyncio.Task[None] | None = None


class Health:
    """The availability of a station's servers; see the module docstring."""

    def __init__(self, station: MailStation, opts: dict[str, Any]) -> None:
        self.station = station
        #: server id -> its state, for the servers down now (empty: all available)
        self.down: dict[str, _Down] = {}
        #: server id -> wall-clock time its availability last changed
        self.changed: dict[str, float] = {}
        #: server id -> connections to it declared dead (metrics)
        self.dead: dict[str, int] = {}
        #: called with a server id when it is available again (failback's waiting calls)
        self.on_back: Callable[[str], None] | None = None
        self._backoff: float = opts["probe_backoff"]
        self._backoff_max: float = max(opts["probe_backoff_max"], self._backoff)
        self._ping_timeout: float = opts["liveness_timeout"] or opts["connect_timeout"]
        self._no_pings: set[str] = set()    # servers known not to answer pings (mqtt)
        self._log = RateLimitedLog(log, LOG_INTERVAL)
        self._loop: asyncio.AbstractEventLoop | None = None   # the station's, once needed
        self.closed = False

    def answers_pings(self, server_id: str) -> bool:
        """False once a connection to ``server_id`` found it does not answer pings."""
        return server_id not in self._no_pings

    def learned(self, mailbox: MailboxLike) -> None:
        """What ``mailbox`` found out about its server (it does not answer pings)."""
        if not getattr(mailbox, "pings_answered", True):
            self._no_pings.add(mailbox.server_id)

    def available(self, server_id: str) -> bool:
        """False while ``server_id`` is down."""
        return server_id not in self.down

    def error(self, server_id: str) -> ServerUnavailableError:
        """The error of a call to ``server_id`` while it is down."""
        down = self.down[server_id]
        assert self._loop is not None
        loop_now = self._loop.time()
        return ServerUnavailableError(
            f"server {server_id} is unavailable for {loop_now - down.since:.1f} s "
            f"({down.reason}); next probe in {max(0.0, down.next_at - loop_now):.1f} s",
            server_id)

    # transitions ---------------------------------------------------------

    def failed(self, mailbox: MailboxLike, reason: str) -> None:
        """``mailbox``'s connection failed (``mailbox.failure``): its server is down
        until a probe finds it back."""
        sid = mailbox.server_id
        if getattr(mailbox, "failure", None) == "dead":
            self.dead[sid] = self.dead.get(sid, 0) + 1
        self.learned(mailbox)
        if self.closed or sid in self.down or sid not in self.station.servers:
            return
        loop = self._loop = asyncio.get_running_loop()
        down = self.down[sid] = _Down(loop.time(), reason, self._backoff)
        self.changed[sid] = time.time()
        self._log.warning("down:" + sid, "server %s is unavailable: %s (probed in the background from "
                          "now on)", sid, reason)
        down.task = loop.create_task(self._probe(sid, down))

    def forget(self, server_id: str) -> None:
        """``server_id`` was removed (or moved): no more probes, no state."""
        down = self.down.pop(server_id, None)
        if down is not None and down.task is not None:
            down.task.cancel()
        self.changed.pop(server_id, None)
        self.dead.pop(server_id, None)
        self._no_pings.discard(server_id)
        self._log.forget("down:" + server_id)
        self._log.forget("back:" + server_id)

    def close(self) -> None:
        """The client stops: every probe ends."""
        self.closed = True
        for sid in list(self.down):
            down = self.down.pop(sid)
            if down.task is not None:
                down.task.cancel()

    # probes ----------------------------------------------------------------

    async def _probe(self, sid: str, down: _Down) -> None:
        """Probe ``sid`` with growing pauses until it answers (or is forgotten)."""
        loop = asyncio.get_running_loop()
        while self.down.get(sid) is down:
            wait = down.next_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            started = loop.time()
            mailbox, error = await self._try(sid)
            if self.down.get(sid) is not down:
                if mailbox is not None:
                    mailbox.abort("probe no longer needed")
                return
            if mailbox is not None:
                self._back(sid, down, mailbox)
                return
            down.failures += 1
            down.reason = error
            down.backoff = min(down.backoff * 2, self._backoff_max)
            down.next_at = started + down.backoff

    async def _try(self, sid: str) -> tuple[MailboxLike | None, str]:
        """One probe: an open mailbox to ``sid`` whose server answered a ping, or None
        and what went wrong."""
        mailbox = self.station.probe_mailbox(sid)
        if mailbox is None:
            return None, "removed"
        try:
            await mailbox.connect()
            ping = getattr(mailbox, "ping", None)
            if ping is not None and self.answers_pings(sid):
                await ping(self._ping_timeout)
        except asyncio.CancelledError:
            mailbox.abort("probe cancelled")
            raise
        except (ConnectionLostError, OSError) as exc:
            mailbox.abort("probe failed")
            return None, str(exc) or repr(exc)
        return mailbox, ""

    def _back(self, sid: str, down: _Down, mailbox: MailboxLike) -> None:
        del self.down[sid]
        self.changed[sid] = time.time()
        loop = asyncio.get_running_loop()
        self._log.info("back:" + sid, "server %s is available again after %.1f s (%d failure(s))",
                       sid, loop.time() - down.since, down.failures)
        self.station.adopt(sid, mailbox)
        if self.on_back is not None:
            self.on_back(sid)

    # state -------------------------------------------------------------------

    def state(self, server_id: str) -> dict[str, Any]:
        """What the client knows of ``server_id``'s health (see ``RpcClient.server_state``)."""
        down = self.down.get(server_id)
        out: dict[str, Any] = {"id": server_id, "available": down is None,
                               "since": self.changed.get(server_id),
                               "dead_connections": self.dead.get(server_id, 0)}
        if down is not None and self._loop is not None:
            now = self._loop.time()
            out.update(reason=down.reason, failures=down.failures,
                       next_probe_in=max(0.0, down.next_at - now))
        return out
