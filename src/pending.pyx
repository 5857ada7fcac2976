# cython: language_level=3
"""Request-id table (Cython). Twin: ``pomelo_rpc/core/pending.py``; same names, same behaviour.

Each pending call is a future keyed by its request id, with an optional deadline.
Deadlines are grouped in slots of ``resolution`` seconds so that expiry needs one
timer per slot, not one per call; an entry answered, discarded or expired is gone.
"""

cimport cython

from heapq import heappush, heappop

cdef Py_ssize_t _ID_LIMIT = 0x7FFFFFFF


@cython.freelist(1024)
@cython.final
cdef class _Entry:
    cdef object future
    cdef object info
    cdef dict ids        # the deadline slot holding this entry, or None

    def __cinit__(self, future, info, ids):
        self.future = future
        self.info = info
        self.ids = ids


cdef class PendingTable:
    """Calls awaiting their response: ``add`` gives the id, ``pop`` or ``expire`` ends it."""

    cdef dict _entries
    cdef dict _slots
    cdef list _heap
    cdef Py_ssize_t _next_id
    cdef double _res
    # the slot of the last deadline added, and the deadlines (lo, hi] it holds: most
    # calls share one timeout, so most adds land in the slot of the one before
    cdef dict _last_ids
    cdef double _last_lo
    cdef double _last_hi

    def __cinit__(self, double resolution=0.005, Py_ssize_t first_id=0):
        self._entries = {}
        self._slots = {}
        self._heap = []
        self._next_id = first_id & _ID_LIMIT
        self._res = resolution
        self._last_ids = None

    def __len__(self):
        return len(self._entries)

    def __contains__(self, rid):
        return rid in self._entries

    @property
    def slot_count(self):
        """Deadline slots still held (zero once every deadline has passed)."""
        return len(self._slots)

    cpdef Py_ssize_t add(self, object future, object deadline=None, object info=None) except -1:
        """Register ``future``; return its request id. ``deadline`` is a loop time or None."""
        cdef dict entries = self._entries
        cdef Py_ssize_t rid = self._next_id
        cdef object slot
        cdef dict ids = None
        cdef double d
        while rid in entries:
            rid = (rid + 1) & _ID_LIMIT
        self._next_id = (rid + 1) & _ID_LIMIT
        if deadline is not None:
            d = deadline
            if self._last_ids is not None and self._last_lo < d <= self._last_hi:
                ids = self._last_ids
            else:
                # a Python int, as in the twin: NaN/inf raise, huge deadlines stay huge
                slot = int(d / self._res) + 1
                if (slot - 1) * self._res >= deadline:
                    slot -= 1
                ids = self._slots.get(slot)
                if ids is None:
                    ids = {}
                    self._slots[slot] = ids
                    heappush(self._heap, slot)
                self._last_ids = ids
                self._last_lo = (slot - 1) * self._res
                self._last_hi = slot * self._res
            ids[rid] = None
        entries[rid] = _Entry(future, info, ids)
        return rid

    cdef inline _Entry _take(self, object rid):
        cdef _Entry entry = self._entries.pop(rid, None)
        if entry is not None and entry.ids is not None:
            entry.ids.pop(rid, None)
        return entry

    cpdef object pop(self, object rid):
        """Remove ``rid``; return ``(future, info)``, or None if it is unknown or gone."""
        cdef _Entry entry = self._take(rid)
        if entry is None:
            return None
        return (entry.future, entry.info)

    cpdef bint resolve(self, object rid, object value) except -1:
        """Set the result of call ``rid``; False if it is unknown or already gone."""
        cdef _Entry entry = self._take(rid)
        if entry is None:
            return False
        fut = entry.future
        if not fut.done():
            fut.set_result(value)
        return True

    cpdef bint reject(self, object rid, object exc) except -1:
        """Set ``exc`` on call ``rid``; False if it is unknown or already gone."""
        cdef _Entry entry = self._take(rid)
        if entry is None:
            return False
        fut = entry.future
        if not fut.done():
            fut.set_exception(exc)
        return True

    def next_deadline(self):
        """Loop time at which ``expire`` next has work, or None."""
        cdef list heap = self._heap
        while heap and heap[0] not in self._slots:
            heappop(heap)
        if not heap:
            return None
        return heap[0] * self._res

    cpdef list expire(self, double now):
        """Remove every call whose deadline is at or before ``now``; return their ``(future, info)``."""
        cdef list out = []
        cdef double res = self._res
        cdef list heap = self._heap
        cdef dict slots = self._slots
        cdef dict entries = self._entries
        cdef dict ids
        cdef _Entry entry
        while heap and <double>heap[0] * res <= now:
            ids = slots.pop(heappop(heap), None)
            if ids is self._last_ids:
                self._last_ids = None
            if ids:
                for rid in ids:
                    entry = entries.pop(rid)
                    out.append((entry.future, entry.info))
        return out

    def drain(self):
        """Remove every call; return their ``(future, info)``."""
        cdef _Entry e
        out = [(e.future, e.info) for e in self._entries.values()]
        self._entries.clear()
        self._slots.clear()
        del self._heap[:]
        self._last_ids = None
        return out
