# cython: annotation_typing=False
"""Request-id table: one source for both cores.

Imported as it is for the pure-Python core; compiled with ``pomelo_rpc/_cy/pending.pxd``
(which makes the classes ``cdef class`` and types their fields) for the Cython core.

Each pending call is a future keyed by its request id, with an optional deadline.
Deadlines are grouped in slots of ``resolution`` seconds so that expiry needs one
timer per slot, not one per call (``SlotTimer``); an entry answered, discarded or
expired is gone.

The slots are a ``Slots`` of their own, which a table owns or shares: the client's
connections of one event loop share one (``loop_deadlines``), with one timer, so that
calls spread over many connections (each seeing a call every few loop turns) land in
the loop's current slot instead of each making a slot of its own per call.

A slot (``Slot``) holds the entries added in it in a list and a count of those still
pending: entering a call appends its entry, answering one only counts it down (no
per-call dict entry to add and remove), and expiry takes from the list the entries
still in their table. The list is emptied whenever nothing in the slot is pending,
and compacted when it holds mostly answered entries, so that it stays within a small
factor of the calls pending in it.

A slot whose calls were all answered leaves then (once no call is being added to it),
not when its time comes: it would otherwise be kept, and its timer fire for it,
``timeout`` seconds later. The timer is armed for the earliest slot still holding a
call, so it fires about once per timeout, not once per slot.
"""

from __future__ import annotations

import logging
import weakref
from asyncio import InvalidStateError
from heapq import heapify, heappop, heappush
from math import inf
from typing import TYPE_CHECKING, Any

from .clock import whole
from .writer import per_loop

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

log = logging.getLogger("pomelo_rpc.pending")

_ID_LIMIT = 0x7FFFFFFF


class Slot:
    """The calls whose deadline falls in one slot: the entries added (some may have
    been answered since) and how many of them are still pending."""

    __slots__ = ("rids", "live", "number")

    def __init__(self) -> None:
        #: the entries (``PendingCall``) added in this slot
        self.rids: list[Any] = []
        self.live = 0
        self.number: int = 0     # its key in the slots (its time: number * resolution)


#: a slot's entry list is compacted once it holds more than twice its pending calls and
#: this many entries besides
_SLACK = 64


class PendingCall:
    """One pending call: its future, the caller's info, its deadline slot, and for
    metrics the clock when it began and the series it counts into; its table and id
    (expiry takes it out of its table)."""

    __slots__ = ("future", "info", "slot", "start", "series", "table", "rid")

    def __init__(self, future: asyncio.Future[Any], info: Any, slot: Slot | None) -> None:
        self.future = future
        self.info = info
        self.slot = slot      # the deadline slot holding this entry, or None
        self.start = 0.0
        self.series: Any = None
        self.table: PendingTable | None = None
        self.rid: Any = None


