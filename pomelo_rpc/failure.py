"""Fail modes: what a call does when the connection to its server fails.

Only ConnectionLostError triggers them (the server is gone or unreachable), and for
failover also ServerBusyError (the server refused the call at once: it never ran);
a RemoteError or a timeout reaches the caller as it is. Every mode keeps the call's
deadline: a call never waits longer than its timeout in all. A call whose server is
removed (``remove_servers``) or whose client stops fails at once, whatever the mode,
except that failover still tries the other servers of the type.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .errors import (ConnectionLostError, NoServerError, PendingQueueFullError, RpcTimeoutError,
                     ServerBusyError)

if TYPE_CHECKING:
    from .client import RpcClient
    from .station import MailStation

log = logging.getLogger("pomelo_rpc.failure")

FAIL_MODES = ("failfast", "failover", "failsafe", "failback")

#: failback: the longest pause between two attempts to reconnect a server
MAX_RECONNECT_DELAY = 5.0


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Done callback: mark a future's exception as seen (nobody may await it)."""
    if not fut.cancelled():
        fut.exception()


class _Recovery:
    """failback: one server being reconnected, and the calls waiting for it."""

    __slots__ = ("back", "waiters", "task")

    def __init__(self, back: asyncio.Future[None]) -> None:
        self.back = back          # future: result None when the server is back
        self.waiters = 0
        self.task: asyncio.Task[None] | None = None


