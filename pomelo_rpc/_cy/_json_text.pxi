# Included (through _digits.pxi) by the framers that write a call's JSON in C (mqtt.pyx,
# pinus_tcp.pyx): the JSON text of the usual small values, exactly the ``json``
# module's (compact, ``ensure_ascii=False``), written in one pass into a buffer of the
# module's; anything else is left to the JSON codec.

from cpython.object cimport PyObject, PyTypeObject
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t
from libc.string cimport memcmp, memcpy

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    const char *PyUnicode_AsUTF8AndSize(object o, Py_ssize_t *size)
    long long PyLong_AsLongLongAndOverflow(object o, int *overflow) except? -1
    void PyErr_Clear()
    void *PyMem_Realloc(void *p, size_t n)
    void PyMem_Free(void *p)
    Py_ssize_t Py_SIZE(PyObject *o)
    PyTypeObject *_type_of "Py_TYPE"(PyObject *o)
    PyObject *PyList_GET_ITEM(object o, Py_ssize_t i)
    PyObject *PyTuple_GET_ITEM(object o, Py_ssize_t i)
    bint PyDict_Next(object d, Py_ssize_t *pos, PyObject **key, PyObject **value)
    PyObject *Py_True
    PyObject *Py_None
    PyTypeObject PyUnicode_Type
    PyTypeObject PyLong_Type
    PyTypeObject PyFloat_Type
    PyTypeObject PyBool_Type
    PyTypeObject PyDict_Type
    PyTypeObject PyList_Type
    PyTypeObject PyTuple_Type

cdef enum:
    _TEXT_DEPTH = 32         # deeper values are the codec's (and its errors, a cycle's)
    _TEXT_KEPT = 65536       # a larger buffer is freed once its text is used
    _FLOAT_TEXT = 32         # room for a float's text (orjson's is at most 24 bytes)

# the text ``_json_text`` writes (its buffer, kept between calls up to _TEXT_KEPT bytes);
# busy while a text is written and used (a write then, from a finalizer run by a
# collection inside orjson, say, is the codec's)
cdef char *_text = NULL
cdef Py_ssize_t _text_cap = 0
cdef bint _text_busy = False
# the last codec ``_json_float`` was given, and its ``fast_dumps``
cdef object _fast_codec = None
cdef object _fast_dumps = None


cdef inline bint _plain_float(double d):
    """True when orjson writes float ``d`` exactly as ``json`` does: 0, or finite and
    not below 1e-4 in magnitude (it writes NaN and infinities as null, where json
    raises, and numbers between 1e-4 and 0 without an exponent, where json uses one)."""
    return d == 0.0 or (d == d and (1e-4 <= d <= 1.7976931348623157e308
                                    or -1.7976931348623157e308 <= d <= -1e-4))


cdef int _text_grow(Py_ssize_t need) except -1:
    """Make ``_text`` hold at least ``need`` bytes (more than it does)."""
    global _text, _text_cap
    cdef Py_ssize_t cap = max(need, 2 * _text_cap, 256)
    cdef void *grown = PyMem_Realloc(_text, <size_t>cap)
    if grown == NULL:
        raise MemoryError()
    _text = <char *>grown
    _text_cap = cap
    return 0


cdef inline int _text_room(Py_ssize_t need) except -1:
    """Make ``_text`` hold at least ``need`` bytes."""
    if need > _text_cap:
        _text_grow(need)
    return 0


cdef inline void _text_done():
    """The text written is used: the buffer is free again (and freed if large)."""
    global _text, _text_cap, _text_busy
    _text_busy = False
    if _text_cap > _TEXT_KEPT:
        PyMem_Free(_text)
        _text = NULL
        _text_cap = 0

cdef inline bint _json_plain(const unsigned char *p, Py_ssize_t n):
    """True if bytes ``p[:n]`` hold no control character, ``"`` or ``\\`` (what a JSON
    string carries as it is: ``json`` escapes nothing else with ``ensure_ascii=False``)."""
    cdef uint64_t w, ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL
    cdef uint64_t quote = 0x2222222222222222ULL, backslash = 0x5C5C5C5C5C5C5C5CULL
    cdef uint64_t space = 0x2020202020202020ULL, x
    cdef Py_ssize_t i = 0
    cdef unsigned char c
    while i + 8 <= n:
        memcpy(&w, p + i, 8)
        # the high bit of x is set in some byte if a byte is below 0x20 or equal to " or
        # \ (a zero byte in w ^ quote, w ^ backslash); a false alarm only in a byte above
        # one that is, so "some byte" is exact (bytes from 0x80 never set it: ~w clears it)
        x = (((w - space) & ~w) | (((w ^ quote) - ones) & ~(w ^ quote))
             | (((w ^ backslash) - ones) & ~(w ^ backslash)))
        if x & high:
            return False
        i += 8
    while i < n:
        c = p[i]
        if c < 0x20 or c == 0x22 or c == 0x5C:
            return False
        i += 1
    return True


