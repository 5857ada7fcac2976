# cython: language_level=3, boundscheck=False, wraparound=False
"""MQTT 3.1.1 codec (Cython). Twin: ``pomelo_rpc/core/mqtt.py``; same names, same behaviour.

A packet is decoded as a tuple whose first item is its type:

- ``(CONNECT, client_id, keepalive, username, password)`` (``username`` a str and
  ``password`` bytes when their CONNECT flags are set, else None)
- ``(CONNACK, session_present, return_code)``
- ``(PUBLISH, topic, payload, qos, packet_id)`` (``packet_id`` is None at QoS 0)
- ``(PUBACK|PUBREC|PUBREL|PUBCOMP, packet_id)``
- ``(PINGREQ,)``, ``(PINGRESP,)``, ``(DISCONNECT,)``
- ``(SUBSCRIBE|SUBACK|UNSUBSCRIBE|UNSUBACK, body)`` (body bytes, not interpreted)

``max_size`` bounds the remaining length (the bytes after the fixed header).
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t
from libc.string cimport memcmp, memcpy

import time
from json.encoder import encode_basestring as _encode_basestring

from pomelo_rpc.errors import FrameError

include "_stream.pxi"
include "_digits.pxi"

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

TOPIC_RPC = "rpc"
cdef enum:
    _MAX_REMAINING = 268435455

MAX_REMAINING = _MAX_REMAINING   # the largest remaining length 4 varint bytes can carry

PINGREQ_PACKET = b"\xc0\x00"
PINGRESP_PACKET = b"\xd0\x00"
DISCONNECT_PACKET = b"\xe0\x00"

# Fixed-header flags that MQTT 3.1.1 requires; -1: free (PUBLISH) or reserved.
cdef int _REQUIRED_FLAGS[16]
_REQUIRED_FLAGS[:] = [-1, 0, 0, -1, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0, -1]

cdef tuple _PINGREQ_T = (12,)
cdef tuple _PINGRESP_T = (13,)
cdef tuple _DISCONNECT_T = (14,)


cdef inline unsigned int _u16(const unsigned char *p):
    return (<unsigned int>p[0] << 8) | p[1]


cdef object _utf8(const unsigned char *p, Py_ssize_t n, str what):
    try:
        return PyUnicode_DecodeUTF8(<const char *>p, n, NULL)
    except UnicodeDecodeError:
        raise FrameError(f"MQTT {what} is not valid UTF-8") from None


cdef tuple _parse_connect(const unsigned char *body, Py_ssize_t n):
    cdef Py_ssize_t off, plen, flen, i, nfields
    cdef unsigned int level, cflags, keepalive
    cdef const unsigned char *cid = NULL
    cdef Py_ssize_t cid_len = 0
    cdef Py_ssize_t user_at = 0, pass_at = 0, user_len = 0
    cdef const unsigned char *user_p = NULL
    cdef object password = None
    if n < 2:
        raise FrameError("MQTT CONNECT too short")
    plen = _u16(body)
    off = 2 + plen
    if off + 4 > n:
        raise FrameError("MQTT CONNECT too short")
    name = PyBytes_FromStringAndSize(<const char *>body + 2, plen)
    if name != b"MQTT" and name != b"MQIsdp":
        raise FrameError(f"MQTT CONNECT with unknown protocol name {name!r}")
    level = body[off]
    if level != 3 and level != 4:
        raise FrameError(f"MQTT CONNECT with unsupported protocol level {level}")
    cflags = body[off + 1]
    keepalive = _u16(body + off + 2)
    off += 4
    nfields = 1
    if cflags & 0x04:
        nfields += 2
    if cflags & 0x80:
        user_at = nfields
        nfields += 1
    if cflags & 0x40:
        pass_at = nfields
        nfields += 1
    for i in range(nfields):
        if off + 2 > n:
            raise FrameError("MQTT CONNECT too short for its fields")
        flen = _u16(body + off)
        off += 2
        if off + flen > n:
            raise FrameError("MQTT CONNECT field overruns the packet")
        if i == 0:
            cid = body + off
            cid_len = flen
        elif i == user_at:
            user_p = body + off
            user_len = flen
        elif i == pass_at:
            password = PyBytes_FromStringAndSize(<const char *>body + off, flen)
        off += flen
    return (CONNECT, _utf8(cid, cid_len, "client id"), keepalive,
            _utf8(user_p, user_len, "user name") if user_at else None, password)


cdef tuple _parse(int kind, int flags, const unsigned char *body, Py_ssize_t n):
    """The packet tuple of one complete packet; FrameError if it is malformed."""
    cdef int qos, want
    cdef Py_ssize_t tlen, off
    cdef object packet_id
    if kind == 3:
        qos = (flags >> 1) & 3
        if qos == 3:
            raise FrameError("MQTT PUBLISH with QoS 3")
        if n < 2:
            raise FrameError("MQTT PUBLISH too short for its topic")
        tlen = _u16(body)
        off = 2 + tlen
        if off > n:
            raise FrameError("MQTT PUBLISH topic overruns the packet")
        topic = _utf8(body + 2, tlen, "topic")
        packet_id = None
        if qos:
            if off + 2 > n:
                raise FrameError("MQTT PUBLISH too short for its packet id")
            packet_id = _u16(body + off)
            off += 2
        return (PUBLISH, topic, PyBytes_FromStringAndSize(<const char *>body + off, n - off),
                qos, packet_id)
    want = _REQUIRED_FLAGS[kind]
    if want >= 0 and flags != want:
        raise FrameError(f"MQTT packet type {kind} with invalid flags {flags:#x}")
    if kind >= 12:
        if n:
            raise FrameError(f"MQTT packet type {kind} must be empty, has {n} bytes")
        if kind == 12:
            return _PINGREQ_T
        if kind == 13:
            return _PINGRESP_T
        return _DISCONNECT_T
    if kind == 1:
        return _parse_connect(body, n)
    if kind == 2:
        if n != 2:
            raise FrameError(f"MQTT CONNACK of {n} bytes (want 2)")
        return (CONNACK, bool(body[0] & 1), <int>body[1])
    if 4 <= kind <= 7:
        if n != 2:
            raise FrameError(f"MQTT packet type {kind} of {n} bytes (want 2)")
        return (kind, _u16(body))
    return (kind, PyBytes_FromStringAndSize(<const char *>body, n))


cdef class MqttDecoder:
    """Incremental MQTT decoder: ``feed`` any split of the byte stream, get whole packets."""

    cdef bytearray _buf
    cdef Py_ssize_t _max

    def __cinit__(self, max_size=8 * 1024 * 1024):
        self._buf = bytearray()
        self._max = max_size

    @property
    def buffered(self):
        """Bytes held while waiting for the rest of a packet."""
        return len(self._buf)

    cpdef list feed(self, object data):
        """Add ``data``; return the list of packet tuples completed by it.

        Raises FrameError on a malformed packet, a remaining length longer than 4
        bytes or over ``max_size``; the stream is then unusable and must be closed.
        """
        cdef bytearray buf = self._buf
        cdef Py_buffer pybuf
        cdef const unsigned char *p
        cdef Py_ssize_t n, off = 0, pos, end
        cdef size_t size
        cdef unsigned int head, byte, shift
        cdef int kind
        cdef bint complete
        cdef list out = []
        cdef bint buffered = len(buf) > 0
        if buffered:
            buf += data
            data = buf
        PyObject_GetBuffer(data, &pybuf, PyBUF_SIMPLE)
        try:
            p = <const unsigned char *>pybuf.buf
            n = pybuf.len
            while n - off >= 2:
                head = p[off]
                kind = head >> 4
                if kind == 0 or kind == 15:
                    raise FrameError(f"reserved MQTT packet type {kind}")
                size = 0
                shift = 0
                pos = off + 1
                complete = False
                while pos < n:
                    byte = p[pos]
                    pos += 1
                    size |= <size_t>(byte & 0x7F) << shift
                    if not byte & 0x80:
                        complete = True
                        break
                    shift += 7
                    if shift == 28:
                        raise FrameError("MQTT remaining length is longer than 4 bytes")
                if not complete:
                    break
                if self._max < 0 or size > <size_t>self._max:
                    raise FrameError(f"MQTT packet of {size} bytes exceeds pkg_size {self._max}")
                end = pos + <Py_ssize_t>size
                if end > n:
                    break
                out.append(_parse(kind, head & 0x0F, p + pos, end - pos))
                off = end
        finally:
            PyBuffer_Release(&pybuf)
        self._buf = _rest(buf, data, off, n, buffered)
        return out


cdef inline int _put_varint(char *w, Py_ssize_t n):
    """Write remaining length ``n`` (0 to ``_MAX_REMAINING``) at ``w``, seven bits a
    byte, lowest first (NULL: only count); the number of bytes."""
    cdef int i = 0
    while True:
        if w != NULL:
            w[i] = <char>((n & 0x7F) | (0x80 if n > 0x7F else 0))
        i += 1
        n >>= 7
        if not n:
            return i


cdef bytes _varint(Py_ssize_t n):
    cdef char tmp[4]
    if n < 0 or n > _MAX_REMAINING:
        raise FrameError(f"MQTT remaining length {n} out of range")
    return PyBytes_FromStringAndSize(tmp, _put_varint(tmp, n))


cdef bytes _string(object value):
    cdef bytes raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    if n > 0xFFFF:
        raise FrameError(f"MQTT string of {n} bytes is too long")
    return bytes(((n >> 8) & 0xFF, n & 0xFF)) + raw


cdef bytes _RPC_TOPIC = _string(TOPIC_RPC)


def make_client_id():
    """A client id as pomelo-rpc's mqtt mailbox makes it: ``MQTT_RPC_<ms since epoch>``."""
    return f"MQTT_RPC_{int(time.time() * 1000)}"