class FailPolicy:
    """Runs a call through the client's fail mode: ``await run(sid, msg, deadline)``."""

    def __init__(self, client: RpcClient, mode: str) -> None:
        if mode not in FAIL_MODES:
            raise ValueError(f"unknown fail_mode {mode!r}; known: {', '.join(FAIL_MODES)}")
        self.client = client
        self.mode = mode
        opts = client.opts
        self.retry_times: int = opts["retry_times"]
        self.retry_delay: float = opts["retry_connect_time"]
        self.failback_size: int = opts["failback_size"]
        self._failback_waiting = 0
        self._recovering: dict[str, _Recovery] = {}   # server id -> _Recovery (failback)
        # server id -> {future} of failsafe calls between retries
        self._sleepers: dict[str, set[asyncio.Future[None]]] = {}
        self._turn = 0            # failover: spreads the failed calls over the others
        self.run: Callable[[str, dict[str, Any], float], Coroutine[Any, Any, Any]] = getattr(
            self, "_" + mode)

    # shared ------------------------------------------------------------

    def _gone(self, sid: str, exc: BaseException) -> ConnectionLostError | None:
        """The error to raise at once if ``sid`` was removed or the client stopped, else None."""
        if not self.client._started:
            return ConnectionLostError(f"rpc client stopped; {sid}: {exc}")
        if sid not in self.client._station.servers:
            return ConnectionLostError(f"server {sid} was removed; {exc}")
        return None

    async def _send(self, sid: str, msg: dict[str, Any], deadline: float) -> Any:
        if not self.client._started:
            raise ConnectionLostError(f"rpc client stopped before the call to {sid}")
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise RpcTimeoutError(f"{msg['service']}.{msg['method']} to {sid}: "
                                  f"no time left after retries")
        return await self.client._station.mailbox(sid).send(msg, remaining)

    # failfast ------------------------------------------------------------

    async def _failfast(self, sid: str, msg: dict[str, Any], deadline: float) -> Any:
        return await self._send(sid, msg, deadline)

    # failover ------------------------------------------------------------

    async def _failover(self, sid: str, msg: dict[str, Any], deadline: float) -> Any:
        tried: list[str] = []
        while True:
            try:
                return await self._send(sid, msg, deadline)
            except (ConnectionLostError, ServerBusyError) as exc:
                if not self.client._started:
                    raise
                tried.append(sid)
                # the others not down first (docs/liveness.md)
                others = self.client._station.routable(
                    [s for s in self.client.server_ids(msg["server_type"]) if s not in tried])
                if not others:
                    if isinstance(exc, ServerBusyError):
                        raise ServerBusyError(
                            f"failover: every server of type {msg['server_type']!r} failed or "
                            f"was busy ({', '.join(tried)}); last: {exc}", sid) from exc
                    raise ConnectionLostError(
                        f"failover: every server of type {msg['server_type']!r} failed "
                        f"({', '.join(tried)}); last: {exc}") from exc
                self._turn += 1
                nxt = others[self._turn % len(others)]
                log.info("failover: %s failed (%s), trying %s", sid, exc, nxt)
                sid = nxt

    # failsafe ------------------------------------------------------------

    async def _failsafe(self, sid: str, msg: dict[str, Any], deadline: float) -> Any:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                return await self._send(sid, msg, deadline)
            except ConnectionLostError as exc:
                gone = self._gone(sid, exc)
                if gone is not None:
                    raise gone from exc
                attempt += 1
                if attempt > self.retry_times:
                    raise ConnectionLostError(
                        f"failsafe: {sid} failed {attempt} time(s) "
                        f"(retry_times={self.retry_times}); last: {exc}") from exc
                delay = self.retry_delay * attempt
                if loop.time() + delay >= deadline:
                    raise ConnectionLostError(
                        f"failsafe: {sid} failed {attempt} time(s) and the call's timeout "
                        f"ends before retry {attempt}; last: {exc}") from exc
                log.info("failsafe: %s failed (%s), retry %d in %.2fs", sid, exc, attempt, delay)
                await self._sleep(sid, delay)

    async def _sleep(self, sid: str, delay: float) -> None:
        """Sleep ``delay`` s; ends early with ConnectionLostError if ``sid`` is removed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        # the lambda's value is unused: ``or`` only skips set_result on a done future
        handle = loop.call_later(
            delay, lambda: fut.done() or fut.set_result(None))  # type: ignore[func-returns-value]
        sleepers = self._sleepers.setdefault(sid, set())
        sleepers.add(fut)
        try:
            await fut
        finally:
            handle.cancel()
            sleepers.discard(fut)
            if not sleepers and self._sleepers.get(sid) is sleepers:
                del self._sleepers[sid]

    # failback ------------------------------------------------------------

    async def _failback(self, sid: str, msg: dict[str, Any], deadline: float) -> Any:
        while True:
            try:
                return await self._send(sid, msg, deadline)
            except ConnectionLostError as exc:
                gone = self._gone(sid, exc)
                if gone is not None:
                    raise gone from exc
                if self._failback_waiting >= self.failback_size:
                    raise PendingQueueFullError(
                        f"failback: {self._failback_waiting} calls already wait for their "
                        f"server (failback_size={self.failback_size}); {sid}: {exc}") from exc
                self._failback_waiting += 1
                try:
                    await self._wait_back(sid, deadline, exc)
                finally:
                    self._failback_waiting -= 1

    async def _wait_back(self, sid: str, deadline: float, exc: BaseException) -> None:
        """Wait until server ``sid`` accepts a connection again, or the deadline passes."""
        loop = asyncio.get_running_loop()
        rec = self._recovering.get(sid)
        if rec is None:
            back: asyncio.Future[None] = loop.create_future()
            back.add_done_callback(_retrieve)
            rec = self._recovering[sid] = _Recovery(back)
            rec.task = loop.create_task(self._reconnect(sid, rec))
        rec.waiters += 1
        try:
            await asyncio.wait_for(asyncio.shield(rec.back), deadline - loop.time())
        except asyncio.TimeoutError:
            raise RpcTimeoutError(f"failback: {sid} did not come back within the call's "
                                  f"timeout; it failed with: {exc}") from exc
        finally:
            rec.waiters -= 1

    async def _reconnect(self, sid: str, rec: _Recovery) -> None:
        """Try to connect ``sid`` with growing pauses until it answers or nobody waits."""
        station = self.client._station
        delay = self.retry_delay
        while self._recovering.get(sid) is rec:
            await asyncio.sleep(delay)
            if self._recovering.get(sid) is not rec:
                return
            if rec.waiters == 0:    # every waiting call timed out
                del self._recovering[sid]
                return
            error = await self._probe(station, sid)
            if error is not None:
                log.info("failback: %s still away (%s), next try in %.2fs", sid, error, delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY)
                continue
            if self._recovering.get(sid) is rec:
                del self._recovering[sid]
                log.info("failback: %s is back", sid)
                rec.back.set_result(None)
            return

    @staticmethod
    async def _probe(station: MailStation,
                     sid: str) -> NoServerError | ConnectionLostError | None:
        """Connect ``sid``'s mailbox; None when open, else what went wrong."""
        try:
            await station.mailbox(sid).connect()
        except (NoServerError, ConnectionLostError) as exc:
            return exc
        return None

    # server removed, client stopped -------------------------------------

    def _end(self, sid: str, error: BaseException) -> None:
        rec = self._recovering.pop(sid, None)
        if rec is not None:
            if not rec.back.done():
                rec.back.set_exception(error)
            if rec.task is not None:
                rec.task.cancel()
        for fut in self._sleepers.pop(sid, ()):
            if not fut.done():
                fut.set_exception(error)

    def server_back(self, sid: str) -> None:
        """``sid`` is available again (a health probe reached it): failback's calls
        waiting for it go now."""
        rec = self._recovering.pop(sid, None)
        if rec is not None:
            if not rec.back.done():
                rec.back.set_result(None)
            if rec.task is not None:
                rec.task.cancel()

    def server_removed(self, sid: str) -> None:
        """Calls waiting for ``sid`` (failsafe, failback) fail now: it was removed."""
        self._end(sid, ConnectionLostError(f"server {sid} was removed"))

    def close(self) -> None:
        """Stop reconnecting; the calls waiting in failsafe or failback fail now."""
        for sid in set(self._recovering) | set(self._sleepers):
            self._end(sid, ConnectionLostError(f"rpc client stopped while {sid} was away"))
