# cython: language_level=3, boundscheck=False, wraparound=False
"""Native frame codec (Cython). Twin: ``pomelo_rpc/core/frames.py``; same names, same behaviour.
What other compiled modules cimport is declared in ``frames.pxd``.

A frame is a 4-byte big-endian body length followed by one msgpack object.
"""

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.dict cimport PyDict_Next
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_New, PyList_SET_ITEM, PyList_GET_SIZE, PyList_GET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int8_t, int16_t, int32_t, int64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t *size) except NULL
    int PyErr_ExceptionMatches(object exc) noexcept
    void PyErr_Clear() noexcept
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)

import sys

import msgpack

from pomelo_rpc.errors import FrameError

include "_stream.pxi"

cdef enum:
    _HDR = 4
    _REQ_ID = 1       # the kinds the list-free encoders write
    _RESP_OK = 3
    _NOTIFY_ID = 10

HEADER_SIZE = _HDR
HELLO = 0
REQ_ID = _REQ_ID
REQ_NAME = 2
RESP_OK = _RESP_OK
RESP_ERR = 4
PING = 5
PONG = 6
CHALLENGE = 7
AUTH = 8
AUTH_OK = 9
NOTIFY_ID = _NOTIFY_ID
NOTIFY_NAME = 11
PROTOCOL_VERSION = 1

# a call message's keys, interned as the proxies' messages have them (``call_fields``)
cdef str _NAMESPACE = sys.intern("namespace")
cdef str _SERVICE = sys.intern("service")
cdef str _METHOD = sys.intern("method")
cdef str _ARGS = sys.intern("args")

cdef object _msgpack_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
cdef object _unpackb = msgpack.unpackb


cdef inline object _unpack(object body):
    return _unpackb(body, raw=False, strict_map_key=False)


# The msgpack body codec ---------------------------------------------------------
# A fast path for the types RPC messages carry (nil, bool, int, float, str, bin,
# array, map). Anything else -- ext types, nesting deeper than _MAX_DEPTH, malformed
# or truncated data, a subclass of a built-in type -- is handed to msgpack itself, so
# the result, the bytes and the errors are exactly those of the pure-Python twin.

cdef enum:
    _MAX_DEPTH = 512


cdef class _Fallback(Exception):
    pass


# The encoders and the decoder try the fast path, and on some errors hand the message
# to msgpack. Not with try/except: a Cython try block saves the thread's exception
# state on entry (~45 instructions, four times per call). The fast path is called
# through a pointer that Cython does not check, the error looked at only when it
# failed: those errors cleared (msgpack decides), any other one re-raised as it is
# (``_reraise``: the error is already set, -1 sends Cython to its error path).
ctypedef int (*_fields_unchecked)(_Buffer, long, Py_ssize_t, object, object, object,
                                  object, object) noexcept
ctypedef int (*_pack_unchecked)(_Buffer, object, int) noexcept
ctypedef PyObject *(*_decode_unchecked)(const uint8_t *, Py_ssize_t *, Py_ssize_t,
                                        int) noexcept

cdef extern from *:
    """
    static CYTHON_INLINE int __pyx_frames_reraise(void) { return -1; }
    """
    int _reraise "__pyx_frames_reraise"() except -1

cdef tuple _ENCODE_FALLBACK = (_Fallback, UnicodeEncodeError, OverflowError, MemoryError)
cdef tuple _DECODE_FALLBACK = (_Fallback, UnicodeDecodeError, TypeError, MemoryError)


cdef inline bint _fall_back(tuple errors) except -1:
    """After a fast path failed (an error set): True, the error cleared, if it is one
    of ``errors`` (msgpack decides), else the error raised."""
    if PyErr_ExceptionMatches(errors):
        PyErr_Clear()
        return True
    return _reraise()


cdef inline uint16_t _be16(const uint8_t *p) nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline uint32_t _be32(const uint8_t *p) nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint64_t _be64(const uint8_t *p) nogil:
    return (<uint64_t>_be32(p) << 32) | _be32(p + 4)


