cdef class FrameDecoder:
    cdef bytearray _buf
    cdef Py_ssize_t _max
    cpdef list feed(self, object data)

cpdef bytes encode(object message)
