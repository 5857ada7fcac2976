# cython: language_level=3
"""One step of a coroutine in a context (Cython). Twin: ``pomelo_rpc/core/coro.py``.

The C API asyncio's own Task uses: the context entered and left around one
``PyIter_Send``, which reports a return without raising StopIteration. And a call
with the items of a list as its arguments, through vectorcall (no tuple made). And
a client's future of a call made by calling the future type with a kept dict.
"""

from cpython.object cimport PyObject
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE

from cpython.object cimport PyObject_Call
from cpython.sequence cimport PySequence_Fast_ITEMS

import asyncio

cdef object _Future = asyncio.Future
cdef tuple _NO_ARGS = ()
cdef list _PLAIN_CREATE = [asyncio.BaseEventLoop.create_future]
try:
    import uvloop
    _PLAIN_CREATE.append(uvloop.Loop.create_future)
except ImportError:
    pass

cdef extern from "Python.h":
    object PyObject_Vectorcall(object callable, PyObject **args, size_t nargsf,
                               PyObject *kwnames)
    int PyIter_Send(object iterator, object arg, PyObject **presult) except -1
    int PyContext_Enter(object ctx) except -1
    int PyContext_Exit(object ctx) except -1

cdef enum:
    _RETURNED = 0     # PYGEN_RETURN (PYGEN_ERROR, -1, raises; PYGEN_NEXT is 1)


cdef class Suspended:
    """What ``step`` returns when the coroutine suspended: what it yielded."""

    def __init__(self, value):
        self.value = value


cpdef object step(object coro, object ctx):
    """Run ``coro`` in ``ctx`` until it returns or suspends: its value, or a
    ``Suspended`` holding what it yielded; what it raises propagates."""
    cdef PyObject *result = NULL
    cdef int status
    cdef Suspended suspended
    PyContext_Enter(ctx)
    try:
        status = PyIter_Send(coro, None, &result)
    finally:
        PyContext_Exit(ctx)
    value = <object>result
    Py_DECREF(value)          # PyIter_Send gave a new reference; <object> took another
    if status == _RETURNED:
        return value
    suspended = Suspended.__new__(Suspended)
    suspended.value = value
    return suspended


cpdef object call_list(object func, list args):
    """``func(*args)``: the list's items passed as they are, no tuple made (the list
    is held, and nobody the call reaches has it, so its items stay put)."""
    return PyObject_Vectorcall(func, PySequence_Fast_ITEMS(args), len(args), NULL)


cpdef list as_list(tuple items):
    """``list(items)``: the list made at its size and the items set in it (CPython's
    ``list(tuple)`` makes an empty list and extends it)."""
    cdef Py_ssize_t i, n = PyTuple_GET_SIZE(items)
    cdef list out = PyList_New(n)
    cdef object item
    for i in range(n):
        item = <object>PyTuple_GET_ITEM(items, i)
        Py_INCREF(item)
        PyList_SET_ITEM(out, i, item)
    return out


cpdef object future_kwargs(object loop):
    """What ``new_future`` makes the futures of ``loop`` with: ``{"loop": loop}`` when
    its ``create_future`` is asyncio's or uvloop's (which make exactly that), else None."""
    create = getattr(type(loop), "create_future", None)
    for plain in _PLAIN_CREATE:
        if create is plain:
            return {"loop": loop}
    return None


cpdef object new_future(object loop, object kwargs):
    """``loop.create_future()``; with ``kwargs`` (``future_kwargs(loop)``) the future
    made as it would: the type called with the dict, no method looked up."""
    if kwargs is None:
        return loop.create_future()
    return PyObject_Call(_Future, _NO_ARGS, kwargs)
