"""Overload test service: CPU work, a cancellable coroutine, nested calls, and stats."""

import asyncio
import os
import time

import pomelo_rpc
from pomelo_rpc import client


def _rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


class Load:
    """Counts what it ran, so that tests can tell which calls were executed."""

    def __init__(self, context):
        self.server_id = (context or {}).get("server_id")
        self.ran = []            # tags of the burn calls executed
        self.finally_ran = 0     # sleepy calls whose finally ran
        self.sleepy_done = 0     # sleepy calls that finished their sleep
        self.peak_rss_kb = 0
        self._client = None

    def burn(self, ms, tag=None):
        """Spin the CPU for ``ms`` milliseconds; remember ``tag``."""
        end = time.perf_counter() + ms / 1000.0
        while time.perf_counter() < end:
            pass
        self.ran.append(tag)
        if len(self.ran) % 256 == 0:
            self.peak_rss_kb = max(self.peak_rss_kb, _rss_kb())
        return tag

    def ping(self):
        """Answer at once: who answered."""
        return self.server_id

    async def sleepy(self, delay):
        """Sleep ``delay`` s (cancelled at the caller's deadline: the finally counts it)."""
        try:
            await asyncio.sleep(delay)
            self.sleepy_done += 1
            return "slept"
        finally:
            self.finally_ran += 1

    async def relay(self, hops, timeout=None):
        """The budget left here, then the same from the next hop (``hops``: ports)."""
        left = pomelo_rpc.time_remaining()
        if not hops:
            return [left]
        if self._client is None:
            self._client = client.create()
            self._client.add_proxies([{"namespace": "user", "server_type": "load",
                                       "path": os.path.dirname(os.path.abspath(__file__))}])
            await self._client.start()
        sid = f"hop-{hops[0]}"
        if sid not in self._client.server_ids("load"):
            self._client.add_servers([{"id": sid, "server_type": "load",
                                       "host": "127.0.0.1", "port": hops[0]}])
        rest = await self._client.proxies.user.load.load.relay.to_server(
            sid, hops[1:], timeout=timeout)
        return [left] + rest

    def stats(self, reset=False):
        """Executed tags and counters, and the process's memory now and at its peak."""
        rss = _rss_kb()
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        out = {"ran": list(self.ran), "finally_ran": self.finally_ran,
               "sleepy_done": self.sleepy_done, "rss_kb": rss, "peak_rss_kb": self.peak_rss_kb}
        if reset:
            self.ran.clear()
        return out


def create(context):
    return Load(context)