class Slots:
    """Deadline slots of ``resolution`` seconds, of one table or shared by several
    (see the module docstring): ``expire_entries`` takes each expired entry out of its
    own table."""

    def __init__(self, resolution: float = 0.005) -> None:
        # slot number -> Slot; a slot leaves when it expires or holds no call any more
        # (see ``left``)
        self._slots: dict[int, Slot] = {}
        # slot numbers, each pushed when its slot is made (a number left by its slot is
        # dropped when it comes to the top)
        self._heap: list[int] = []
        self._res: float = resolution
        # the slot of the last deadline added, and the deadlines (lo, hi] it holds: most
        # calls share one timeout, so most adds land in the slot of the one before
        self._last_slot: Slot | None = None
        self._last_lo: float = 0.0
        self._last_hi: float = 0.0

    @property
    def slot_count(self) -> int:
        """Slots still held (zero once every deadline has passed or every call in them
        has ended)."""
        return len(self._slots)

    def slot_at(self, deadline: float) -> Slot:
        """The slot of ``deadline`` (made if needed), the one adds go to from now on."""
        d: float = deadline
        # the first slot whose time (slot * resolution) is not before the deadline;
        # expire and next_deadline compare that same float, so rounding cannot make
        # an entry late or early (a Python int: NaN and inf raise, huge deadlines
        # stay huge)
        res = self._res
        q = d / res
        if 0.0 <= q < 4503599627370496.0:
            # below 2**52: the same arithmetic in C integers and doubles, compiled
            n = whole(q) + 1
            if (n - 1) * res >= d:
                n -= 1
            number = n
            lo = (n - 1) * res
            hi = n * res
        else:
            number = int(q) + 1
            if (number - 1) * res >= d:
                number -= 1
            lo = (number - 1) * res
            hi = number * res
        slots = self._slots
        last = self._last_slot
        spare = None
        if last is not None and last.live == 0 and slots.get(last.number) is last:
            # the slot calls were added to until now, all answered: gone (``left``
            # keeps the slot calls are being added to), its object used again
            del slots[last.number]
            spare = last
        slot = slots.get(number)
        if slot is None:
            if spare is not None:
                slot = spare         # (its entry list is empty: emptied when live was 0)
            else:
                # (compiled, ``__new__`` skips the call of ``__init__``)
                slot = Slot.__new__(Slot)
                slot.rids = []
                slot.live = 0
            slot.number = number
            slots[number] = slot
            heap = self._heap
            if len(heap) > 2 * len(slots) + _SLACK:
                # mostly numbers of slots gone before their time: only the slots'
                heap[:] = list(slots)
                heapify(heap)
            else:
                heappush(heap, number)
        self._last_slot = slot
        self._last_lo = lo
        self._last_hi = hi
        return slot

    def left(self, slot: Slot) -> None:
        """A call of ``slot`` ended (answered, discarded): with none left there, the
        slot leaves now (its timer, if armed for it, finds it gone), unless calls are
        still being added to it (then when the next slot is made, or when it expires)."""
        slot.live -= 1
        if slot.live == 0:
            del slot.rids[:]    # (compiled: no method looked up)
            if slot is not self._last_slot:
                slots = self._slots
                if slots.get(slot.number) is slot:
                    del slots[slot.number]

    def compact(self, slot: Slot) -> None:
        """Keep in ``slot``'s list only the entries still pending in it."""
        kept: list[PendingCall] = []
        for entry in slot.rids:
            if entry.slot is slot and entry.table._entries.get(entry.rid) is entry:
                kept.append(entry)
        slot.rids = kept

    def next_deadline(self) -> float | None:
        """Loop time at which ``expire`` next has work, or None."""
        heap = self._heap
        while heap and heap[0] not in self._slots:
            heappop(heap)
        if not heap:
            return None
        return heap[0] * self._res

    def expire(self, now: float) -> list[tuple[asyncio.Future[Any], Any]]:
        """Remove every call whose deadline is at or before ``now``; return their ``(future, info)``."""
        return [(e.future, e.info) for e in self.expire_entries(now)]

    def expire_entries(self, now: float) -> list[PendingCall]:
        """``expire``, returning the entries themselves (each out of its table)."""
        out: list[PendingCall] = []
        res = self._res
        heap = self._heap
        slots = self._slots
        while heap and heap[0] * res <= now:
            slot = slots.pop(heappop(heap), None)
            if slot is None:
                continue
            if slot is self._last_slot:
                self._last_slot = None
            if slot.live:
                for entry in slot.rids:
                    if entry.slot is slot:
                        entries = entry.table._entries
                        if entries.get(entry.rid) is entry:
                            del entries[entry.rid]
                            out.append(entry)
                slot.live = 0
            slot.rids = []
        return out

    def clear(self) -> None:
        """No slot left."""
        self._slots.clear()
        self._heap.clear()
        self._last_slot = None


