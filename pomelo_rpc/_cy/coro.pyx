# cython: language_level=3
"""One step of a coroutine in a context (Cython). Twin: ``pomelo_rpc/core/coro.py``.

The C API asyncio's own Task uses: the context entered and left around one
``PyIter_Send``, which reports a return without raising StopIteration.
"""

from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF

cdef extern from "Python.h":
    int PyIter_Send(object iterator, object arg, PyObject **presult) except -1
    int PyContext_Enter(object ctx) except -1
    int PyContext_Exit(object ctx) except -1

cdef enum:
    _RETURNED = 0     # PYGEN_RETURN (PYGEN_ERROR, -1, raises; PYGEN_NEXT is 1)


cpdef tuple step(object coro, object ctx):
    """Run ``coro`` in ``ctx`` until it returns or suspends: ``(True, its value)`` or
    ``(False, what it yielded)``; what it raises propagates."""
    cdef PyObject *result = NULL
    cdef int status
    PyContext_Enter(ctx)
    try:
        status = PyIter_Send(coro, None, &result)
    finally:
        PyContext_Exit(ctx)
    value = <object>result
    Py_DECREF(value)          # PyIter_Send gave a new reference; <object> took another
    return (status == _RETURNED, value)
