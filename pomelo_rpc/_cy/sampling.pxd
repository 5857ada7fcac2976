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
    cdef object spare           # the last traceparent handed out (``_spare``)

    cdef bint _sampled_root(self, uint64_t low)
    cdef object _spare(self)
    cpdef object new_root(self)
    cpdef object within(self, object parent)
    cpdef object outgoing(self)
    cpdef object incoming(self, object carried)
    cdef int _decide(self, object carried, uint64_t *low) except -1


cpdef int state(object value)
cpdef str child(str parent)


cdef class Served:
    cdef readonly Sampler sampler
    cdef object var
    cdef object token           # the read's first set's, or None
    cdef object value           # the str current (live), or the last one made
    cdef bint live              # ``var`` is ``value`` in the current context (this read)
    cdef bint reusable          # ``value`` may be rewritten for the next request
    cdef object vars            # the current context's variables after ``enter``
    cdef unsigned long long ver # the thread's context version after ``enter``
    cdef int steps              # coroutine first steps since ``enter``
    cdef bint kept              # each ran in a context whose variables were ``vars``

    cpdef bint enter(self, object carried) except -1
    cpdef stepped(self, object ctx)
    cpdef settle(self)
    cpdef clear(self)
    cpdef leave(self)
