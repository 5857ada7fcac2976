# Augments pomelo_rpc/core/client_protocol.py (compiled here through the
# client_protocol.py link): the protocol classes as extension types calling the
# table, the frame codec and the writer as C functions.

cimport cython

from pomelo_rpc._cy.frames cimport (FrameDecoder, encode_notify, encode_notify_by_name,
                                    encode_request, encode_request_budget,
                                    encode_request_by_name, encode_request_by_name_budget,
                                    encode_request_by_name_traced, encode_request_traced)
from pomelo_rpc._cy.pending cimport PendingTable, SlotTimer
from pomelo_rpc._cy.writer cimport Writer


@cython.locals(ms=double, budget=long)
cdef long budget_ms(double seconds)


cdef class ClientProtocol:
    cdef public object owner
    cdef public object server_id
    cdef public Py_ssize_t pkg_size
    cdef public PendingTable table
    cdef readonly Writer writer
    cdef public object loop
    cdef readonly SlotTimer deadlines
    cdef public double last_recv
    cdef public bint traced
    cdef public bint open
    cdef public object dropped

    cpdef object send(self, dict msg, object timeout)
    cpdef object call(self, dict msg, object timeout)
    @cython.locals(rid=Py_ssize_t)
    cpdef tuple add(self, dict msg, object timeout)
    @cython.locals(left=double)
    cpdef send_queued(self, object rid, dict msg, object deadline)
    cpdef object notify(self, dict msg, object timeout)
    @cython.locals(rid=Py_ssize_t)
    cpdef Py_ssize_t reserve(self, object timeout) except -1
    cpdef send_failed(self, object rid, dict msg, object exc)
    cpdef reject_remote(self, object rid, object type_name, object message, object stack,
                        object fields=*)
    cpdef timed_out(self, list entries)
    @cython.locals(now=double)
    cpdef received(self)
    cpdef send_call(self, object rid, dict msg, object budget)
    cpdef send_notify(self, dict msg, object budget, object timeout)


cdef class NativeClientProtocol(ClientProtocol):
    cdef readonly FrameDecoder decoder
    cdef public dict ids


cdef class ForwardingClientProtocol(ClientProtocol):
    pass
