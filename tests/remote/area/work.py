"""Area service for routing, fail-mode and filter tests: who answered, and the load it has."""

import asyncio
import os
import time


class Work:
    """Counts the calls it gets and the calls it is running at once."""

    def __init__(self, context):
        self.server_id = (context or {}).get("server_id")
        self.calls = 0
        self.active = 0
        self.peak = 0

    async def hold(self, delay=0.0, tag=None):
        """Sleep ``delay`` s, then answer who ran the call and how many ran with it."""
        self.calls += 1
        self.active += 1
        active = self.active
        self.peak = max(self.peak, active)
        try:
            if delay:
                await asyncio.sleep(delay)
            return {"server_id": self.server_id, "pid": os.getpid(), "active": active,
                    "tag": tag}
        finally:
            self.active -= 1

    def echo(self, value):
        """Answer ``value`` with the server id."""
        self.calls += 1
        return {"server_id": self.server_id, "value": value}

    def block(self, seconds):
        """Hold the server's event loop for ``seconds`` (a synchronous handler that long)."""
        self.calls += 1
        time.sleep(seconds)
        return {"server_id": self.server_id, "blocked": seconds}

    def blob(self, size):
        """A string of ``size`` bytes (a big answer to a small request)."""
        return "x" * size

    def fail(self, message):
        """Raise ValueError(message)."""
        self.calls += 1
        raise ValueError(message)

    def stats(self):
        """Calls received so far (this one excluded), running now, and the most at once."""
        return {"server_id": self.server_id, "pid": os.getpid(), "calls": self.calls,
                "active": self.active, "peak": self.peak}


def create(context):
    return Work(context)
