"""Overload on the server: deadlines, admission and fairness (docs/overload.md).

One ``Overload`` per acceptor, shared by its connections:

- Deadlines: a request's deadline is its arrival time plus the budget the caller
  sent (``default_budget`` for a caller that sent none). A request whose deadline
  passed before it started is not run and not answered (its caller has had its
  timeout already): counted in ``expired``. A coroutine call still running at its
  deadline is cancelled (its ``finally`` runs; no answer is sent): ``cancelled``. One
  timer per acceptor (a ``SlotTimer`` over a ``PendingTable`` of the running calls),
  never one per call.
- Admission: ``held`` counts the calls queued or running as coroutines; past
  ``max_in_flight`` a request is answered ServerBusyError at once (``busy``).
- Fairness: synchronous handlers run for at most ``handler_slice`` seconds per loop
  turn; the requests read after that wait in their connection's queue, and the queues
  are served round-robin, one request per connection at a time, in the next turns.
  Accepts, pings and new connections are served between the slices. A connection
  whose peer does not read its answers (asyncio's flow control paused it) is parked:
  its queue waits until the answers drain.

Times are ``time.monotonic()`` (uvloop's ``loop.time()`` stands still within a turn).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .acceptor import ServerConnection
    from .core import Core

log = logging.getLogger("pomelo_rpc.overload")

#: A queued request: (request, rid or None (the native one's is in the request), deadline)
Entry = tuple[Any, Any, "float | None"]

clock = time.monotonic

#: The message of the CancelledError a coroutine call gets at its deadline.
DEADLINE_PASSED = "the call's deadline passed"


class BadBudget(ValueError):
    """A request's budget is not a non-negative int of milliseconds."""