cdef Py_ssize_t _json_text(Py_ssize_t at, PyObject *value, object codec,
                           int depth) except -2:
    """Write at ``_text + at`` the JSON text ``json`` writes for ``value`` (compact,
    ``ensure_ascii=False``); where it ends, or -1 (what was written meaningless) when
    ``value`` is not of the kinds written here: None, bool, an int of 64 bits, a str
    with nothing to escape (and valid as UTF-8), a float ``_plain_float`` accepts when
    ``codec.fast_dumps`` (orjson's) writes it, and lists, tuples and str-keyed dicts of
    those up to ``_TEXT_DEPTH`` levels (exact types only)."""
    cdef PyTypeObject *t = _type_of(value)
    cdef const char *p
    cdef Py_ssize_t n, i, pos
    cdef long long v
    cdef int overflow = 0
    cdef PyObject *key
    cdef PyObject *item
    if t == &PyUnicode_Type:
        if PyUnicode_IS_ASCII(<object>value):
            p = <const char *>PyUnicode_DATA(<object>value)
            n = PyUnicode_GET_LENGTH(<object>value)
        else:
            p = PyUnicode_AsUTF8AndSize(<object>value, &n)
            if p == NULL:        # a lone surrogate: the codec says what is wrong
                PyErr_Clear()
                return -1
        if not _json_plain(<const unsigned char *>p, n):
            return -1
        _text_room(at + n + 2)
        _text[at] = 0x22
        memcpy(_text + at + 1, p, n)
        _text[at + n + 1] = 0x22
        return at + n + 2
    if t == &PyLong_Type:
        v = PyLong_AsLongLongAndOverflow(<object>value, &overflow)
        if overflow:
            return -1
        _text_room(at + 20)
        return at + _signed_digits(_text + at, v)
    if t == &PyFloat_Type:
        return _json_float(at, <object>value, codec)
    if value == Py_None:
        _text_room(at + 4)
        memcpy(_text + at, b"null", 4)
        return at + 4
    if t == &PyBool_Type:
        _text_room(at + 5)
        if value == Py_True:
            memcpy(_text + at, b"true", 4)
            return at + 4
        memcpy(_text + at, b"false", 5)
        return at + 5
    if depth >= _TEXT_DEPTH:
        return -1
    if t == &PyDict_Type:
        _text_room(at + 1)
        _text[at] = 0x7B
        at += 1
        pos = 0
        while PyDict_Next(<object>value, &pos, &key, &item):
            if _type_of(key) != &PyUnicode_Type:
                return -1
            if pos > 1:           # not the first item (pos: the next slot's index)
                _text_room(at + 1)
                _text[at] = 0x2C
                at += 1
            at = _json_text(at, key, codec, depth + 1)
            if at < 0:
                return -1
            _text_room(at + 1)
            _text[at] = 0x3A
            at = _json_text(at + 1, item, codec, depth + 1)
            if at < 0:
                return -1
        _text_room(at + 1)
        _text[at] = 0x7D
        return at + 1
    if t == &PyList_Type or t == &PyTuple_Type:
        n = Py_SIZE(value)
        _text_room(at + 1)
        _text[at] = 0x5B
        at += 1
        for i in range(n):
            if i:
                _text_room(at + 1)
                _text[at] = 0x2C
                at += 1
            item = (PyList_GET_ITEM(<object>value, i) if t == &PyList_Type
                    else PyTuple_GET_ITEM(<object>value, i))
            at = _json_text(at, item, codec, depth + 1)
            if at < 0:
                return -1
        _text_room(at + 1)
        _text[at] = 0x5D
        return at + 1
    return -1


cdef Py_ssize_t _json_float(Py_ssize_t at, object value, object codec) except -2:
    """``_json_text`` of a float: orjson's text where it is ``json``'s, else -1."""
    global _fast_codec, _fast_dumps
    cdef object fast, text
    cdef Py_ssize_t n
    if codec is not _fast_codec:        # (one codec per core: looked up once)
        _fast_dumps = codec.fast_dumps
        _fast_codec = codec
    fast = _fast_dumps
    if fast is None or not _plain_float(value):
        return -1
    try:
        text = fast(value)
    except Exception:            # the codec decides (as its dumps_bytes does)
        return -1
    if type(text) is not bytes:
        return -1
    n = PyBytes_GET_SIZE(text)
    _text_room(at + n)
    memcpy(_text + at, PyBytes_AS_STRING(text), n)
    return at + n
