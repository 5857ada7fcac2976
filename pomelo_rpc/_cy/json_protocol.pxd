# Augments pomelo_rpc/core/json_protocol.py (compiled here through the json_protocol.py
# link): the JSON transports' protocol class an extension type over ServerProtocol's,
# its reads, requests and answers in C.

cimport cython

from pomelo_rpc._cy.clock cimport monotonic
from pomelo_rpc._cy.json_codec cimport JsonCodec
from pomelo_rpc._cy.mqtt cimport answer_payload, request_parts
from pomelo_rpc._cy.server_protocol cimport ServerProtocol


cdef class JsonServerProtocol(ServerProtocol):
    cdef public object packets
    cdef public object kind_request
    cdef public Py_ssize_t payload_at
    cdef public object publish
    cdef public JsonCodec codec
    cdef object result_payload
    cdef public dict heads
    cdef bytes last_head
    cdef tuple last_route
    cdef public bint buffer_msg
    cdef public bint heard

    cpdef list decode(self, object data)
    @cython.locals(arrived=double, at=Py_ssize_t, pkg=object, msg=object, rid=object,
                   packets=list, heads=dict, parts=tuple, route=tuple,
                   head=bytes)
    cpdef data_received(self, object data)
    cpdef learn(self, bytes head)
    cpdef bytes encode_result(self, object rid, object result)
    cpdef respond(self, bytes data)
    cpdef send(self, bytes data)
