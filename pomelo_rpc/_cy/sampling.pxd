# What other compiled modules cimport from sampling.pyx.

from libc.stdint cimport uint64_t


cdef class Sampler:
    cdef readonly int mode
    cdef readonly uint64_t bound
    cdef readonly bint parent_based
    cdef readonly int flags
    cdef readonly object trace_var
    cdef readonly object otel_var
    cdef readonly object span_key
    cdef readonly object current_span
    cdef readonly object span_parent
    cdef readonly object trace_id

    cdef bint _sampled_root(self, uint64_t low)
    cpdef object new_root(self)
    cpdef object within(self, object parent)
    cpdef object outgoing(self)
    cpdef object incoming(self, object carried)


cpdef int state(object value)
cpdef str child(str parent)
