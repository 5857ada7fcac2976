# Augments pomelo_rpc/core/server_protocol.py (compiled here through the
# server_protocol.py link): the protocol class an extension type calling the frame
# decoder, the dispatcher, the encoders and the writer as C functions.

cimport cython

from pomelo_rpc._cy.clock cimport monotonic
from pomelo_rpc._cy.context cimport (copy_current, reset_deadline, reset_trace, set_deadline,
                                     set_trace)
from pomelo_rpc._cy.coro cimport Suspended, step
from pomelo_rpc._cy.dispatch cimport Dispatcher
from pomelo_rpc._cy.frames cimport FrameDecoder, encode_error, encode_response
from pomelo_rpc._cy.meter cimport Meter
from pomelo_rpc._cy.sampling cimport Sampler, Served
from pomelo_rpc._cy.writer cimport Slice, Writer


cdef Py_ssize_t DONE, PENDING


cdef class Resume:
    cdef readonly object coro
    cdef object yielded
    cdef bint started


cdef class ServerProtocol


cdef double COALESCE_MIN, COALESCE_WEIGHT, BACKOFF_FIRST, BACKOFF_MAX
cdef Py_ssize_t HOLD_BYTES, FRUITLESS


cdef class ReadCoalescer:
    cdef readonly double window
    cdef readonly list held
    cdef readonly object timer
    cdef public Py_ssize_t holds

    cpdef hold(self, ServerProtocol protocol)
    @cython.locals(held=list, protocol=ServerProtocol)
    cpdef release(self)
    cpdef forget(self, ServerProtocol protocol)
    cpdef close(self)


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
    cdef readonly Py_ssize_t cap
    cdef readonly bint plain
    cdef readonly bint no_default
    cdef readonly Slice turn_slice
    cdef public object queue
    cdef readonly set tasks
    cdef public object stopping
    cdef public bint handshaking
    cdef public bint aborted
    cdef public bint tracing
    cdef public bint reading_paused
    cdef public Py_ssize_t reads
    cdef public Meter meter
    cdef public Sampler tracer
    cdef public Served served
    cdef public object traced_dispatch
    cdef public double read_deadline
    cdef public object read_token
    cdef public ReadCoalescer coalescer
    cdef public double read_gap
    cdef double last_read
    cdef public bint held
    cdef object setsockopt
    cdef bint judging
    cdef Py_ssize_t fruitless
    cdef public double backoff
    cdef double quiet_until

    @cython.locals(n=Py_ssize_t, inline=bint, live=bint, plain=bint, no_default=bint, arrived=double,
                   last=double, msgs=list, cap=Py_ssize_t, started=bint, end=double,
                   timed=bint, at=double, ms=long, served=Served)
    cpdef data_received(self, object data)
    cpdef list read(self, object data)
    @cython.locals(coalescer=ReadCoalescer, window=double, now=double, gap=double,
                   backoff=double)
    cpdef pace(self, Py_ssize_t n)
    cpdef bint hold_reads(self) except -1
    cpdef release_reads(self)
    cpdef list decode(self, object data)
    @cython.locals(n=Py_ssize_t)
    cpdef bint notify_request(self, object msg) except -1
    @cython.locals(deadline=double, slice_end=double)
    cpdef accept(self, object request, object rid, object budget, double arrived)
    @cython.locals(served=Served)
    cpdef run_accepted(self, object request, object rid, object deadline)
    cpdef clear_deadline(self)
    cpdef end_read(self)
    @cython.locals(end=double)
    cpdef submit(self, object request, object rid, object budget, double arrived)
    cpdef run_entry(self, tuple entry, object now=*)
    cpdef run_request(self, object request, object rid, object deadline)
    @cython.locals(tracer=Sampler)
    cpdef object incoming(self, object request)
    @cython.locals(n=Py_ssize_t)
    cpdef object trace_field(self, list request)
    @cython.locals(meter=Meter, start=double, dispatcher=Dispatcher, state=Py_ssize_t)
    cpdef run_dispatched(self, object request, object rid, object deadline, object dispatch)
    cpdef fail(self, object request, object rid, object exc)
    @cython.locals(meter=Meter, suspended=Suspended)
    cpdef run_coroutine(self, object rid, object coro, object deadline, object request=*,
                        double start=*)
    cpdef respond(self, bytes data)
    cpdef send(self, bytes data)
    cpdef bint is_ping(self, object msg)
    cpdef respond_pong(self)
    cpdef bytes encode_result(self, object rid, object result)
    cpdef bytes encode_failure(self, object rid, object exc)
    cpdef bytes encode_busy(self, object rid)