def encode_connect(client_id=None, keepalive=0, username=None, password=None):
    """A CONNECT packet as Node pomelo-rpc sends it (MQTT 3.1.1, clean session), with
    a user name and password when given (a password needs a user name)."""
    if client_id is None:
        client_id = make_client_id()
    if not 0 <= keepalive <= 0xFFFF:
        raise FrameError(f"MQTT keepalive {keepalive} out of range")
    if password is not None and username is None:
        raise FrameError("MQTT 3.1.1 CONNECT: a password needs a user name")
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = (b"\x00\x04MQTT\x04" + bytes((flags,)) + keepalive.to_bytes(2, "big")
            + _string(client_id))
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return b"\x10" + _varint(len(body)) + body


def encode_connack(return_code=0, session_present=False):
    """A CONNACK packet."""
    return bytes((0x20, 2, 1 if session_present else 0, return_code))


cpdef bytes encode_publish(object payload, object topic=TOPIC_RPC, int qos=0, int packet_id=0):
    """A PUBLISH packet carrying ``payload`` (bytes) on ``topic``."""
    cdef bytes head, length
    cdef Py_buffer pybuf
    cdef Py_ssize_t hn, ln, pn
    cdef bytes out
    cdef char *w
    if qos < 0 or qos > 2:
        raise FrameError(f"MQTT QoS {qos} out of range")
    if packet_id < 0 or packet_id > 0xFFFF:
        raise FrameError(f"MQTT packet id {packet_id} out of range")
    # the topic of every RPC, its bytes made once
    head = _RPC_TOPIC if topic is TOPIC_RPC else _string(topic)
    if qos:
        head += bytes(((packet_id >> 8) & 0xFF, packet_id & 0xFF))
    PyObject_GetBuffer(payload, &pybuf, PyBUF_SIMPLE)
    try:
        pn = pybuf.len
        hn = PyBytes_GET_SIZE(head)
        length = _varint(hn + pn)
        ln = PyBytes_GET_SIZE(length)
        out = PyBytes_FromStringAndSize(NULL, 1 + ln + hn + pn)
        w = PyBytes_AS_STRING(out)
        w[0] = <char>(0x30 | (qos << 1))
        memcpy(w + 1, PyBytes_AS_STRING(length), ln)
        memcpy(w + 1 + ln, PyBytes_AS_STRING(head), hn)
        memcpy(w + 1 + ln + hn, pybuf.buf, pn)
    finally:
        PyBuffer_Release(&pybuf)
    return out


