# Augments pomelo_rpc/core/client_protocol.py (compiled here through the
# client_protocol.py link): the protocol classes as extension types calling the
# table, the frame codec and the writer as C functions.

cimport cython

from pomelo_rpc._cy.frames cimport (FrameDecoder, call_fields, encode_notify,
                                    encode_notify_by_name, encode_request, encode_request_budget,
                                    encode_request_by_name, encode_request_by_name_budget,
                                    encode_request_by_name_traced, encode_request_traced)
from pomelo_rpc._cy.clock cimport monotonic
from pomelo_rpc._cy.coro cimport future_kwargs, new_future
from pomelo_rpc._cy.context cimport deadline as serving_deadline
from pomelo_rpc._cy.json_codec cimport JsonCodec
from pomelo_rpc._cy.meter cimport Meter, Series
from pomelo_rpc._cy.mqtt cimport answer_parts
from pomelo_rpc._cy.mqtt cimport encode_call_json as mqtt_encode_call
from pomelo_rpc._cy.pinus_tcp cimport encode_call_json as pinus_encode_call
from pomelo_rpc._cy.sampling cimport Sampler
from pomelo_rpc._cy.pending cimport PendingCall, PendingTable, SlotTimer, loop_deadlines
from pomelo_rpc._cy.writer cimport Writer

cdef object _NO_ROUTE

cpdef str route_of(object info)


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
    cdef public Meter meter
    cdef public double read_at
    cdef public Sampler tracer
    cdef public object on_sampled
    cdef public object trace
    cdef double budget_of
    cdef object budget
    cdef object future_loop
    cdef object future_kwargs
    cdef object loop_clock
    cdef object route_ns
    cdef object route_service
    cdef object route_method
    cdef str route

    @cython.locals(tracer=Sampler)
    cpdef object send(self, dict msg, object timeout)
    cpdef object send_plain(self, dict msg, object timeout)
    cpdef object send_carrying(self, dict msg, object timeout, object carried)
    @cython.locals(deadline=double, meter=Meter, start=double, seconds=double, now=double)
    cpdef object call(self, dict msg, object timeout)
    cdef str info(self, dict msg)
    cpdef bind(self, object loop)
    cdef object budget_for(self, double seconds)
    @cython.locals(meter=Meter)
    cpdef object register(self, object fut, object deadline, dict msg)
    cpdef tuple add(self, dict msg, object timeout)
    @cython.locals(left=double)
    cpdef send_queued(self, object rid, dict msg, object deadline)
    cpdef object notify(self, dict msg, object timeout)
    @cython.locals(rid=Py_ssize_t)
    cpdef Py_ssize_t reserve(self, object timeout) except -1
    cpdef send_failed(self, object rid, dict msg, object exc)
    @cython.locals(entry=PendingCall, series=Series, outcome=Py_ssize_t)
    cpdef resolve(self, object rid, object value)
    @cython.locals(entry=PendingCall)
    cpdef fail(self, object rid, object exc, double now)
    @cython.locals(meter=Meter)
    cpdef ended(self, PendingCall entry, object exc, double now)
    cpdef reject_remote(self, object rid, object type_name, object message, object stack,
                        object fields=*)
    @cython.locals(now=double, entry=PendingCall)
    cpdef timed_out(self, list entries)
    @cython.locals(now=double, meter=Meter)
    cpdef received(self, Py_ssize_t size=*)
    cpdef send_call(self, object rid, dict msg, object budget)
    cpdef send_notify(self, dict msg, object budget, object timeout)


cdef class NativeClientProtocol(ClientProtocol):
    cdef readonly FrameDecoder decoder
    cdef public dict ids
    cdef dict last_ids
    cdef object last_ns
    cdef object last_service
    cdef object last_method
    cdef object last_mid

    cdef object method_id(self, object ns, object service, object method)


cdef class ForwardingClientProtocol(ClientProtocol):
    pass


cdef class JsonClientProtocol(ForwardingClientProtocol):
    cdef readonly object packets
    cdef object kind_answer
    cdef Py_ssize_t payload_at
    cdef bint pinus
    cdef readonly JsonCodec codec
    cdef readonly dict heads
    cdef object last_ns
    cdef object last_type
    cdef object last_service
    cdef object last_method
    cdef bytes last_head
    cdef public bint plain_calls
    cdef public bint heard

    @cython.locals(packets=list, at=Py_ssize_t, checking=bint)
    cpdef data_received(self, object data)
    cpdef answer(self, object payload)
    @cython.locals(parts=tuple)
    cpdef bint common_answer(self, object payload) except -1
    cpdef bytes call_json(self, object rid, dict msg, object budget)
    @cython.locals(key=tuple)
    cpdef bytes call_head(self, dict msg)
