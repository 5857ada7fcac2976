# Augments pomelo_rpc/core/pending.py (compiled here through the pending.py link): the
# same source, its classes made extension types with typed fields.

cimport cython

cdef Py_ssize_t _ID_LIMIT


cdef class _Entry:
    cdef object future
    cdef object info
    cdef dict ids


cdef class PendingTable:
    cdef dict _entries
    cdef dict _slots
    cdef list _heap
    cdef Py_ssize_t _next_id
    cdef Py_ssize_t _low
    cdef double _res
    cdef dict _last_ids
    cdef double _last_lo
    cdef double _last_hi

    @cython.locals(rid=Py_ssize_t, d=double, ids=dict, entry=_Entry)
    cpdef Py_ssize_t add(self, object future, object deadline=*, object info=*) except -1
    @cython.locals(entry=_Entry)
    cdef _Entry _take(self, object rid)
    @cython.locals(entry=_Entry)
    cpdef object pop(self, object rid)
    @cython.locals(entry=_Entry)
    cpdef bint resolve(self, object rid, object value) except -1
    @cython.locals(entry=_Entry)
    cpdef bint reject(self, object rid, object exc) except -1
    cpdef object next_deadline(self)
    @cython.locals(entry=_Entry, res=double, heap=list, slots=dict, entries=dict, ids=dict, out=list)
    cpdef list expire(self, double now)
    @cython.locals(e=_Entry)
    cpdef list drain(self)


cdef class SlotTimer:
    cdef readonly PendingTable table
    cdef object expired
    cdef object clock
    cdef readonly object loop
    cdef readonly object handle
    cdef readonly object at

    cpdef added(self, double deadline, object loop)
    cpdef arm(self)
    cpdef expire(self, double now)
    cpdef expire_due(self, double now)
    cpdef cancel(self)
