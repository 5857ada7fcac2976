# cython: language_level=3
"""The context variables of the call path (Cython). Twin: ``pomelo_rpc/core/context.py``.

The deadline of the call being served (``pomelo_rpc.deadline.current_deadline``) read,
set and reset, the trace context of the request being served set and reset, and a
copy of the current context, through the C API: no method is
looked up, no Python frame runs.
"""

from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF
from cpython.contextvars cimport PyContext_CopyCurrent

cdef extern from "Python.h":
    int PyContextVar_Get(object var, PyObject *default_value, PyObject **value) except -1
    object PyContextVar_Set(object var, object value)
    int PyContextVar_Reset(object var, object token) except -1

from pomelo_rpc.deadline import current_deadline
from pomelo_rpc.tracing import current_trace

cdef object _deadline = current_deadline
cdef object _trace = current_trace


cpdef object deadline():
    """The deadline of the call being served, or None."""
    cdef PyObject *value = NULL
    PyContextVar_Get(_deadline, NULL, &value)
    if value is NULL:
        return None
    result = <object>value      # a new reference, which <object> does not take over
    Py_DECREF(result)
    return result


cpdef object set_deadline(object value):
    """Make ``value`` the deadline of the call being served; a token for ``reset_deadline``."""
    return PyContextVar_Set(_deadline, value)


cpdef reset_deadline(object token):
    """Undo a ``set_deadline``."""
    PyContextVar_Reset(_deadline, token)


cpdef object set_trace(object value):
    """Make ``value`` (a traceparent) the trace context of the request being served;
    a token for ``reset_trace``."""
    return PyContextVar_Set(_trace, value)


cpdef reset_trace(object token):
    """Undo a ``set_trace``."""
    PyContextVar_Reset(_trace, token)


cpdef object copy_current():
    """A copy of the current context."""
    return PyContext_CopyCurrent()