class Overload:
    """Deadlines, admission and fairness of one acceptor; see the module docstring."""

    def __init__(self, opts: dict[str, Any], core: Core) -> None:
        self.max_in_flight: int | None = opts.get("max_in_flight")
        default_budget = opts.get("default_budget")
        self.default_budget: float | None = (None if default_budget is None
                                             else float(default_budget))
        self.slice: float = opts["handler_slice"]
        self.deadlines: bool = bool(opts["deadlines"])
        #: the message of a busy answer
        self.busy_text = f"server busy: {self.max_in_flight} calls held (max_in_flight)"
        self.held = 0          # calls queued or running as coroutines
        self.expired = 0       # requests not run: their deadline passed before they started
        self.cancelled = 0     # coroutine calls cancelled at their deadline
        self.busy = 0          # requests refused past max_in_flight
        self.deferred = 0      # requests that waited for a later loop turn (fairness)
        #: hook ``f(conn, request, outcome)`` for a request not run ("busy", "expired"),
        #: or a call cut at its deadline ("expired"); the observer sets it (metrics)
        self.on_refused: Any = None
        #: this loop turn's slice of handler time (``core.writer.Slice``: its ``end``,
        #: 0.0 while no slice is started), which the connections read
        self.turn_slice: Any = core.writer.Slice(self.slice)
        self._ready: deque[ServerConnection] = deque()
        self._parked: set[ServerConnection] = set()   # paused, with requests queued
        self._runner = False
        self._writer = core.writer
        self._turn: Any = None          # the loop's Turn (core.writer), once known
        self._running = core.pending.PendingTable()   # coroutine calls with a deadline
        self._deadlines = core.pending.SlotTimer(self._running, self._cut_at_deadline, clock)
        self._cut: set[asyncio.Future[Any]] = set()     # cancelled at their deadline

    # admission and deadlines -------------------------------------------

    @property
    def full(self) -> bool:
        """True when a new request must be refused (``max_in_flight`` calls held)."""
        return self.max_in_flight is not None and self.held >= self.max_in_flight

    def deadline(self, budget: Any, arrived: float) -> float | None:
        """The deadline of a request that arrived at ``arrived`` with ``budget`` (ms, or
        None); BadBudget when the budget is not a non-negative int."""
        if not self.deadlines:
            return None
        if budget is None:
            return None if self.default_budget is None else arrived + self.default_budget
        if type(budget) is not int or budget < 0:
            raise BadBudget(f"request budget must be a non-negative int of ms, "
                            f"not {budget!r:.40}")
        return arrived + budget * 0.001

    def refused(self, conn: ServerConnection, request: Any, outcome: str) -> None:
        """Count a request not run (``busy`` or ``expired``)."""
        if outcome == "busy":
            self.busy += 1
        else:
            self.expired += 1
        if self.on_refused is not None:
            self.on_refused(conn, request, outcome)

    # fairness ------------------------------------------------------------

    def spent(self) -> bool:
        """True when this loop turn's slice of handler time is used up; the first
        call of a turn starts its slice."""
        end: float = self.turn_slice.end
        if end == 0.0:
            self.start_slice()
            return False
        return clock() >= end

    def start_slice(self) -> None:
        """Start this loop turn's slice of handler time (the loop's ``Turn`` ends it, with
        the writes of every connection: its ``end`` back to 0.0)."""
        turn = self._turn
        if turn is None:
            turn = self._turn = self._writer.turn_of(asyncio.get_running_loop())
        turn.start_slice(self.turn_slice)

    def enqueue(self, conn: ServerConnection, entry: Entry) -> None:
        """Queue ``entry`` on ``conn`` for a later turn."""
        queue = conn._queue
        queue.append(entry)
        self.held += 1
        self.deferred += 1
        if len(queue) == 1:
            self._ready.append(conn)
        if not self._runner:
            self._runner = True
            asyncio.get_running_loop().call_soon(self._run)

    def dropped(self, conn: ServerConnection) -> None:
        """``conn`` closed: forget its queued requests."""
        self.held -= len(conn._queue)
        conn._queue.clear()
        self._parked.discard(conn)

    def unpark(self, conn: ServerConnection) -> None:
        """``conn`` is no longer paused: serve its queue again."""
        if conn in self._parked:
            self._parked.discard(conn)
            self._ready.append(conn)
            if not self._runner:
                self._runner = True
                asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        """Run queued requests, one per connection in turn, for one slice."""
        self._runner = False
        ready = self._ready
        touched: dict[ServerConnection, None] = {}
        end: float = self.turn_slice.end
        if end == 0.0:
            self.start_slice()
            end = self.turn_slice.end
        try:
            while ready:
                now = clock()      # one read: the slice, and the deadline of the entry
                if now >= end:
                    break
                conn = ready.popleft()
                queue = conn._queue
                if not queue:
                    continue
                if conn.paused:          # its peer reads nothing: until it does
                    self._parked.add(conn)
                    continue
                entry = queue.popleft()
                self.held -= 1
                if queue:
                    ready.append(conn)
                touched[conn] = None
                conn._run_entry(entry, now)
        finally:
            for conn in touched:
                conn._turn_done()
            if ready and not self._runner:
                self._runner = True
                asyncio.get_running_loop().call_soon(self._run)

    # coroutine calls -------------------------------------------------------

    def started(self, task: asyncio.Future[Any], deadline: float | None) -> int | None:
        """A coroutine call started; with a deadline, it is cancelled there. Returns
        the id to give ``finished``."""
        self.held += 1
        if deadline is None:
            return None
        tid: int = self._running.add(task, deadline)
        self._deadlines.added(deadline, asyncio.get_running_loop())
        return tid

    def finished(self, task: asyncio.Future[Any], tid: int | None) -> bool:
        """A coroutine call ended; True if it was cut at its deadline (not answered)."""
        self.held -= 1
        if tid is not None:
            self._running.pop(tid)
        if self._cut:
            if task in self._cut:
                self._cut.discard(task)
                return True
        return False

    def is_cut(self, task: asyncio.Future[Any]) -> bool:
        """True if ``task`` (a coroutine call) was cancelled at its deadline."""
        return task in self._cut

    def _cut_at_deadline(self, entries: list[tuple[asyncio.Future[Any], Any]]) -> None:
        """The deadline timer: cancel the calls still running at their deadline."""
        for task, _info in entries:
            if not task.done():
                self._cut.add(task)
                self.cancelled += 1
                task.cancel(DEADLINE_PASSED)

    def close(self) -> None:
        """The acceptor closed: no timer left behind."""
        self._deadlines.cancel()

    def stats(self) -> dict[str, int]:
        """Counters: calls held now, and requests expired, cancelled, busy, deferred."""
        return {"held": self.held, "expired": self.expired, "cancelled": self.cancelled,
                "busy": self.busy, "deferred": self.deferred}