cdef inline object _str(const uint8_t *s, Py_ssize_t n):
    """The str of the UTF-8 ``s[:n]``: an ASCII one copied straight into a new str (no
    decoder call), any other decoded (its errors raised as the decoder's)."""
    cdef Py_ssize_t i = 0
    cdef uint64_t high = 0
    cdef object out
    if n <= 64:
        if n >= 8:              # eight bytes at a time, the last eight overlapping
            while i < n - 8:
                high |= _load8(s + i)
                i += 8
            high |= _load8(s + n - 8)
        else:
            while i < n:
                high |= s[i]
                i += 1
        if (high & 0x8080808080808080ULL) == 0:
            out = PyUnicode_New(n, 127)
            memcpy(PyUnicode_DATA(out), s, n)
            return out
    return PyUnicode_DecodeUTF8(<const char *>s, n, NULL)


cdef object _decode_array(const uint8_t *p, Py_ssize_t *pos, Py_ssize_t end, Py_ssize_t n,
                          int depth):
    cdef list out
    cdef Py_ssize_t i
    cdef object item
    if n > end - pos[0]:          # each item takes at least one byte
        raise _Fallback()
    out = PyList_New(n)
    for i in range(n):
        item = _decode(p, pos, end, depth)
        Py_INCREF(item)
        PyList_SET_ITEM(out, i, item)
    return out


# Map keys and short str values: the short ASCII ones (field names, mostly, and the
# values a game repeats: routes, states, names) come from a small cache of the ones
# seen before, the way orjson and msgspec do it for keys: no new str per key, and the
# str's hash, computed once, is kept. Direct-mapped; bounded. A string of at most 16
# bytes is known by its length and two words read from it (overlapping: together they
# cover every byte), so that hashing it and telling it from the cached one take a few
# loads, no loop over its bytes and no memcmp.
cdef enum:
    _KEY_BITS = 9
    _KEY_SLOTS = 1 << _KEY_BITS
    _KEY_MAX = 16         # longest key cached, in bytes

cdef list _keys = [None] * _KEY_SLOTS
cdef uint64_t _key_lo[_KEY_SLOTS]     # the words and the length of ``_keys[i]``
cdef uint64_t _key_hi[_KEY_SLOTS]
cdef Py_ssize_t _key_len[_KEY_SLOTS]  # (0 where the slot is empty: "" is not cached)


