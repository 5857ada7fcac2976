# Augments pomelo_rpc/core/writer.py (compiled here through the writer.py link).

cdef Py_ssize_t WRITE_CHUNK


cdef class Writer:
    cdef public object transport
    cdef object _loop
    cdef list _out
    cdef bint _scheduled
    cdef public bint closed
    cdef object _sent
    cdef object _flushed

    cpdef write(self, bytes data)
    cpdef queue(self, bytes data)
    cpdef flush(self)
    cpdef flush_now(self)
    cpdef object sent(self)
    cdef _send(self)
    cdef _flushed_now(self, bint written)
