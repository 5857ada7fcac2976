# Augments pomelo_rpc/core/json_codec.py (compiled here through the json_codec.py link):
# the codec an extension type whose methods the JSON protocols call as C functions.

cimport cython

from pomelo_rpc._cy.mqtt cimport plain_json as _plain_json


cdef class RawJson:
    cdef readonly bytes data


cdef class JsonCodec:
    cdef readonly object slow_loads
    cdef readonly object slow_dumps
    cdef readonly object fast_loads
    cdef readonly object long_digits
    cdef readonly object fast_dumps
    cdef readonly object plain_json
    cdef readonly object json_string
    cdef readonly object raw_text

    cpdef object loads(self, object data)
    @cython.locals(raw=bytes, first=int)
    cpdef object loads_short(self, object data)
    @cython.locals(raw_json=RawJson, text=str)
    cpdef str dumps(self, object value)
    @cython.locals(raw_json=RawJson)
    cpdef bytes dumps_bytes(self, object value)