class PendingTable:
    """Calls awaiting their response: ``add`` gives the id, ``pop`` or ``expire`` ends it."""

    def __init__(self, resolution: float = 0.005, first_id: int = 0, low_id: int = 0) -> None:
        """Slots of ``resolution`` s (its own, until ``share``); ids count from
        ``first_id`` and wrap after 2**31 - 1 back to ``low_id`` (1 where 0 means
        something else on the wire: pinus tcp's notify), skipping ids still pending."""
        self._entries: dict[int, PendingCall] = {}
        #: the deadline slots of its calls: its own, or shared (``share``)
        self.slots = Slots(resolution)
        self._own = True
        #: ``expired(entries)``: what a shared slots' timer hands this table's expired
        #: entries to (``loop_deadlines``); None for a table expired by its own timer
        self.expired: Callable[[list[Any]], None] | None = None
        self._low: int = low_id
        self._next_id: int = max(first_id & _ID_LIMIT, low_id)
        #: the ids have wrapped around once: a free id is looked for from then on
        self._wrapped = False

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, rid: object) -> bool:
        return rid in self._entries

    @property
    def slot_count(self) -> int:
        """Deadline slots still held (zero once every deadline has passed or every call
        in them has ended; of every table sharing them)."""
        return len(self.slots._slots)

    def share(self, slots: Slots) -> bool:
        """Put the deadlines of calls added from now on in ``slots`` (shared with other
        tables); False, nothing changed, while a call of this table holds a deadline
        slot of its own."""
        if self._own and self.slots._slots:
            return False
        self.slots = slots
        self._own = False
        return True

    def add(self, future: asyncio.Future[Any], deadline: float | None = None,
            info: Any = None, start: float = 0.0, series: Any = None) -> int:
        """Register ``future``; return its request id. ``deadline`` is a loop time or None;
        ``start`` and ``series``: what metrics count the call with when it ends."""
        if deadline is None:
            return self.insert(future, None, info, start, series)
        return self.add_at(future, deadline, info, start, series)

    def add_at(self, future: asyncio.Future[Any], deadline: float, info: Any = None,
               start: float = 0.0, series: Any = None) -> int:
        """``add`` with a deadline (compiled: a C double, no float object made)."""
        d: float = deadline
        slots = self.slots
        slot = slots._last_slot
        if slot is None or not slots._last_lo < d <= slots._last_hi:
            slot = slots.slot_at(d)
        return self.insert(future, slot, info, start, series)

    def insert(self, future: asyncio.Future[Any], slot: Slot | None, info: Any,
               start: float, series: Any) -> int:
        """Enter ``future`` under the next free request id (in the deadline slot
        ``slot``, if any); return the id."""
        entries = self._entries
        rid = self._next_id
        key = rid                       # (compiled: the one int object of the id)
        if self._wrapped:               # (before the first wrap no id is taken)
            while key in entries:
                rid = rid + 1 if rid < _ID_LIMIT else self._low
                key = rid
        if rid < _ID_LIMIT:
            self._next_id = rid + 1
        else:
            self._next_id = self._low
            self._wrapped = True
        # made field by field: compiled, ``__new__`` skips the call of ``__init__``
        entry = PendingCall.__new__(PendingCall)
        entry.future = future
        entry.info = info
        entry.slot = slot
        entry.start = start
        entry.series = series
        entries[key] = entry
        if slot is not None:
            entry.table = self
            entry.rid = key
            rids = slot.rids
            if len(rids) > 2 * slot.live + _SLACK:
                self.slots.compact(slot)
                rids = slot.rids
            rids.append(entry)
            slot.live += 1
        return key

    def take(self, rid: Any) -> PendingCall | None:
        """Remove ``rid``; return its entry, or None if it is unknown or gone."""
        entry: PendingCall | None = self._entries.pop(rid, None)
        if entry is not None:
            slot = entry.slot
            if slot is not None:
                # ``Slots.left``, inline
                slot.live -= 1
                if slot.live == 0:
                    del slot.rids[:]    # (compiled: no method looked up)
                    slots = self.slots
                    if slot is not slots._last_slot:
                        held = slots._slots
                        if held.get(slot.number) is slot:
                            del held[slot.number]
        return entry

    def pop(self, rid: object) -> tuple[asyncio.Future[Any], Any] | None:
        """Remove ``rid``; return ``(future, info)``, or None if it is unknown or gone."""
        entry = self.take(rid)
        if entry is None:
            return None
        return (entry.future, entry.info)

    def resolve(self, rid: object, value: Any) -> bool:
        """Set the result of call ``rid``; False if it is unknown or already gone."""
        entry = self.take(rid)
        if entry is None:
            return False
        fut = entry.future
        # the entry may stay in its deadline slot's list until the slot's last call
        # ends: it lets go of the future (and the answer in it) now
        entry.future = None     # type: ignore[assignment]  # (never read again)
        try:            # (one method call, not two: its caller seldom gave up on it)
            fut.set_result(value)
        except InvalidStateError:
            if not fut.done():
                raise
        return True

    def reject(self, rid: object, exc: BaseException) -> bool:
        """Set ``exc`` on call ``rid``; False if it is unknown or already gone."""
        entry = self.take(rid)
        if entry is None:
            return False
        fut = entry.future
        if not fut.done():
            fut.set_exception(exc)
        return True

    def next_deadline(self) -> float | None:
        """Loop time at which ``expire`` next has work, or None (of every table sharing
        its slots)."""
        return self.slots.next_deadline()

    def expire(self, now: float) -> list[tuple[asyncio.Future[Any], Any]]:
        """Remove every call whose deadline is at or before ``now``; return their
        ``(future, info)`` (shared slots: of every table sharing them)."""
        return self.slots.expire(now)

    def expire_entries(self, now: float) -> list[PendingCall]:
        """``expire``, returning the entries themselves."""
        return self.slots.expire_entries(now)

    def drain(self) -> list[tuple[asyncio.Future[Any], Any]]:
        """Remove every call; return their ``(future, info)``."""
        return [(e.future, e.info) for e in self.drain_entries()]

    def drain_entries(self) -> list[PendingCall]:
        """``drain``, returning the entries themselves."""
        out = list(self._entries.values())
        self._entries.clear()
        slots = self.slots
        if self._own:
            slots.clear()
        else:                   # shared: only its own calls leave their slots
            for entry in out:
                slot = entry.slot
                if slot is not None:
                    slots.left(slot)
        return out