def encode_pingreq():
    """A PINGREQ packet."""
    return PINGREQ_PACKET


def encode_pingresp():
    """A PINGRESP packet."""
    return PINGRESP_PACKET


def encode_disconnect():
    """A DISCONNECT packet."""
    return DISCONNECT_PACKET


# JSON strings ------------------------------------------------------------------

cpdef str json_string(object s):
    """The JSON text of string ``s`` as ``json`` writes it with ``ensure_ascii=False``:
    exactly ``json.encoder.encode_basestring(s)``. An ASCII string with nothing to
    escape is only put between quotes, without the per-character pass."""
    cdef Py_ssize_t n
    cdef const unsigned char *p
    cdef unsigned char *w
    if type(s) is not str or not PyUnicode_IS_ASCII(s):
        return _encode_basestring(s)
    n = len(<str>s)
    p = <const unsigned char *>PyUnicode_DATA(s)
    if not _json_plain(p, n):
        return _encode_basestring(s)
    out = PyUnicode_New(n + 2, 127)
    w = <unsigned char *>PyUnicode_DATA(out)
    w[0] = 0x22
    memcpy(w + 1, p, n)
    w[n + 1] = 0x22
    return out


# JSON that orjson writes exactly as json does ----------------------------------------

cdef enum:
    _PLAIN_DEPTH = 200       # orjson's own limit is 255 levels


