"""The client's watchdog: one timer per client that checks the liveness of every open
or opening connection (``Mailbox.check_liveness``), instead of a timer per connection.

Each mailbox says when it next needs a check (its silence reaching the ping or the
dead bound); the timer runs at the earliest of these, and at least every ``period``
s (half of ``liveness_interval``, or of ``keepalive`` without liveness) so that calls
made since are noticed. A check that runs more than ``period`` s late means this
process's loop was blocked: what the servers sent meanwhile may not be read yet, so
that check declares nothing dead. The timer runs only while the client has an open
or opening connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Watchdog", "tick_period"]

#: the shortest wait between two checks (s)
MIN_GAP = 0.005


def tick_period(opts: dict[str, Any]) -> float:
    """The longest wait between two checks for these client options (0: no watchdog)."""
    periods = [p for p in (opts["liveness_interval"] if opts["liveness_timeout"] else 0,
                           opts["keepalive"]) if p]
    return min(periods) / 2 if periods else 0.0


class Watchdog:
    """Runs ``check_liveness(now, stalled)`` of each mailbox ``mailboxes()`` gives
    while one of them is open or opening (see the module docstring)."""

    def __init__(self, mailboxes: Callable[[], Iterable[Any]], period: float) -> None:
        self._mailboxes = mailboxes
        self.period = period
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def kick(self) -> None:
        """A connection began opening, or opened: make sure the timer runs."""
        if self._handle is not None or not self.period:
            return
        loop = self._loop = asyncio.get_running_loop()
        self._due = loop.time() + MIN_GAP
        self._handle = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        self._handle = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        stalled = now - self._due > self.period
        wake = now + self.period
        running = False
        for mailbox in list(self._mailboxes()):
            check = getattr(mailbox, "check_liveness", None)
            if check is None:
                continue
            when = check(now, stalled)
            if when is not None:
                running = True
                if when < wake:
                    wake = when
        if running:
            self._due = max(wake, now + MIN_GAP)
            self._handle = loop.call_at(self._due, self._tick)

    def close(self) -> None:
        """Stop the timer."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