class SlotTimer:
    """The one timer of a table's deadlines (or of shared ``Slots``), never one per call.

    It is armed for the earliest deadline slot and re-armed only when that slot
    changes. A firing expires its slot even when the clock (whole milliseconds under
    uvloop) reads a hair before the slot's time, and an expiry run early
    (``expire_due``, from received data) goes through the same ``expire``, which keeps
    or replaces the armed timer: a second timer can never start beside the first.
    ``expired(entries)`` gets the ``(future, info)`` of each entry expired (or the
    entries themselves).
    """

    def __init__(self, table: PendingTable | Slots, expired: Callable[[list[Any]], None],
                 clock: Callable[[], float], entries: bool = False) -> None:
        """``table``: a table (its slots), or slots; ``clock``: the clock of the
        deadlines (a loop's ``time``, or ``time.monotonic``); ``entries``: ``expired``
        gets the entries, not ``(future, info)`` pairs."""
        self.table: Slots = table.slots if isinstance(table, PendingTable) else table
        self.expired = expired
        self.clock = clock
        self.entries = entries
        self.loop: asyncio.AbstractEventLoop | None = None   # the loop it arms on
        self.handle: asyncio.TimerHandle | None = None
        self.at: float | None = None        # the slot time it is armed for
        #: ``at`` as a float, inf when not armed: a deadline before it needs ``added``
        self.next_at = inf

    def added(self, deadline: float, loop: asyncio.AbstractEventLoop) -> None:
        """A deadline was added to the table: arm for it if it is the earliest (a
        caller may skip the call when ``deadline`` is not before ``next_at``)."""
        self.loop = loop
        if deadline < self.next_at:
            self.arm()

    def arm(self) -> None:
        """(Re)arm for the table's next deadline slot, or leave no timer."""
        when = self.table.next_deadline()
        if self.handle is not None:
            if when == self.at:
                return
            self.handle.cancel()
        self.at = when
        if when is None:
            self.handle = None
            self.next_at = inf
        else:
            self.next_at = when
            loop = self.loop
            assert loop is not None
            # a millisecond late, so that a clock of any granularity reads ``when`` then
            self.handle = loop.call_at(loop.time() + max(0.0, when - self.clock()) + 0.001,
                                       self.fire)

    def fire(self) -> None:
        """The timer ran: expire its slot (at least)."""
        when = self.at
        self.handle = None
        now = self.clock()
        self.expire(now if when is None or now > when else when)

    def expire(self, now: float) -> None:
        """Expire the entries whose deadline is at or before ``now``; re-arm."""
        if self.entries:
            self.expired(self.table.expire_entries(now))
        else:
            self.expired(self.table.expire(now))
        self.arm()

    def expire_due(self, now: float) -> None:
        """Expire now what is due at ``now``, ahead of the timer it stands in for."""
        if now >= self.next_at:
            self.expire(now)

    def cancel(self) -> None:
        """No timer left (the table's owner is closing)."""
        if self.handle is not None:
            self.handle.cancel()
        self.handle = self.at = None
        self.next_at = inf


def _to_tables(entries: list[PendingCall]) -> None:
    """The timer of shared slots expired ``entries``: each table's go to its
    ``expired``, in the order they expired."""
    if not entries:
        return
    by_table: dict[Any, list[PendingCall]] = {}
    for entry in entries:
        table = entry.table
        got = by_table.get(table)
        if got is None:
            by_table[table] = [entry]
        else:
            got.append(entry)
    for table, expired in by_table.items():
        if table.expired is not None:
            try:
                table.expired(expired)
            except Exception:       # one table's hook must not stop the others' expiry
                log.exception("failing %d expired calls raised", len(expired))


#: the shared deadline slots' timer of each loop, held by the connections using it
_shared: weakref.WeakKeyDictionary[Any, weakref.ref[Any]] = weakref.WeakKeyDictionary()


def _loop_timer(loop: asyncio.AbstractEventLoop) -> SlotTimer:
    """A timer of new shared slots on ``loop``'s clock."""
    return SlotTimer(Slots(), _to_tables, loop.time, True)


def loop_deadlines(loop: asyncio.AbstractEventLoop) -> SlotTimer:
    """The timer of the deadline slots every client table of ``loop`` shares (made on
    first use; its clock the loop's): a table sharing them (``PendingTable.share``)
    sets its ``expired`` hook, which gets its calls the timer expires."""
    timer: SlotTimer = per_loop(_shared, loop, _loop_timer)
    return timer
