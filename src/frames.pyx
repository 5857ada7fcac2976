# cython: language_level=3, boundscheck=False, wraparound=False
"""Native frame codec (Cython). Twin: ``pomelo_rpc/core/frames.py``; same names, same behaviour.

A frame is a 4-byte big-endian body length followed by one msgpack object.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from libc.string cimport memcpy

import msgpack

from pomelo_rpc.errors import FrameError

cdef enum:
    _HDR = 4

HEADER_SIZE = _HDR
HELLO = 0
REQ_ID = 1
REQ_NAME = 2
RESP_OK = 3
RESP_ERR = 4
PING = 5
PONG = 6
PROTOCOL_VERSION = 1

cdef object _pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
cdef object _unpackb = msgpack.unpackb


cdef inline object _unpack(object body):
    return _unpackb(body, raw=False, strict_map_key=False)


cdef class FrameDecoder:
    """Incremental decoder: ``feed`` any split of the byte stream, get whole messages."""

    cdef bytearray _buf
    cdef Py_ssize_t _max

    def __cinit__(self, max_size=8 * 1024 * 1024):
        self._buf = bytearray()
        self._max = max_size

    @property
    def buffered(self):
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    cpdef list feed(self, object data):
        """Add ``data``; return the list of messages completed by it.

        Raises FrameError on an oversized frame or a body that is not one msgpack
        object; the stream is then unusable and the connection must be closed.
        """
        cdef bytearray buf = self._buf
        cdef Py_buffer pybuf
        cdef const unsigned char *p
        cdef Py_ssize_t n, off = 0, end
        cdef size_t size
        cdef list out = []
        cdef object view
        cdef bint buffered = len(buf) > 0
        if buffered:
            buf += data
            data = buf
        PyObject_GetBuffer(data, &pybuf, PyBUF_SIMPLE)
        try:
            p = <const unsigned char *>pybuf.buf
            n = pybuf.len
            view = None
            while n - off >= _HDR:
                size = ((<size_t>p[off] << 24) | (<size_t>p[off + 1] << 16)
                        | (<size_t>p[off + 2] << 8) | <size_t>p[off + 3])
                if self._max < 0 or size > <size_t>self._max:
                    raise FrameError(f"frame of {size} bytes exceeds pkg_size {self._max}")
                end = off + _HDR + <Py_ssize_t>size
                if end > n:
                    break
                if view is None:
                    view = memoryview(data)
                try:
                    out.append(_unpack(view[off + _HDR:end]))
                except Exception as exc:
                    raise FrameError(f"frame body is not one msgpack object: {exc}") from None
                off = end
        finally:
            if view is not None:
                view.release()
            PyBuffer_Release(&pybuf)
        if off == n:
            if buffered:
                del buf[:]
        elif buffered:
            del buf[:off]
        else:
            self._buf = bytearray(data[off:])
        return out


cpdef bytes encode(object message):
    """Encode one message (a list) as a frame."""
    cdef bytes body = _pack(message)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
    if n > 0xFFFFFFFF:
        raise FrameError(f"message of {n} bytes does not fit in a frame")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + _HDR)
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(out)
    p[0] = (n >> 24) & 0xFF
    p[1] = (n >> 16) & 0xFF
    p[2] = (n >> 8) & 0xFF
    p[3] = n & 0xFF
    memcpy(p + _HDR, PyBytes_AS_STRING(body), n)
    return out


def encode_request(rid, method_id, args):
    """A request naming its method by the id from the server's HELLO table."""
    return encode([REQ_ID, rid, method_id, args])


def encode_request_by_name(rid, namespace, service, method, args):
    """A request naming its method in full (before HELLO, or for a name not in it)."""
    return encode([REQ_NAME, rid, namespace, service, method, args])


def encode_response(rid, result):
    """A successful response; TypeError if ``result`` cannot be packed."""
    return encode([RESP_OK, rid, result])


def encode_error(rid, type_name, message, stack):
    """An error response."""
    return encode([RESP_ERR, rid, [type_name, message, stack]])


def encode_hello(table):
    """The server's greeting: its method table, whose indexes are the method ids."""
    return encode([HELLO, PROTOCOL_VERSION, table])


PING_FRAME = encode([PING])
PONG_FRAME = encode([PONG])
