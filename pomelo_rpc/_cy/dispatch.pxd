# Augments pomelo_rpc/core/dispatch.py (compiled here through the dispatch.py link).

cimport cython

from pomelo_rpc._cy.coro cimport call_list


cdef class Method:
    cdef readonly Py_ssize_t mid
    cdef readonly object namespace
    cdef readonly object service
    cdef readonly object name
    cdef readonly object func
    cdef readonly Py_ssize_t min_args
    cdef readonly Py_ssize_t max_args
    cdef readonly bint is_async


cdef class Dispatcher:
    cdef public Py_ssize_t state
    cdef list _methods
    cdef dict _by_name
    cdef dict _namespaces
    cdef list _keys
    cdef dict _ids
    cdef tuple _last_key
    cdef Method _last

    cpdef Method by_id(self, object mid)
    @cython.locals(last=tuple)
    cpdef Method by_name(self, object namespace, object service, object name)
    cpdef object call(self, Method method, list args)
    cpdef tuple dispatch(self, object msg)
    @cython.locals(n=Py_ssize_t, method=Method)
    cpdef object run(self, object msg)