cdef bint _plain(object value, int depth) except -1:
    cdef type t = type(value)
    cdef Py_ssize_t i
    if value is None or t is bool or t is str:
        return True
    if t is int:
        # orjson writes 64-bit integers; json any
        return -0x8000000000000000 <= value <= 0xFFFFFFFFFFFFFFFF
    if t is float:
        return _plain_float(value)
    if depth >= _PLAIN_DEPTH:
        return False
    if t is list:
        for i in range(len(<list>value)):
            if not _plain((<list>value)[i], depth + 1):
                return False
        return True
    if t is dict:
        for key, item in (<dict>value).items():
            if type(key) is not str or not _plain(item, depth + 1):
                return False
        return True
    if t is tuple:
        for i in range(len(<tuple>value)):
            if not _plain((<tuple>value)[i], depth + 1):
                return False
        return True
    return False             # subclasses and every other type: json decides


cpdef bint plain_json(object value) except -1:
    """True when orjson writes ``value`` exactly as ``json`` does (compact, not ASCII
    only): None, bool, str, 64-bit int, a float that is 0 or finite and not below
    1e-4 in magnitude, and lists, tuples and str-keyed dicts of those (their exact
    types, at most 200 levels deep)."""
    return _plain(value, 0)


cpdef bint long_digits(bytes data):
    """True when ``data`` holds a run of 19 digits or more (an integer orjson would read
    as a float: past 64 bits); the same as ``re.search(rb"[0-9]{19}", data)``."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t i = 18, j
    # a run of 19 holds the byte at i whatever its start in [i - 18, i]: a byte that is
    # not a digit moves the next candidate 19 on; else the run back from i is counted
    while i < n:
        if not 48 <= p[i] <= 57:
            i += 19
            continue
        j = i - 1
        while j > i - 19 and 48 <= p[j] <= 57:
            j -= 1
        if j == i - 19:
            return True
        i = j + 19       # the first candidate whose window starts after the byte at j
    return False


cdef inline bint _digit(unsigned char c):
    return 48 <= c <= 57


cdef Py_ssize_t _number(const unsigned char *p, Py_ssize_t at, Py_ssize_t n,
                        Py_ssize_t most, long long *value):
    """The end of the integer of at most ``most`` digits, the first 1-9, at ``at``
    (its value in ``value``); ``at`` itself if there is none."""
    cdef Py_ssize_t i = at
    cdef long long v = 0
    if i >= n or not 49 <= p[i] <= 57:
        return at
    while i < n and i - at < most and _digit(p[i]):
        v = v * 10 + (p[i] - 48)
        i += 1
    value[0] = v
    return i


cpdef object request_parts(bytes payload):
    """The parts of the usual request payload ``{"id":<rid>[,"budget":<ms>]<head><args>}}``
    as ``(rid, budget or None, head, args)``: ``rid`` up to 18 digits, the first not 0,
    ``budget`` up to 15 such, ``head`` the bytes up to the first ``"args":`` (included),
    ``args`` the bytes between it and the closing ``}}``, without a run of 19 digits
    (see ``long_digits``); None for any other payload. Nothing here says the head or the
    args are JSON: the caller parses them."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    cdef Py_ssize_t i, start, end, k
    cdef long long rid = 0, budget = 0
    cdef bint has_budget = False
    cdef bytes args
    if n < 8 or memcmp(p, b'{"id":', 6) != 0 or p[n - 1] != 125 or p[n - 2] != 125:
        return None
    start = _number(p, 6, n, 18, &rid)
    if start == 6:
        return None
    if n - start >= 11 and memcmp(p + start, b',"budget":', 10) == 0:
        i = _number(p, start + 10, n, 15, &budget)
        if i != start + 10:
            start = i
            has_budget = True
    end = -1
    k = start
    while k + 7 <= n - 2:
        if p[k] == 34 and memcmp(p + k, b'"args":', 7) == 0:
            end = k + 7
            break
        k += 1
    if end < 0:
        return None
    args = PyBytes_FromStringAndSize(<const char *>p + end, n - 2 - end)
    if long_digits(args):
        return None
    return (rid, budget if has_budget else None,
            PyBytes_FromStringAndSize(<const char *>p + start, end - start), args)


