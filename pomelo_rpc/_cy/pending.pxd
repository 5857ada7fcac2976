# Augments pomelo_rpc/core/pending.py (compiled here through the pending.py link): the
# same source, its classes made extension types with typed fields.

cimport cython

from pomelo_rpc._cy.clock cimport whole

cdef Py_ssize_t _ID_LIMIT
cdef Py_ssize_t _SLACK
cdef object _shared
cdef object log


cdef class PendingTable


cdef class Slot:
    cdef public list rids
    cdef public Py_ssize_t live
    cdef public object number


cdef class PendingCall:
    cdef readonly object future
    cdef readonly object info
    cdef readonly Slot slot
    cdef readonly double start
    cdef readonly object series
    cdef readonly PendingTable table
    cdef readonly object rid


# final: ``PendingTable`` calls its methods as C functions (no subclass overrides them)
@cython.final
cdef class Slots:
    cdef dict _slots
    cdef list _heap
    cdef double _res
    cdef Slot _last_slot
    cdef double _last_lo
    cdef double _last_hi

    @cython.locals(d=double, slot=Slot, res=double, q=double, n=cython.longlong, lo=double,
                   hi=double, last=Slot, spare=Slot, slots=dict, heap=list)
    cpdef Slot slot_at(self, double deadline)
    @cython.locals(slots=dict)
    cpdef left(self, Slot slot)
    @cython.locals(kept=list, entry=PendingCall)
    cpdef compact(self, Slot slot)
    cpdef object next_deadline(self)
    @cython.locals(e=PendingCall)
    cpdef list expire(self, double now)
    @cython.locals(res=double, heap=list, slots=dict, entries=dict, slot=Slot, out=list,
                   entry=PendingCall)
    cpdef list expire_entries(self, double now)
    cpdef clear(self)


cdef class PendingTable:
    cdef dict _entries
    cdef public Slots slots
    cdef bint _own
    cdef public object expired
    cdef Py_ssize_t _next_id
    cdef Py_ssize_t _low
    cdef bint _wrapped

    cpdef bint share(self, Slots slots) except -1
    cpdef object add(self, object future, object deadline=*, object info=*,
                     double start=*, object series=*)
    @cython.locals(d=double, slot=Slot, slots=Slots)
    cpdef object add_at(self, object future, double deadline, object info=*, double start=*,
                        object series=*)
    @cython.locals(rid=Py_ssize_t, key=object, entry=PendingCall, entries=dict, rids=list)
    cpdef object insert(self, object future, Slot slot, object info, double start,
                        object series)
    @cython.locals(entry=PendingCall, slot=Slot, slots=Slots, held=dict)
    cpdef PendingCall take(self, object rid)
    @cython.locals(entry=PendingCall)
    cpdef object pop(self, object rid)
    @cython.locals(entry=PendingCall)
    cpdef bint resolve(self, object rid, object value) except -1
    @cython.locals(entry=PendingCall)
    cpdef bint reject(self, object rid, object exc) except -1
    cpdef object next_deadline(self)
    cpdef list expire(self, double now)
    cpdef list expire_entries(self, double now)
    @cython.locals(e=PendingCall)
    cpdef list drain(self)
    @cython.locals(out=list, slots=Slots, entry=PendingCall, slot=Slot)
    cpdef list drain_entries(self)


cdef class SlotTimer:
    cdef object __weakref__
    cdef readonly Slots table
    cdef object expired
    cdef object clock
    cdef readonly bint entries
    cdef readonly object loop
    cdef readonly object handle
    cdef readonly object at
    cdef readonly double next_at

    cpdef added(self, double deadline, object loop)
    cpdef arm(self)
    cpdef expire(self, double now)
    cpdef expire_due(self, double now)
    cpdef cancel(self)


@cython.locals(entry=PendingCall, got=list, by_table=dict)
cpdef _to_tables(list entries)
cpdef SlotTimer _loop_timer(object loop)
cpdef SlotTimer loop_deadlines(object loop)
