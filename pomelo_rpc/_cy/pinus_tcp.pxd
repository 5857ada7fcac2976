# What other compiled modules may cimport from pinus_tcp.pyx: the decoder and the
# framers of the hot path, called as C functions.

cdef class PinusDecoder:
    cdef bytearray _buf
    cdef Py_ssize_t _max
    cpdef list feed(self, object data)

cpdef bytes encode(object kind, object payload=*)
cpdef bytes encode_request(object payload)
cpdef bytes encode_response(object payload)
cpdef bytes encode_call(object rid, object budget, bytes head, bytes args)
cpdef bytes encode_call_json(object rid, object budget, bytes head, object args,
                             object codec)
