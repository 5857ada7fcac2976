# cython: language_level=3, boundscheck=False, wraparound=False
"""pinus-rpc's tcp framing (Cython). Twin: ``pomelo_rpc/core/pinus_tcp.py``; same names,
same behaviour. What other compiled modules may cimport is declared in ``pinus_tcp.pxd``.

A frame: the length of what follows as a big-endian base-128 varint (composer.ts), one
type byte, the payload (UTF-8 JSON); decoded as ``(type, payload bytes)``.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from libc.string cimport memcpy

from pomelo_rpc.errors import FrameError

include "_stream.pxi"
include "_digits.pxi"

cdef enum:
    _REQUEST = 0
    _PING = 1
    _PONG = 2
    _RESPONSE = 3
    _MAX_LENGTH_BYTES = 5

REQUEST = _REQUEST
PING = _PING
PONG = _PONG
RESPONSE = _RESPONSE
MAX_LENGTH_BYTES = _MAX_LENGTH_BYTES
cdef unsigned long long _MAX_LENGTH = (1ULL << (7 * _MAX_LENGTH_BYTES)) - 1

PING_FRAME = b"\x01\x01"
PONG_FRAME = b"\x01\x02"

cdef tuple _PING_T = (_PING, b"")
cdef tuple _PONG_T = (_PONG, b"")


cdef class PinusDecoder:
    """Incremental decoder: ``feed`` any split of the byte stream, get whole frames."""
    # fields declared in pinus_tcp.pxd

    def __cinit__(self, max_size=8 * 1024 * 1024):
        self._buf = bytearray()
        self._max = max_size

    @property
    def buffered(self):
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    cpdef list feed(self, object data):
        """Add ``data``; return the ``(type, payload)`` of each frame completed by it.

        Raises FrameError on a bad length or type (see the module docstring); the
        stream is then unusable and the connection must be closed.
        """
        cdef bytearray buf = self._buf
        cdef Py_buffer pybuf
        cdef const unsigned char *p
        cdef Py_ssize_t n, off = 0, pos, end
        cdef unsigned long long size, mx
        cdef unsigned int byte, kind
        cdef bint complete
        cdef list out = []
        cdef bint buffered = len(buf) > 0
        if buffered:
            buf += data
            data = buf
        # a negative max_size refuses every frame, as the twin's comparison does
        mx = <unsigned long long>self._max if self._max >= 0 else 0
        PyObject_GetBuffer(data, &pybuf, PyBUF_SIMPLE)
        try:
            p = <const unsigned char *>pybuf.buf
            n = pybuf.len
            while off < n:
                if p[off] == 0x80:
                    raise FrameError("pinus tcp frame length with a leading zero group")
                size = 0
                pos = off
                complete = False
                while pos < n:
                    byte = p[pos]
                    pos += 1
                    size = (size << 7) | (byte & 0x7F)
                    if self._max < 0 or size > mx:
                        raise FrameError(f"pinus tcp frame of {size} bytes exceeds "
                                         f"pkg_size {self._max}")
                    if not byte & 0x80:
                        complete = True
                        break
                    if pos - off == _MAX_LENGTH_BYTES:
                        raise FrameError(f"pinus tcp frame length is longer than "
                                         f"{_MAX_LENGTH_BYTES} bytes")
                if not complete:
                    break
                if size == 0:
                    raise FrameError("pinus tcp frame of 0 bytes (no type)")
                if <unsigned long long>(n - pos) < size:
                    break
                end = pos + <Py_ssize_t>size
                kind = p[pos]
                if kind > _RESPONSE:
                    raise FrameError(f"unknown pinus tcp frame type {kind}")
                if size == 1 and kind == _PING:
                    out.append(_PING_T)
                elif size == 1 and kind == _PONG:
                    out.append(_PONG_T)
                else:
                    out.append((<int>kind, PyBytes_FromStringAndSize(
                        <const char *>p + pos + 1, end - pos - 1)))
                off = end
        finally:
            PyBuffer_Release(&pybuf)
        self._buf = _rest(buf, data, off, n, buffered)
        return out


cpdef bytes encode(object kind, object payload=b""):
    """The frame of type ``kind`` carrying ``payload`` (bytes)."""
    if not 0 <= kind <= 0xFF:
        raise FrameError(f"pinus tcp frame type {kind} out of range")
    return _frame(kind, payload)


cdef inline int _put_length(char *w, unsigned long long v):
    """Write frame length ``v`` at ``w``, seven bits a byte, highest first (NULL: only
    count); the number of bytes."""
    cdef int n = 1, i
    cdef unsigned long long rest = v >> 7
    while rest:
        n += 1
        rest >>= 7
    if w != NULL:
        for i in range(n - 1, -1, -1):
            w[i] = <char>((v & 0x7F) | (0x80 if i < n - 1 else 0))
            v >>= 7
    return n


cdef bytes _frame(int kind, object payload):
    cdef Py_buffer pybuf
    cdef unsigned long long length
    cdef int lsize
    cdef bytes out
    cdef char *w
    PyObject_GetBuffer(payload, &pybuf, PyBUF_SIMPLE)
    try:
        length = <unsigned long long>pybuf.len + 1
        if length > _MAX_LENGTH:
            raise FrameError(f"pinus tcp frame of {length} bytes is too long to frame")
        lsize = _put_length(NULL, length)
        out = PyBytes_FromStringAndSize(NULL, lsize + 1 + pybuf.len)
        w = PyBytes_AS_STRING(out)
        _put_length(w, length)
        w[lsize] = <char>kind
        memcpy(w + lsize + 1, pybuf.buf, pybuf.len)
    finally:
        PyBuffer_Release(&pybuf)
    return out


cpdef bytes encode_request(object payload):
    """A REQUEST frame: ``payload`` is the JSON of a request (or of an array of them)."""
    return _frame(_REQUEST, payload)


cpdef bytes encode_response(object payload):
    """A RESPONSE frame: ``payload`` is the JSON of an answer (or of an array of them)."""
    return _frame(_RESPONSE, payload)


cdef bytes _call_frame(object rid, object budget, bytes head, const char *args,
                       Py_ssize_t na):
    """The REQUEST frame of a call whose arguments' JSON text is ``args[:na]``."""
    cdef long long r, b
    cdef bint has_budget
    cdef Py_ssize_t body
    cdef unsigned long long length
    cdef int lsize
    cdef bytes out
    cdef char *w
    body = _call_size(rid, budget, head, na, &r, &has_budget, &b)
    length = <unsigned long long>body + 1
    if length > _MAX_LENGTH:
        raise FrameError(f"pinus tcp frame of {length} bytes is too long to frame")
    lsize = _put_length(NULL, length)
    out = PyBytes_FromStringAndSize(NULL, lsize + 1 + body)
    w = PyBytes_AS_STRING(out)
    _put_length(w, length)
    w[lsize] = _REQUEST
    _call_body(w + lsize + 1, r, has_budget, b, head, args, na)
    return out


cpdef bytes encode_call(object rid, object budget, bytes head, bytes args):
    """The REQUEST frame of a call: ``{"id":<rid>,"budget":<budget><head><args>}}`` (no
    ``"budget"`` when it is None), ``head`` and ``args`` being JSON text already (the
    request's ``,"msg":{...,"args":`` and its arguments); ``rid`` and ``budget`` ints
    of at most 64 bits."""
    return _framed_text(_call_frame, rid, budget, head, args)


cpdef bytes encode_call_json(object rid, object budget, bytes head, object args,
                             object codec):
    """``encode_call(rid, budget, head, codec.dumps_bytes(args))``: the usual small args
    (see ``_json_text.pxi``) written in the frame as ``json`` writes them, without
    the codec and without a text of their own."""
    return _framed_json(_call_frame, rid, budget, head, args, codec)
