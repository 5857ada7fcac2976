# Augments pomelo_rpc/core/forward.py (compiled here through the forward.py link): a
# backend server's forwardMessage an extension type, its common case in C.

cimport cython

from pomelo_rpc._cy.json_codec cimport JsonCodec, RawJson
from pomelo_rpc._cy.mqtt cimport json_suffixed


cdef class SessionFields:
    cdef public object id
    cdef public object frontend_id
    cdef public object uid
    cdef public object settings
    cdef public object _app


@cython.locals(fields=dict, made=SessionFields)
cpdef object new_session(object cls, object app, object obj, tuple keys=*)


@cython.locals(obj=dict)
cpdef object handler_body(object body, object route)


cdef class Forwarder:
    cdef readonly object app
    cdef readonly object handlers
    cdef readonly object filters
    cdef list befores
    cdef list afters
    cdef object server_type
    cdef readonly object session_class
    cdef readonly tuple keys
    cdef object route_key
    cdef object body_key
    cdef object type_key
    cdef object last_routes
    cdef object last_route
    cdef tuple last_entry
    cdef JsonCodec codec
    cdef object notify_answer
    cdef object slow
    cdef object finish
    cdef object failed

    @cython.locals(request=dict, routes=dict, entry=tuple, notify=bint, data=bytes)
    cpdef object forwardMessage(self, object msg, object session)