cdef bytes _call_publish(object rid, object budget, bytes head, const char *args,
                         Py_ssize_t na):
    """The PUBLISH of a call whose arguments' JSON text is ``args[:na]``."""
    cdef long long r, b
    cdef bint has_budget
    cdef Py_ssize_t body, remaining
    cdef int lsize
    cdef bytes out
    cdef char *w
    body = _call_size(rid, budget, head, na, &r, &has_budget, &b)
    remaining = 5 + body                    # the topic's length, "rpc", the payload
    if remaining > _MAX_REMAINING:
        raise FrameError(f"MQTT remaining length {remaining} out of range")
    lsize = _put_varint(NULL, remaining)
    out = PyBytes_FromStringAndSize(NULL, 1 + lsize + remaining)
    w = PyBytes_AS_STRING(out)
    w[0] = <char>0x30
    _put_varint(w + 1, remaining)
    memcpy(w + 1 + lsize, b"\x00\x03rpc", 5)
    _call_body(w + 6 + lsize, r, has_budget, b, head, args, na)
    return out


cpdef bytes encode_call(object rid, object budget, bytes head, bytes args):
    """The PUBLISH (topic ``rpc``, QoS 0) of a call: ``{"id":<rid>,"budget":<budget><head>
    <args>}}`` (no ``"budget"`` when it is None), ``head`` and ``args`` being JSON text
    already (see ``core.pinus_tcp.encode_call``); ``rid`` and ``budget`` ints of at most
    64 bits. The same bytes as ``encode_publish`` of that payload."""
    return _framed_text(_call_publish, rid, budget, head, args)


