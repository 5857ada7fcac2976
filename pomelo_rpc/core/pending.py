"""Request-id table, pure-Python twin of ``src/pending.pyx``.

Each pending call is a future keyed by its request id, with an optional deadline.
Deadlines are grouped in slots of ``resolution`` seconds so that expiry needs one
timer per slot, not one per call; an entry answered, discarded or expired is gone.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

_ID_LIMIT = 0x7FFFFFFF


class PendingTable:
    """Calls awaiting their response: ``add`` gives the id, ``pop`` or ``expire`` ends it."""

    def __init__(self, resolution: float = 0.005, first_id: int = 0) -> None:
        """Slots of ``resolution`` s; ids count from ``first_id`` and wrap after 2**31 - 1
        back to 0, skipping ids still pending."""
        # rid -> [future, info, the slot's ids dict or None]
        self._entries: dict[int, list[Any]] = {}
        # slot -> {rid: None}; an empty slot stays until it expires
        self._slots: dict[int, dict[int, None]] = {}
        self._heap: list[int] = []      # slots, each pushed once
        self._next_id = first_id & _ID_LIMIT
        self._res = resolution
        # the slot of the last deadline added, and the deadlines (lo, hi] it holds: most
        # calls share one timeout, so most adds land in the slot of the one before
        self._last_ids: dict[int, None] | None = None
        self._last_lo = self._last_hi = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, rid: object) -> bool:
        return rid in self._entries

    @property
    def slot_count(self) -> int:
        """Deadline slots still held (zero once every deadline has passed)."""
        return len(self._slots)

    def add(self, future: asyncio.Future[Any], deadline: float | None = None,
            info: Any = None) -> int:
        """Register ``future``; return its request id. ``deadline`` is a loop time or None."""
        entries = self._entries
        rid = self._next_id
        while rid in entries:
            rid = (rid + 1) & _ID_LIMIT
        self._next_id = (rid + 1) & _ID_LIMIT
        if deadline is None:
            ids = None
        elif self._last_ids is not None and self._last_lo < deadline <= self._last_hi:
            ids = self._last_ids
            ids[rid] = None
        else:
            # the first slot whose time (slot * resolution) is not before the deadline;
            # expire and next_deadline compare that same float, so rounding cannot
            # make an entry late or early
            slot = int(deadline / self._res) + 1
            if (slot - 1) * self._res >= deadline:
                slot -= 1
            ids = self._slots.get(slot)
            if ids is None:
                ids = self._slots[slot] = {}
                heapq.heappush(self._heap, slot)
            self._last_ids = ids
            self._last_lo = (slot - 1) * self._res
            self._last_hi = slot * self._res
            ids[rid] = None
        entries[rid] = [future, info, ids]
        return rid

    def pop(self, rid: int) -> tuple[asyncio.Future[Any], Any] | None:
        """Remove ``rid``; return ``(future, info)``, or None if it is unknown or gone."""
        entry = self._entries.pop(rid, None)
        if entry is None:
            return None
        if entry[2] is not None:
            entry[2].pop(rid, None)
        return entry[0], entry[1]

    def resolve(self, rid: int, value: Any) -> bool:
        """Set the result of call ``rid``; False if it is unknown or already gone."""
        entry = self.pop(rid)
        if entry is None:
            return False
        fut = entry[0]
        if not fut.done():
            fut.set_result(value)
        return True

    def reject(self, rid: int, exc: BaseException) -> bool:
        """Set ``exc`` on call ``rid``; False if it is unknown or already gone."""
        entry = self.pop(rid)
        if entry is None:
            return False
        fut = entry[0]
        if not fut.done():
            fut.set_exception(exc)
        return True

    def next_deadline(self) -> float | None:
        """Loop time at which ``expire`` next has work, or None."""
        heap = self._heap
        while heap and heap[0] not in self._slots:
            heapq.heappop(heap)
        if not heap:
            return None
        return heap[0] * self._res

    def expire(self, now: float) -> list[tuple[asyncio.Future[Any], Any]]:
        """Remove every call whose deadline is at or before ``now``; return their ``(future, info)``."""
        out: list[tuple[asyncio.Future[Any], Any]] = []
        res = self._res
        heap = self._heap
        slots = self._slots
        entries = self._entries
        while heap and heap[0] * res <= now:
            ids = slots.pop(heapq.heappop(heap), None)
            if ids is self._last_ids:
                self._last_ids = None
            if ids:
                for rid in ids:
                    entry = entries.pop(rid)
                    out.append((entry[0], entry[1]))
        return out

    def drain(self) -> list[tuple[asyncio.Future[Any], Any]]:
        """Remove every call; return their ``(future, info)``."""
        out = [(e[0], e[1]) for e in self._entries.values()]
        self._entries.clear()
        self._slots.clear()
        self._heap.clear()
        self._last_ids = None
        return out
