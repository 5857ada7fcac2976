# Augments pomelo_rpc/core/server_protocol.py (compiled here through the
# server_protocol.py link): the protocol class an extension type calling the frame
# decoder, the dispatcher, the encoders and the writer as C functions.

cimport cython

from pomelo_rpc._cy.coro cimport step
from pomelo_rpc._cy.dispatch cimport Dispatcher
from pomelo_rpc._cy.frames cimport FrameDecoder, encode_error, encode_response
from pomelo_rpc._cy.writer cimport Writer


cdef class Resume:
    cdef readonly object coro
    cdef object yielded
    cdef bint started


cdef class ServerProtocol:
    cdef public object owner
    cdef readonly Writer writer
    cdef public object transport
    cdef public object loop
    cdef readonly FrameDecoder decoder
    cdef readonly Dispatcher dispatcher
    cdef readonly object own_dispatch
    cdef public object dispatch
    cdef public object overload
    cdef public object queue
    cdef readonly set tasks
    cdef public object stopping
    cdef public bint handshaking
    cdef public bint aborted
    cdef public bint tracing
    cdef public bint reading_paused
    cdef public Py_ssize_t reads

    @cython.locals(n=Py_ssize_t, inline=bint, live=bint, plain=bint, no_default=bint, arrived=double,
                   last=double, msgs=list)
    cpdef data_received(self, object data)
    cpdef list read(self, object data)
    cpdef list decode(self, object data)
    @cython.locals(n=Py_ssize_t)
    cpdef bint notify_request(self, object msg) except -1
    cpdef submit(self, object request, object rid, object budget, double arrived)
    cpdef run_entry(self, tuple entry, object now=*)
    cpdef run_request(self, object request, object rid, object deadline)
    cpdef fail(self, object request, object rid, object exc)
    cpdef run_coroutine(self, object rid, object coro, object deadline, object request=*)
    cpdef respond(self, bytes data)
    cpdef send(self, bytes data)
    cpdef bint is_ping(self, object msg)
    cpdef respond_pong(self)
    cpdef bytes encode_result(self, object rid, object result)
    cpdef bytes encode_failure(self, object rid, object exc)
    cpdef bytes encode_busy(self, object rid)