cpdef bytes encode_call_json(object rid, object budget, bytes head, object args,
                             object codec):
    """``encode_call(rid, budget, head, codec.dumps_bytes(args))``: the usual small args
    (see ``_json_text.pxi``) written in the packet as ``json`` writes them, without
    the codec and without a text of their own."""
    return _framed_json(_call_publish, rid, budget, head, args, codec)


cpdef object answer_parts(object payload):
    """``(rid, value)`` of the common answer ``{"id":<rid>,"resp":[null,<value>]}`` as
    pomelo-rpc's servers (Node's ``JSON.stringify``, ours) write it: ``rid`` up to 18
    digits (0, or the first not 0), ``value`` the bytes between (not empty), without a
    run of 19 digits (see ``long_digits``); None for any other payload (or one that is
    not bytes). Nothing here says the value is JSON: the caller parses it (such a text
    is valid JSON exactly when its value is)."""
    cdef const unsigned char *p
    cdef Py_ssize_t n, start, end
    cdef long long rid = 0
    cdef bytes value
    if type(payload) is not bytes:
        return None
    p = <const unsigned char *>PyBytes_AS_STRING(payload)
    n = PyBytes_GET_SIZE(payload)
    if n < 24 or memcmp(p, b'{"id":', 6) != 0 or p[n - 2] != 93 or p[n - 1] != 125:
        return None
    if p[6] == 48:                       # the id 0 (JSON writes no other leading 0)
        start = 7
    else:
        start = _number(p, 6, n, 18, &rid)
        if start == 6:
            return None
    if n - start < 14 or memcmp(p + start, b',"resp":[null,', 14) != 0:
        return None
    start += 14
    end = n - 2
    if end <= start:
        return None
    value = PyBytes_FromStringAndSize(<const char *>p + start, end - start)
    if long_digits(value):
        return None
    return (rid, value)


cpdef bytes answer_payload(object rid, bytes body):
    """The common answer ``{"id":<rid>,"resp":[null,<body>]}`` to call ``rid`` (an int),
    ``body`` being its value's JSON text."""
    cdef long long r
    cdef Py_ssize_t nb = PyBytes_GET_SIZE(body), nr, size
    cdef bytes out
    cdef char *w
    if body is None:
        raise TypeError("answer_payload: body must be bytes")
    try:
        r = rid
    except OverflowError:                # past 64 bits: Python writes it
        return b'{"id":%d,"resp":[null,%b]}' % (rid, body)
    nr = _signed_digits(NULL, r)
    size = 6 + nr + 14 + nb + 2
    out = PyBytes_FromStringAndSize(NULL, size)
    w = PyBytes_AS_STRING(out)
    memcpy(w, b'{"id":', 6)
    _signed_digits(w + 6, r)
    memcpy(w + 6 + nr, b',"resp":[null,', 14)
    memcpy(w + 20 + nr, PyBytes_AS_STRING(body), nb)
    memcpy(w + 20 + nr + nb, b"]}", 2)
    return out


cpdef bytes json_suffixed(object value, object codec, bytes suffix):
    """``codec.dumps_bytes(value) + suffix``: the usual small values (see
    ``_json_text.pxi``) written here as ``json`` writes them, in one bytes object (a
    backend's answer, ``[null,<value>,null]``'s middle and end: ``core.forward``)."""
    global _text_busy
    cdef Py_ssize_t na, ns
    if suffix is None:
        raise TypeError("json_suffixed: the suffix must be bytes")
    ns = PyBytes_GET_SIZE(suffix)
    if not _text_busy:
        _text_busy = True
        try:
            na = _json_text(0, <PyObject *>value, codec, 0)
            if na >= 0:
                _text_room(na + ns)
                memcpy(_text + na, PyBytes_AS_STRING(suffix), ns)
                return PyBytes_FromStringAndSize(_text, na + ns)
        finally:
            _text_done()
    return codec.dumps_bytes(value) + suffix
