"""What the file, Redis and etcd backends share: keeping records alive, graceful leave,
following the cluster through engine outages.

A backend subclasses ``EngineRegistry`` and implements five hooks: ``_connect``,
``_put`` (write or refresh one record), ``_delete``, ``_snapshot`` (the cluster's
records now) and ``_follow`` (deliver every change with ``_deliver(full_map)`` until the
engine fails, by raising one of ``engine_errors``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .base import LEAVING, Backoff, Listener, OutageHold, Record, RegistryError, check_cluster

log = logging.getLogger("pomelo_rpc.registry")

__all__ = ["EngineRegistry"]


class EngineRegistry:
    """Base of the engine backends; see the module docstring for the hooks."""

    #: errors of the engine's client that mean "unreachable or failed: retry later"
    engine_errors: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError)
    #: a leaving record stays this long (s) before it is deleted, so every client sees it
    notice_delay = 1.0

    def __init__(self, url: str, *, cluster: str, ttl: float, connect_timeout: float) -> None:
        if ttl <= 0:
            raise ValueError(f"registry ttl must be > 0, not {ttl!r}")
        self.url = url
        self.cluster = check_cluster(cluster)
        self.ttl = float(ttl)
        self.connect_timeout = connect_timeout
        self._mine: dict[str, Record] = {}          # records this process keeps alive
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Listener | None = None
        self._hold = OutageHold(self.ttl)
        self._fresh: dict[str, Record] = {}          # the engine's records, last seen
        self._current: dict[str, Record] = {}        # what the listener got last
        self._outage = False
        self._recheck: asyncio.TimerHandle | None = None
        self._follow_backoff = Backoff(most=1.0)
        # set by close(): the loops check it too, since asyncio.wait_for may swallow a
        # cancellation before Python 3.12 (when its inner call completes at that moment)
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} cluster={self.cluster}>"

    # hooks -----------------------------------------------------------------

    async def _connect(self) -> None:
        raise NotImplementedError

    async def _put(self, record: Record, refresh: bool) -> None:
        """Write ``record`` (``refresh``: the same record again, to keep it alive)."""
        raise NotImplementedError

    async def _delete(self, server_id: str) -> None:
        raise NotImplementedError

    async def _snapshot(self) -> dict[str, Record]:
        raise NotImplementedError

    async def _follow(self) -> None:
        raise NotImplementedError

    async def _disconnect(self) -> None:
        """Release the engine's client (after the tasks are cancelled)."""

    # helpers -------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    async def _engine(self, what: str, coro: Any) -> Any:
        """Await ``coro`` within ``connect_timeout``; an engine error is a RegistryError."""
        try:
            return await asyncio.wait_for(coro, self.connect_timeout)
        except self.engine_errors as exc:
            raise RegistryError(f"{self.url}: {what} failed: {type(exc).__name__}: "
                                f"{exc}") from exc

    async def _keep_alive(self) -> None:
        backoff = Backoff(most=max(0.05, self.ttl / 4))
        while not self._closed:
            await asyncio.sleep(self.ttl / 3)
            while self._mine and not self._closed:
                try:
                    for record in list(self._mine.values()):
                        await asyncio.wait_for(self._put(record, True), self.connect_timeout)
                except self.engine_errors + (RegistryError,) as exc:
                    await backoff.failed(f"keeping {', '.join(self._mine)} alive in "
                                         f"{self.url}", exc)
                    continue
                backoff.succeeded(f"keeping records alive in {self.url}")
                break

    async def _follow_forever(self) -> None:
        while not self._closed:
            try:
                await self._follow()
            except self.engine_errors as exc:
                self._outage = True
                await self._follow_backoff.failed(
                    f"following cluster {self.cluster} in {self.url} (keeping the last list)",
                    exc)

    def _deliver(self, fresh: dict[str, Record]) -> None:
        """Backends call this with the engine's full current map after each change."""
        resync = self._outage
        if resync:
            self._outage = False
            self._follow_backoff.succeeded(f"following cluster {self.cluster} in {self.url}")
            self._hold.lost(self._fresh, fresh)
        self._fresh = fresh
        merged = self._hold.merge(fresh)
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        delay = self._hold.next_expiry()
        if delay is not None:
            self._recheck = asyncio.get_running_loop().call_later(
                delay + 0.01, lambda: self._deliver(self._fresh))
        if (merged != self._current or resync) and self._listener is not None:
            self._current = merged
            try:
                self._listener(dict(merged))
            except Exception:     # the listener's bug must not stop the following
                log.exception("registry: the listener of cluster %s failed", self.cluster)

    # the protocol --------------------------------------------------------

    async def open(self) -> None:
        """Connect; RegistryError within ``connect_timeout`` if unreachable.

        Failed attempts are retried until then (an engine restarting, or a busy one
        slow to finish its handshake, is not an error yet).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        delay = 0.05
        while True:
            try:
                await asyncio.wait_for(self._connect(), max(0.01, deadline - loop.time()))
                return
            except self.engine_errors as exc:
                if loop.time() + delay >= deadline:
                    raise RegistryError(f"{self.url}: connecting failed: "
                                        f"{type(exc).__name__}: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.5)

    async def register(self, record: Record) -> None:
        """Publish ``record`` and keep it alive (every ttl/3) until deregister/close."""
        await self._engine(f"registering {record['id']}", self._put(record, False))
        self._mine[record["id"]] = record
        if not any(t.get_name() == "keepalive" for t in self._tasks):
            self._spawn(self._keep_alive())
            self._tasks[-1].set_name("keepalive")

    async def deregister(self, server_id: str) -> None:
        """Mark the record leaving, wait ``notice_delay`` so every client sees it,
        delete it."""
        record = self._mine.pop(server_id, None)
        if record is None:
            return
        await self._engine(f"deregistering {server_id}",
                           self._put(dict(record, **{LEAVING: True}), False))
        await asyncio.sleep(self.notice_delay)
        await self._engine(f"deleting {server_id}", self._delete(server_id))

    async def watch(self, listener: Listener) -> dict[str, Record]:
        """The cluster's records now; then ``listener(records)`` after every change."""
        self._fresh = self._current = await self._engine("reading the cluster",
                                                         self._snapshot())
        self._listener = listener
        self._spawn(self._follow_forever())
        return dict(self._current)

    async def close(self) -> None:
        """Stop keeping records alive and following; records not deregistered expire."""
        self._closed = True
        self._mine.clear()
        self._listener = None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:     # a task that swallowed its cancellation ends at its next check
            await asyncio.wait(tasks, timeout=1.0)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("registry: %s had crashed", task, exc_info=task.exception())
        if self._recheck is not None:
            self._recheck.cancel()
        await self._disconnect()
