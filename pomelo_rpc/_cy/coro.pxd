# What the server protocol and the dispatcher cimport from coro.pyx.

cdef class Suspended:
    cdef readonly object value

cpdef object step(object coro, object ctx)
cpdef object call_list(object func, list args)
cpdef list as_list(tuple items)
cpdef object future_kwargs(object loop)
cpdef object new_future(object loop, object kwargs)
