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

cdef extern from *:
    """
    /* The text Python's repr() writes for a double d with 1e-4 <= |d| < 1e16 (or 0),
       which is json's and orjson's too: the shortest decimal that reads back as d (the
       nearest such), positional, at least one digit after the point. Written at out
       (32 bytes); its length, or -1 when it is not found here (the caller asks orjson).
       Exact integer arithmetic (128 bits): for p = 15, 16, 17 significant digits, N the
       p-digit decimal nearest d (or, when d's lower gap is the narrower, the one above),
       kept if it lies inside the interval of the reals that round to d. */
    #if defined(__SIZEOF_INT128__)
    typedef unsigned __int128 pomelo_u128;
    static const unsigned long long pomelo_pow10[20] = {1ULL, 10ULL, 100ULL, 1000ULL,
        10000ULL, 100000ULL, 1000000ULL, 10000000ULL, 100000000ULL, 1000000000ULL,
        10000000000ULL, 100000000000ULL, 1000000000000ULL, 10000000000000ULL,
        100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
        100000000000000000ULL, 1000000000000000000ULL, 10000000000000000000ULL};
    static pomelo_u128 pomelo_p10(int k) {
        return k < 20 ? (pomelo_u128)pomelo_pow10[k]
                      : (pomelo_u128)pomelo_pow10[19] * pomelo_pow10[k - 19];
    }
    /* 1 if N / 10^k reads back as m * 2^e (m even: a tie reads as d) */
    static int pomelo_inside(pomelo_u128 n, pomelo_u128 num, pomelo_u128 den,
                             pomelo_u128 unit, int even, int narrow_below) {
        pomelo_u128 x = n * den, gap;
        if (x >= num) {
            gap = x - num;
            if (gap >= unit) return 0;
            return even ? 2 * gap <= unit : 2 * gap < unit;
        }
        gap = num - x;
        if (gap >= unit) return 0;
        if (narrow_below) return even ? 4 * gap <= unit : 4 * gap < unit;
        return even ? 2 * gap <= unit : 2 * gap < unit;
    }
    /* the integer nearest m * 2^e * 10^k (ties to even), in *q; the scale in *num and
       *den (num / den == m * 2^e * 10^k) and d's ulp at that scale in *unit; the
       integer part of m * 2^e * 10^k */
    static pomelo_u128 pomelo_scaled(unsigned long long m, int e, int k, pomelo_u128 *q,
                                     pomelo_u128 *num, pomelo_u128 *den, pomelo_u128 *unit) {
        pomelo_u128 r, floor;
        *num = (pomelo_u128)m * (k > 0 ? pomelo_p10(k) : 1);
        *den = k < 0 ? pomelo_p10(-k) : 1;
        *unit = k > 0 ? pomelo_p10(k) : 1;
        if (e >= 0) { *num <<= e; *unit <<= e; } else *den <<= -e;
        if (k >= 0 && e < 0) {   /* den a power of two: shifts */
            *q = *num >> -e;
            r = *num & (*den - 1);
        } else {
            *q = *num / *den;
            r = *num % *den;
        }
        floor = *q;
        if (2 * r > *den || (2 * r == *den && (*q & 1))) (*q)++;
        return floor;
    }
    static const double pomelo_tens[21] = {1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3,
        1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16};
    static const char pomelo_pairs[201] =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
        "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";
    static int pomelo_float_text(double d, char *out) {
        unsigned long long bits, m, n64;
        int e, p, k, kp, E, len = 0, i, digits, point;
        pomelo_u128 num, den, unit, q, n, f;
        double a;
        char dig[24];
        memcpy(&bits, &d, 8);
        if (d == 0.0) {
            if (bits >> 63) { memcpy(out, "-0.0", 4); return 4; }
            memcpy(out, "0.0", 3); return 3;
        }
        if (!(d == d) || d >= 1e16 || d <= -1e16 || (d < 1e-4 && d > -1e-4)) return -1;
        e = (int)((bits >> 52) & 0x7FF);
        if (e == 0) return -1;
        m = (bits & 0xFFFFFFFFFFFFFULL) | (1ULL << 52);
        e -= 1075;
        /* the decimal exponent of |d|, maybe one off near a power of ten: the scale k
           is corrected until the nearest integer has exactly p digits */
        a = d < 0 ? -d : d;
        E = -4;
        while (E < 15 && a >= pomelo_tens[E + 5]) E++;
        k = 14 - E;
        for (p = 15; p <= 17; p++, k++) {
            /* the scale k with 10^(p-1) <= |d| * 10^k < 10^p */
            if (k > 22 || k < -1) return -1;
            f = pomelo_scaled(m, e, k, &q, &num, &den, &unit);
            if (f >= pomelo_p10(p)) {
                k--;
                f = pomelo_scaled(m, e, k, &q, &num, &den, &unit);
            } else if (f < pomelo_p10(p - 1)) {
                k++;
                f = pomelo_scaled(m, e, k, &q, &num, &den, &unit);
            }
            if (f < pomelo_p10(p - 1) || f >= pomelo_p10(p)) return -1;
            kp = k;
            if (q == pomelo_p10(p)) {      /* rounded up to p + 1 digits: 10^(p-1) */
                kp = k - 1;
                pomelo_scaled(m, e, kp, &q, &num, &den, &unit);
                if (q != pomelo_p10(p - 1)) return -1;
            }
            n = q;
            if (!pomelo_inside(n, num, den, unit, !(m & 1), m == (1ULL << 52))) {
                /* d's narrow gap below: the p-digit decimal above may read back */
                n = q + 1;
                if (m != (1ULL << 52) || n >= pomelo_p10(p)
                        || !pomelo_inside(n, num, den, unit, !(m & 1), 1))
                    continue;      /* none of p digits: p + 1 */
            }
            /* the digits of n without its trailing zeros, the point after E' + 1 */
            n64 = (unsigned long long)n;
            digits = p;
            while (digits > 1 && n64 % 10 == 0) { n64 /= 10; digits--; }
            for (i = digits; i >= 2; i -= 2) {
                memcpy(dig + i - 2, pomelo_pairs + 2 * (n64 % 100), 2);
                n64 /= 100;
            }
            if (i == 1) dig[0] = (char)('0' + n64);
            point = p - kp;    /* digits before the point: E' + 1 */
            if (point < -3 || point > 16) return -1;
            if (d < 0) out[len++] = '-';
            if (point <= 0) {
                out[len++] = '0'; out[len++] = '.';
                for (i = 0; i < -point; i++) out[len++] = '0';
                memcpy(out + len, dig, digits); len += digits;
            } else if (digits <= point) {
                memcpy(out + len, dig, digits); len += digits;
                for (i = digits; i < point; i++) out[len++] = '0';
                out[len++] = '.'; out[len++] = '0';
            } else {
                memcpy(out + len, dig, point); len += point;
                out[len++] = '.';
                memcpy(out + len, dig + point, digits - point); len += digits - point;
            }
            return len;
        }
        return -1;
    }
    #else
    static int pomelo_float_text(double d, char *out) { (void)d; (void)out; return -1; }
    #endif
    """
    int _float_text "pomelo_float_text"(double d, char *out)


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
    cdef bint first
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
        first = True
        while PyDict_Next(<object>value, &pos, &key, &item):
            if _type_of(key) != &PyUnicode_Type:
                return -1
            if not first:
                _text_room(at + 1)
                _text[at] = 0x2C
                at += 1
            first = False
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
    """``_json_text`` of a float: ``_float_text``'s, else orjson's where it is
    ``json``'s, else -1."""
    global _fast_codec, _fast_dumps
    cdef object fast, text
    cdef Py_ssize_t n
    _text_room(at + _FLOAT_TEXT)
    n = _float_text(value, _text + at)
    if n >= 0:
        return at + n
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
