# Augments pomelo_rpc/core/invoke.py (compiled here through the invoke.py link).

cimport cython

from pomelo_rpc._cy.client_protocol cimport ClientProtocol
from pomelo_rpc._cy.coro cimport as_list

cdef class Invoker:
    cdef public object client
    cdef public object station
    cdef dict mailboxes
    cdef public object route
    cdef public object route_context
    cdef public object timeout
    cdef public bint started
    cdef public bint plain
    cdef object last_mailbox
    cdef ClientProtocol last_direct

    cpdef object routed(self, object route_param, dict msg, object timeout, bint notify=*)
    cpdef object direct(self, object server_id, dict msg, object timeout)
    @cython.locals(direct=ClientProtocol)
    cpdef object call(self, object server_id, dict msg, object timeout)
    @cython.locals(direct=ClientProtocol)
    cpdef object notify(self, object server_id, dict msg, object timeout)


cdef class ProxyMethod:
    cdef readonly Invoker invoker
    cdef readonly object namespace
    cdef readonly object server_type
    cdef readonly object service
    cdef readonly object method
    cdef readonly object route
    cdef dict base

    cpdef dict message(self, tuple args)
