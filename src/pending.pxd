cdef class PendingTable:
    cdef dict _entries
    cdef dict _slots
    cdef list _heap
    cdef Py_ssize_t _next_id
    cdef double _res
    cpdef Py_ssize_t add(self, object future, object deadline=*, object info=*) except -1
    cpdef object pop(self, object rid)
    cpdef bint resolve(self, object rid, object value) except -1
    cpdef bint reject(self, object rid, object exc) except -1
    cpdef list expire(self, double now)