cdef inline uint64_t _load8(const uint8_t *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint32_t _load4(const uint8_t *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef object _cached_str(const uint8_t *s, Py_ssize_t n):
    """The str of the UTF-8 ``s[:n]`` (n at most ``_KEY_MAX``): from the cache when it
    is an ASCII one seen before, else made (and cached if ASCII)."""
    cdef uint64_t lo, hi
    cdef Py_ssize_t h
    cdef object key
    if n >= 8:
        lo = _load8(s)
        hi = _load8(s + n - 8)
    elif n >= 4:
        lo = _load4(s)
        hi = _load4(s + n - 4)
    elif n > 0:
        lo = s[0] | (<uint64_t>s[n >> 1] << 8) | (<uint64_t>s[n - 1] << 16)
        hi = 0
    else:
        return _str(s, n)
    h = <Py_ssize_t>(((lo * 0x9E3779B97F4A7C15ULL) ^ (hi * 0xC2B2AE3D27D4EB4FULL)
                      ^ <uint64_t>n) >> (64 - _KEY_BITS))
    if _key_len[h] == n and _key_lo[h] == lo and _key_hi[h] == hi:
        return <object>PyList_GET_ITEM(_keys, h)
    key = _str(s, n)
    if PyUnicode_IS_COMPACT_ASCII(key):
        _keys[h] = key
        _key_lo[h] = lo
        _key_hi[h] = hi
        _key_len[h] = n
    return key


cdef object _decode_map(const uint8_t *p, Py_ssize_t *pos, Py_ssize_t end, Py_ssize_t n,
                        int depth):
    cdef dict out = {}
    cdef Py_ssize_t i
    if n > (end - pos[0]) // 2:   # each key and each value take at least one byte
        raise _Fallback()
    for i in range(n):
        key = _decode(p, pos, end, depth)
        out[key] = _decode(p, pos, end, depth)
    return out


cdef inline const uint8_t *_take(const uint8_t *p, Py_ssize_t *pos, Py_ssize_t end,
                                 Py_ssize_t n) except NULL:
    cdef Py_ssize_t at = pos[0]
    if n < 0 or end - at < n:
        raise _Fallback()
    pos[0] = at + n
    return p + at


cdef object _decode(const uint8_t *p, Py_ssize_t *pos, Py_ssize_t end, int depth):
    """One msgpack object from ``p[pos:end]``; _Fallback where msgpack must decide."""
    cdef const uint8_t *q = _take(p, pos, end, 1)
    cdef uint8_t b = q[0]
    cdef Py_ssize_t n
    cdef uint32_t f32
    cdef uint64_t u64
    cdef float fv
    cdef double dv
    if b <= 0x7f:
        return <long>b
    if b >= 0xe0:
        return <long>(<int8_t>b)
    if 0xa0 <= b <= 0xbf:
        n = b & 0x1f
        if n <= _KEY_MAX:       # a short str: cached like the map keys
            return _cached_str(_take(p, pos, end, n), n)
        return _str(_take(p, pos, end, n), n)
    if depth >= _MAX_DEPTH:
        raise _Fallback()
    if 0x90 <= b <= 0x9f:
        return _decode_array(p, pos, end, b & 0x0f, depth + 1)
    if 0x80 <= b <= 0x8f:
        return _decode_map(p, pos, end, b & 0x0f, depth + 1)
    if b == 0xc0:
        return None
    if b == 0xc2:
        return False
    if b == 0xc3:
        return True
    if b == 0xcc:
        return <long>_take(p, pos, end, 1)[0]
    if b == 0xcd:
        return <long>_be16(_take(p, pos, end, 2))
    if b == 0xce:
        return <unsigned long long>_be32(_take(p, pos, end, 4))
    if b == 0xcf:
        return <unsigned long long>_be64(_take(p, pos, end, 8))
    if b == 0xd0:
        return <long>(<int8_t>_take(p, pos, end, 1)[0])
    if b == 0xd1:
        return <long>(<int16_t>_be16(_take(p, pos, end, 2)))
    if b == 0xd2:
        return <long long>(<int32_t>_be32(_take(p, pos, end, 4)))
    if b == 0xd3:
        return <long long>(<int64_t>_be64(_take(p, pos, end, 8)))
    if b == 0xca:
        f32 = _be32(_take(p, pos, end, 4))
        memcpy(&fv, &f32, 4)
        return <double>fv
    if b == 0xcb:
        u64 = _be64(_take(p, pos, end, 8))
        memcpy(&dv, &u64, 8)
        return dv
    if b == 0xd9:
        n = _take(p, pos, end, 1)[0]
    elif b == 0xda:
        n = _be16(_take(p, pos, end, 2))
    elif b == 0xdb:
        n = _be32(_take(p, pos, end, 4))
    elif b == 0xc4:
        n = _take(p, pos, end, 1)[0]
        return PyBytes_FromStringAndSize(<const char *>_take(p, pos, end, n), n)
    elif b == 0xc5:
        n = _be16(_take(p, pos, end, 2))
        return PyBytes_FromStringAndSize(<const char *>_take(p, pos, end, n), n)
    elif b == 0xc6:
        n = _be32(_take(p, pos, end, 4))
        return PyBytes_FromStringAndSize(<const char *>_take(p, pos, end, n), n)
    elif b == 0xdc:
        return _decode_array(p, pos, end, _be16(_take(p, pos, end, 2)), depth + 1)
    elif b == 0xdd:
        return _decode_array(p, pos, end, _be32(_take(p, pos, end, 4)), depth + 1)
    elif b == 0xde:
        return _decode_map(p, pos, end, _be16(_take(p, pos, end, 2)), depth + 1)
    elif b == 0xdf:
        return _decode_map(p, pos, end, _be32(_take(p, pos, end, 4)), depth + 1)
    else:
        raise _Fallback()      # ext types, the never-used 0xc1
    return _str(_take(p, pos, end, n), n)


cdef object _decode_body(object data, const uint8_t *p, Py_ssize_t start, Py_ssize_t end):
    """The one msgpack object of ``p[start:end]``; msgpack's own errors as FrameError."""
    cdef Py_ssize_t pos = start
    cdef PyObject *got = (<_decode_unchecked>_decode)(p, &pos, end, 0)
    if got is NULL:
        _fall_back(_DECODE_FALLBACK)
    else:
        obj = <object>got
        Py_DECREF(obj)           # ``got`` was a new reference; ``obj`` holds one now
        if pos == end:
            return obj
        obj = None
    view = memoryview(data)
    try:
        return _unpack(view[start:end])
    except Exception as exc:
        raise FrameError(f"frame body is not one msgpack object: {exc}") from None
    finally:
        view.release()


@cython.final
cdef class _Buffer:
    """A growable byte buffer the encoder writes into; reused between messages."""
    cdef char *data
    cdef Py_ssize_t length
    cdef Py_ssize_t capacity

    def __cinit__(self):
        self.capacity = 4096
        self.data = <char *>malloc(self.capacity)
        if self.data is NULL:
            raise MemoryError()
        self.length = 0

    cdef inline int reserve(self, Py_ssize_t n) except -1:
        """Room for ``n`` more bytes (the common case inline: the room is there)."""
        if self.length + n <= self.capacity:
            return 0
        return self.grow(n)

    cdef int grow(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t want = self.length + n
        cdef Py_ssize_t cap = self.capacity
        cdef char *grown
        while cap < want:
            cap *= 2
        grown = <char *>realloc(self.data, cap)
        if grown is NULL:
            raise MemoryError()
        self.data = grown
        self.capacity = cap
        return 0

    cdef void shrink(self):
        """Give back the memory of a huge message (keep the usual 4 KiB)."""
        cdef char *small
        if self.capacity > 1 << 20:
            small = <char *>realloc(self.data, 4096)
            if small is not NULL:
                self.data = small
                self.capacity = 4096

    def __dealloc__(self):
        free(self.data)

    cdef inline int put(self, const void *src, Py_ssize_t n) except -1:
        self.reserve(n)
        memcpy(self.data + self.length, src, n)
        self.length += n
        return 0

    cdef inline int byte(self, uint8_t b) except -1:
        self.reserve(1)
        self.data[self.length] = <char>b
        self.length += 1
        return 0

    cdef inline int head(self, uint8_t b, uint64_t v, int size) except -1:
        """Byte ``b`` then ``v`` as a ``size``-byte (1, 2, 4 or 8) big-endian number."""
        cdef char *d
        self.reserve(1 + size)
        d = self.data + self.length
        d[0] = <char>b
        if size == 1:
            d[1] = <char>v
        elif size == 2:
            d[1] = <char>(v >> 8)
            d[2] = <char>v
        elif size == 4:
            d[1] = <char>(v >> 24)
            d[2] = <char>(v >> 16)
            d[3] = <char>(v >> 8)
            d[4] = <char>v
        else:
            d[1] = <char>(v >> 56)
            d[2] = <char>(v >> 48)
            d[3] = <char>(v >> 40)
            d[4] = <char>(v >> 32)
            d[5] = <char>(v >> 24)
            d[6] = <char>(v >> 16)
            d[7] = <char>(v >> 8)
            d[8] = <char>v
        self.length += 1 + size
        return 0


cdef _Buffer _out = _Buffer()


cdef int _pack_int(_Buffer buf, object o) except -1:
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(o, &overflow)
    cdef unsigned long long u
    if overflow > 0:
        u = o          # 2**63 .. 2**64-1; larger raises OverflowError -> msgpack decides
        buf.head(0xcf, u, 8)
    elif overflow < 0:
        raise _Fallback()
    elif v >= 0:
        if v < 0x80:
            buf.byte(<uint8_t>v)
        elif v < 0x100:
            buf.head(0xcc, v, 1)
        elif v < 0x10000:
            buf.head(0xcd, v, 2)
        elif v < 0x100000000:
            buf.head(0xce, v, 4)
        else:
            buf.head(0xcf, v, 8)
    elif v >= -32:
        buf.byte(<uint8_t>(<int8_t>v))
    elif v >= -128:
        buf.head(0xd0, <uint8_t>(<int8_t>v), 1)
    elif v >= -32768:
        buf.head(0xd1, <uint16_t>(<int16_t>v), 2)
    elif v >= -2147483648:
        buf.head(0xd2, <uint32_t>(<int32_t>v), 4)
    else:
        buf.head(0xd3, <uint64_t>v, 8)
    return 0


cdef inline int _pack_sized(_Buffer buf, Py_ssize_t n, uint8_t fix, Py_ssize_t fix_limit,
                     uint8_t c8, uint8_t c16, uint8_t c32) except -1:
    """A length header: fix form below ``fix_limit``, else the 8/16/32-bit forms (c8 0: none)."""
    if n < fix_limit:
        buf.byte(fix | <uint8_t>n)
    elif c8 and n < 0x100:
        buf.head(c8, n, 1)
    elif n < 0x10000:
        buf.head(c16, n, 2)
    elif n <= 0xFFFFFFFF:
        buf.head(c32, n, 4)
    else:
        raise _Fallback()
    return 0


cdef inline int _pack_str(_Buffer buf, object o) except -1:
    """A str (exactly): its UTF-8, an ASCII one's characters read in place."""
    cdef Py_ssize_t n
    cdef const char *s
    if PyUnicode_IS_COMPACT_ASCII(o):
        n = PyUnicode_GET_LENGTH(o)
        s = <const char *>PyUnicode_DATA(o)
        if n < 32:                  # a fixstr (most): its header and bytes at once
            buf.reserve(1 + n)
            buf.data[buf.length] = <char>(0xa0 | n)
            memcpy(buf.data + buf.length + 1, s, n)
            buf.length += 1 + n
            return 0
    else:
        s = PyUnicode_AsUTF8AndSize(o, &n)
    _pack_sized(buf, n, 0xa0, 32, 0xd9, 0xda, 0xdb)
    return buf.put(s, n)


cdef int _pack(_Buffer buf, object o, int depth) except -1:
    cdef type t = type(o)
    cdef Py_ssize_t n, i
    cdef const char *s
    cdef double d
    cdef uint64_t u
    cdef PyObject *k
    cdef PyObject *v
    if o is None:
        return buf.byte(0xc0)
    if t is bool:
        return buf.byte(0xc3 if o is True else 0xc2)
    if t is int:
        return _pack_int(buf, o)
    if t is str:
        return _pack_str(buf, o)
    if depth >= _MAX_DEPTH:
        raise _Fallback()
    if t is list:
        n = PyList_GET_SIZE(o)
        _pack_sized(buf, n, 0x90, 16, 0, 0xdc, 0xdd)
        for i in range(n):
            _pack(buf, <object>PyList_GET_ITEM(o, i), depth + 1)
        return 0
    if t is dict:
        n = len(<dict>o)
        _pack_sized(buf, n, 0x80, 16, 0, 0xde, 0xdf)
        i = 0
        while PyDict_Next(o, &i, &k, &v):
            if type(<object>k) is str:      # (most keys: no recursion)
                _pack_str(buf, <object>k)
            else:
                _pack(buf, <object>k, depth + 1)
            _pack(buf, <object>v, depth + 1)
        return 0
    if t is float:
        d = PyFloat_AS_DOUBLE(o)
        memcpy(&u, &d, 8)
        return buf.head(0xcb, u, 8)
    if t is bytes:
        n = PyBytes_GET_SIZE(o)
        _pack_sized(buf, n, 0, 0, 0xc4, 0xc5, 0xc6)
        return buf.put(PyBytes_AS_STRING(o), n)
    if t is tuple:
        n = PyTuple_GET_SIZE(o)
        _pack_sized(buf, n, 0x90, 16, 0, 0xdc, 0xdd)
        for i in range(n):
            _pack(buf, <object>PyTuple_GET_ITEM(o, i), depth + 1)
        return 0
    raise _Fallback()       # subclasses, bytearray, ext types...: msgpack decides


cdef class FrameDecoder:
    """Incremental decoder: ``feed`` any split of the byte stream, get whole messages."""
    # fields declared in frames.pxd

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
        cdef bint buffered = len(buf) > 0
        if buffered:
            buf += data
            data = buf
        PyObject_GetBuffer(data, &pybuf, PyBUF_SIMPLE)
        try:
            p = <const unsigned char *>pybuf.buf
            n = pybuf.len
            while n - off >= _HDR:
                size = ((<size_t>p[off] << 24) | (<size_t>p[off + 1] << 16)
                        | (<size_t>p[off + 2] << 8) | <size_t>p[off + 3])
                if self._max < 0 or size > <size_t>self._max:
                    raise FrameError(f"frame of {size} bytes exceeds pkg_size {self._max}")
                end = off + _HDR + <Py_ssize_t>size
                if end > n:
                    break
                out.append(_decode_body(data, p, off + _HDR, end))
                off = end
        finally:
            PyBuffer_Release(&pybuf)
        self._buf = _rest(buf, data, off, n, buffered)
        return out


cdef bytes _encode_with_msgpack(object message):
    cdef bytes body = _msgpack_pack(message)
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


cpdef bytes encode(object message):
    """Encode one message (a list) as a frame."""
    cdef _Buffer buf = _out
    buf.length = _HDR
    if (<_pack_unchecked>_pack)(buf, message, 0) < 0:
        _fall_back(_ENCODE_FALLBACK)
        buf.shrink()
        return _encode_with_msgpack(message)
    return _frame(buf)


cdef int _pack_fields(_Buffer buf, long kind, Py_ssize_t n, object f1, object f2,
                      object f3, object f4, object f5) except -1:
    """``[kind, f1, ..., fn]`` packed into ``buf`` after its header's room."""
    buf.length = _HDR
    buf.byte(0x90 | <uint8_t>(n + 1))     # a fixarray of n + 1
    buf.byte(<uint8_t>kind)
    _pack(buf, f1, 1)
    _pack(buf, f2, 1)
    if n > 2:
        _pack(buf, f3, 1)
    if n > 3:
        _pack(buf, f4, 1)
    if n > 4:
        _pack(buf, f5, 1)
    return 0


cdef bytes _encode_fields(long kind, Py_ssize_t n, object f1, object f2, object f3=None,
                          object f4=None, object f5=None):
    """The frame of ``encode([kind, f1, ..., fn])`` (n from 2 to 5), packed without
    making the list: the hot request and response."""
    cdef _Buffer buf = _out
    if (<_fields_unchecked>_pack_fields)(buf, kind, n, f1, f2, f3, f4, f5) < 0:
        _fall_back(_ENCODE_FALLBACK)
        buf.shrink()
        return _encode_with_msgpack([kind, f1, f2, f3, f4, f5][:n + 1])
    return _frame(buf)


cdef bytes _frame(_Buffer buf):
    """The frame of the message packed in ``buf`` after its header's room."""
    cdef Py_ssize_t n
    cdef unsigned char *p
    cdef bytes frame
    n = buf.length - _HDR
    if n > 0xFFFFFFFF:
        buf.shrink()
        raise FrameError(f"message of {n} bytes does not fit in a frame")
    p = <unsigned char *>buf.data
    p[0] = (n >> 24) & 0xFF
    p[1] = (n >> 16) & 0xFF
    p[2] = (n >> 8) & 0xFF
    p[3] = n & 0xFF
    frame = PyBytes_FromStringAndSize(buf.data, buf.length)
    buf.shrink()
    return frame


cpdef bytes encode_request(object rid, object method_id, object args):
    """A request naming its method by the id from the server's HELLO table."""
    return encode([REQ_ID, rid, method_id, args])


cpdef bytes encode_request_by_name(object rid, object namespace, object service, object method, object args):
    """A request naming its method in full (before HELLO, or for a name not in it)."""
    return encode([REQ_NAME, rid, namespace, service, method, args])


cpdef bytes encode_request_traced(object rid, object method_id, object args, object trace_id):
    """``encode_request`` carrying a trace id (``rpc_debug_log``) as a trailing field."""
    return encode([REQ_ID, rid, method_id, args, trace_id])


cpdef bytes encode_request_by_name_traced(object rid, object namespace, object service, object method, object args, object trace_id):
    """``encode_request_by_name`` carrying a trace id as a trailing field."""
    return encode([REQ_NAME, rid, namespace, service, method, args, trace_id])


cpdef bytes encode_request_budget(object rid, object method_id, object args, object trace_id,
                                  object budget_ms):
    """``encode_request`` carrying the caller's remaining budget in ms (and a trace id
    or None) as the trailing fields."""
    return _encode_fields(_REQ_ID, 5, rid, method_id, args, trace_id, budget_ms)


cpdef bytes encode_request_by_name_budget(object rid, object namespace, object service, object method, object args, object trace_id, object budget_ms):
    """``encode_request_by_name`` carrying the remaining budget in ms (and a trace id)."""
    return encode([REQ_NAME, rid, namespace, service, method, args, trace_id, budget_ms])


cpdef bytes encode_notify(object method_id, object args, object trace_id, object budget_ms):
    """A notify naming its method by the id from the server's HELLO table, with a
    trace id and the budget in ms when they are not None."""
    if budget_ms is not None:
        return _encode_fields(_NOTIFY_ID, 5, None, method_id, args, trace_id, budget_ms)
    if trace_id is not None:
        return _encode_fields(_NOTIFY_ID, 4, None, method_id, args, trace_id)
    return _encode_fields(_NOTIFY_ID, 3, None, method_id, args)


cpdef bytes encode_notify_by_name(object namespace, object service, object method,
                                  object args, object trace_id, object budget_ms):
    """A notify naming its method in full (before HELLO, or for a name not in it)."""
    if budget_ms is not None:
        return encode([NOTIFY_NAME, None, namespace, service, method, args, trace_id,
                       budget_ms])
    if trace_id is not None:
        return encode([NOTIFY_NAME, None, namespace, service, method, args, trace_id])
    return encode([NOTIFY_NAME, None, namespace, service, method, args])


cpdef tuple call_fields(dict msg):
    """``(namespace, service, method, args)`` of call message ``msg``, the fields its
    request frame carries; KeyError if one is missing. One pass over the entries when
    the keys are the interned names (a proxy's message: compared by identity, no
    hashing, no lookups), else looked up."""
    cdef PyObject *key
    cdef PyObject *value
    cdef PyObject *ns = NULL
    cdef PyObject *service = NULL
    cdef PyObject *method = NULL
    cdef PyObject *args = NULL
    cdef Py_ssize_t pos = 0
    cdef int found = 0
    # (borrowed references: nothing runs meanwhile; a key is in a dict once)
    while found < 4 and PyDict_Next(msg, &pos, &key, &value):
        if key == <PyObject *>_NAMESPACE:
            ns = value
        elif key == <PyObject *>_SERVICE:
            service = value
        elif key == <PyObject *>_METHOD:
            method = value
        elif key == <PyObject *>_ARGS:
            args = value
        else:
            continue
        found += 1
    if found < 4:
        return msg["namespace"], msg["service"], msg["method"], msg["args"]
    return <object>ns, <object>service, <object>method, <object>args


cpdef bytes encode_response(object rid, object result):
    """A successful response; TypeError if ``result`` cannot be packed."""
    return _encode_fields(_RESP_OK, 2, rid, result)


cpdef bytes encode_error(object rid, object type_name, object message, object stack,
                         object fields=None):
    """An error response; ``fields`` (the error's own, e.g. its ``code``) when not None."""
    if fields is None:
        return encode([RESP_ERR, rid, [type_name, message, stack]])
    return encode([RESP_ERR, rid, [type_name, message, stack, fields]])


def encode_hello(table):
    """The server's greeting: its method table, whose indexes are the method ids."""
    return encode([HELLO, PROTOCOL_VERSION, table])


def encode_challenge(nonce):
    """The server's first frame when it requires an auth_token: a fresh nonce."""
    return encode([CHALLENGE, PROTOCOL_VERSION, nonce])


def encode_auth(proof, nonce):
    """The client's answer to a challenge: its proof and a nonce of its own."""
    return encode([AUTH, proof, nonce])


def encode_auth_ok(proof):
    """The server's proof that it holds the token too (sent just before HELLO)."""
    return encode([AUTH_OK, proof])


PING_FRAME = encode([PING])
PONG_FRAME = encode([PONG])
