# Augments pomelo_rpc/core/pending.py (compiled here through the pending.py link): the
# same source, its classes made extension types with typed fields.

cimport cython

from pomelo_rpc._cy.clock cimport whole

cdef Py_ssize_t _ID_LIMIT
cdef Py_ssize_t _SLACK


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


cdef class PendingTable:
    cdef dict _entries
    cdef dict _slots
    cdef list _heap
    cdef Py_ssize_t _next_id
    cdef Py_ssize_t _low
    cdef bint _wrapped
    cdef double _res
    cdef Slot _last_slot
    cdef double _last_lo
    cdef double _last_hi

    cpdef object add(self, object future, object deadline=*, object info=*,
                     double start=*, object series=*)
    @cython.locals(d=double, slot=Slot, res=double, q=double, n=cython.longlong, lo=double,
                   hi=double, last=Slot, spare=Slot, slots=dict, heap=list)
    cpdef object add_at(self, object future, double deadline, object info=*, double start=*,
                        object series=*)
    @cython.locals(rid=Py_ssize_t, key=object, entry=PendingCall, entries=dict, rids=list)
    cpdef object insert(self, object future, Slot slot, object info, double start,
                        object series)
    @cython.locals(entries=dict, kept=list, entry=PendingCall)
    cdef compact(self, Slot slot)
    @cython.locals(entry=PendingCall, slot=Slot, slots=dict)
    cpdef PendingCall take(self, object rid)
    @cython.locals(entry=PendingCall)
    cpdef object pop(self, object rid)
    @cython.locals(entry=PendingCall)
    cpdef bint resolve(self, object rid, object value) except -1
    @cython.locals(entry=PendingCall)
    cpdef bint reject(self, object rid, object exc) except -1
    cpdef object next_deadline(self)
    @cython.locals(e=PendingCall)
    cpdef list expire(self, double now)
    @cython.locals(res=double, heap=list, slots=dict, entries=dict, slot=Slot, out=list,
                   entry=PendingCall)
    cpdef list expire_entries(self, double now)
    @cython.locals(e=PendingCall)
    cpdef list drain(self)
    cpdef list drain_entries(self)


cdef class SlotTimer:
    cdef readonly PendingTable table
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
