# What other compiled modules cimport from frames.pyx (the protocol classes): the
# decoder and the encoders of the hot path, called as C functions.

cdef class FrameDecoder:
    cdef bytearray _buf
    cdef Py_ssize_t _max
    cpdef list feed(self, object data)

cpdef bytes encode(object message)
cpdef bytes encode_request(object rid, object method_id, object args)
cpdef bytes encode_request_by_name(object rid, object namespace, object service,
                                   object method, object args)
cpdef bytes encode_request_budget(object rid, object method_id, object args,
                                  object trace_id, object budget_ms)
cpdef bytes encode_request_by_name_budget(object rid, object namespace, object service,
                                          object method, object args, object trace_id,
                                          object budget_ms)
cpdef bytes encode_request_traced(object rid, object method_id, object args, object trace_id)
cpdef bytes encode_request_by_name_traced(object rid, object namespace, object service,
                                          object method, object args, object trace_id)
cpdef bytes encode_notify(object method_id, object args, object trace_id, object budget_ms)
cpdef bytes encode_notify_by_name(object namespace, object service, object method,
                                  object args, object trace_id, object budget_ms)
cpdef tuple call_fields(dict msg)
cpdef bytes encode_response(object rid, object result)
cpdef bytes encode_error(object rid, object type_name, object message, object stack,
                         object fields=*)
