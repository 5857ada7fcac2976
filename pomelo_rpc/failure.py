"""Fail modes: what a call does when the connection to its server fails.

Only ConnectionLostError triggers them (the server is gone or unreachable); a
RemoteError or a timeout reaches the caller as it is. Every mode keeps the call's
deadline: a call never waits longer than its timeout in all.
"""

import asyncio
import logging

from .errors import ConnectionLostError, NoServerError, PendingQueueFullError, RpcTimeoutError

log = logging.getLogger("pomelo_rpc.failure")

FAIL_MODES = ("failfast", "failover", "failsafe", "failback")


class FailPolicy:
    """Runs a call through the client's fail mode; ``call(sid, msg, deadline)``."""

    def __init__(self, client, mode):
        if mode not in FAIL_MODES:
            raise ValueError(f"unknown fail_mode {mode!r}; known: {', '.join(FAIL_MODES)}")
        self.client = client
        self.mode = mode
        opts = client.opts
        self.retry_times = opts["retry_times"]
        self.retry_delay = opts["retry_connect_time"]
        self.failback_size = opts["failback_size"]
        self._failback_waiting = 0
        self._recovering = {}     # server id -> task reconnecting it (failback)
        self.run = getattr(self, "_" + mode)

    async def _send(self, sid, msg, deadline):
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise RpcTimeoutError(f"{msg['service']}.{msg['method']} to {sid}: "
                                  f"no time left after retries")
        return await self.client._station.mailbox(sid).send(msg, remaining)

    async def _failfast(self, sid, msg, deadline):
        return await self._send(sid, msg, deadline)

    async def _failover(self, sid, msg, deadline):
        tried = []
        while True:
            try:
                return await self._send(sid, msg, deadline)
            except ConnectionLostError as exc:
                tried.append(sid)
                others = [s for s in self.client.server_ids(msg["server_type"]) if s not in tried]
                if not others:
                    raise ConnectionLostError(
                        f"failover: every server of type {msg['server_type']!r} failed "
                        f"({', '.join(tried)}); last: {exc}") from exc
                log.info("failover: %s failed (%s), trying %s", sid, exc, others[0])
                sid = others[0]

    async def _failsafe(self, sid, msg, deadline):
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                return await self._send(sid, msg, deadline)
            except ConnectionLostError as exc:
                attempt += 1
                delay = self.retry_delay * attempt
                if attempt > self.retry_times or loop.time() + delay >= deadline:
                    raise ConnectionLostError(
                        f"failsafe: {sid} failed {attempt} time(s); last: {exc}") from exc
                log.info("failsafe: %s failed (%s), retry %d in %.2fs", sid, exc, attempt, delay)
                await asyncio.sleep(delay)
                if sid not in self.client._station.servers:
                    raise NoServerError(f"failsafe: server {sid} was removed") from exc

    async def _failback(self, sid, msg, deadline):
        try:
            return await self._send(sid, msg, deadline)
        except ConnectionLostError as exc:
            if self._failback_waiting >= self.failback_size:
                raise PendingQueueFullError(
                    f"failback: {self._failback_waiting} calls already wait for their server "
                    f"(failback_size={self.failback_size}); {sid}: {exc}") from exc
            self._failback_waiting += 1
            try:
                await self._wait_back(sid, deadline, exc)
            finally:
                self._failback_waiting -= 1
        return await self._send(sid, msg, deadline)

    async def _wait_back(self, sid, deadline, exc):
        """Wait until server ``sid`` accepts a connection again, or the deadline passes."""
        task = self._recovering.get(sid)
        if task is None or task.done():
            task = self._recovering[sid] = asyncio.ensure_future(self._reconnect(sid))
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(asyncio.shield(task), deadline - loop.time())
        except asyncio.CancelledError:
            if task.cancelled():   # the client stopped, not this call
                raise ConnectionLostError(f"failback: client stopped while {sid} was away") \
                    from exc
            raise
        except asyncio.TimeoutError:
            raise RpcTimeoutError(f"failback: {sid} did not come back in time; "
                                  f"it failed with: {exc}") from exc

    async def _reconnect(self, sid):
        station = self.client._station
        delay = self.retry_delay
        try:
            while True:
                await asyncio.sleep(delay)
                if sid not in station.servers:
                    raise NoServerError(f"failback: server {sid} was removed")
                try:
                    await station.mailbox(sid).connect()
                    log.info("failback: %s is back", sid)
                    return
                except ConnectionLostError:
                    delay = min(delay * 2, 5.0)
        finally:
            self._recovering.pop(sid, None)

    def close(self):
        """Stop reconnecting; the calls waiting in failback fail."""
        for task in list(self._recovering.values()):
            task.cancel()
        self._recovering.clear()
