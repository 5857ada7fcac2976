# cython: language_level=3, boundscheck=False, wraparound=False
"""Tracing's sampling decided before any span is made (Cython). Twin:
``pomelo_rpc/core/sampling.py``; same names, same behaviour (see its docstring).

Ids come from a xoshiro256** generator seeded from the OS (again in a forked child),
traceparents are checked and written in C, and the context variables are read
through the C API: a call or a request that is not sampled makes no span object and
runs no Python code here.
"""

import os

from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy


cdef extern from *:
    """
    /* 16 lowercase hex digits of a 64-bit value, and the check of 8 hex digits,
       eight bytes at a time (SWAR) */
    #include <string.h>
    #include <stdint.h>
    static inline uint64_t pomelo_hex_spread(uint64_t x) {
        /* 32 bits: each nibble in a byte of its own, the most significant highest */
        x = ((x & 0xFFFF0000ULL) << 16) | (x & 0xFFFFULL);
        x = ((x & 0x0000FF000000FF00ULL) << 8) | (x & 0x000000FF000000FFULL);
        x = ((x & 0x00F000F000F000F0ULL) << 4) | (x & 0x000F000F000F000FULL);
        /* each byte 0..15 as '0'..'9', 'a'..'f' */
        return x + 0x3030303030303030ULL
            + (((x + 0x0606060606060606ULL) >> 4) & 0x0101010101010101ULL) * 39;
    }
    static inline void pomelo_store_be(uint8_t *p, uint64_t w) {
    #if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        w = __builtin_bswap64(w);
        memcpy(p, &w, 8);
    #elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        memcpy(p, &w, 8);
    #else
        int i;
        for (i = 0; i < 8; i++) p[i] = (uint8_t)(w >> (56 - 8 * i));
    #endif
    }
    #if defined(__SSE2__) && defined(__x86_64__) && defined(__GNUC__)
    #include <emmintrin.h>
    static inline void pomelo_put_hex(uint8_t *p, uint64_t v) {
        /* the 8 bytes most significant first, each split in its two nibbles (high
           first), each nibble '0'..'9' or 'a'..'f': 16 digits in one store */
        __m128i x = _mm_cvtsi64_si128((long long)__builtin_bswap64(v));
        __m128i low4 = _mm_set1_epi8(0x0F);
        __m128i n = _mm_unpacklo_epi8(_mm_and_si128(_mm_srli_epi16(x, 4), low4),
                                      _mm_and_si128(x, low4));
        __m128i letters = _mm_and_si128(_mm_cmpgt_epi8(n, _mm_set1_epi8(9)),
                                        _mm_set1_epi8(39));
        _mm_storeu_si128((__m128i *)p, _mm_add_epi8(_mm_add_epi8(n, _mm_set1_epi8(0x30)),
                                                    letters));
    }
    #else
    static inline void pomelo_put_hex(uint8_t *p, uint64_t v) {
        pomelo_store_be(p, pomelo_hex_spread(v >> 32));
        pomelo_store_be(p + 8, pomelo_hex_spread(v & 0xFFFFFFFFULL));
    }
    #endif
    #define POMELO_H 0x8080808080808080ULL
    #define POMELO_L 0x0101010101010101ULL
    /* the high bit of each byte set where that byte (under 0x80) is >= c */
    #define POMELO_GE(w, c) ((((w) | POMELO_H) - (c) * POMELO_L) & POMELO_H)
    /* p[:8 * words] is lowercase hex digits, not all '0' */
    static inline int pomelo_hex_words(const uint8_t *p, int words) {
        uint64_t w, nonzero = 0;
        int i;
        for (i = 0; i < words; i++) {
            memcpy(&w, p + 8 * i, 8);
            if (w & POMELO_H) return 0;
            if (((POMELO_GE(w, 0x30) & ~POMELO_GE(w, 0x3A))
                 | (POMELO_GE(w, 0x61) & ~POMELO_GE(w, 0x67))) != POMELO_H) return 0;
            nonzero |= w ^ 0x3030303030303030ULL;
        }
        return nonzero != 0;
    }
    #if defined(__SSE2__)
    #include <emmintrin.h>
    /* 16 bytes: a mask of the lowercase hex digits among them (signed compares: a
       byte from 0x80 up is negative, never a digit), and of the '0's */
    static inline int pomelo_hex16(__m128i v, int *zeros) {
        __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8(0x2F)),
                                      _mm_cmplt_epi8(v, _mm_set1_epi8(0x3A)));
        __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8(0x60)),
                                       _mm_cmplt_epi8(v, _mm_set1_epi8(0x67)));
        *zeros = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(0x30)));
        return _mm_movemask_epi8(_mm_or_si128(digit, letter));
    }
    #endif
    /* the trace id (p[3:35]) and the span id (p[36:52]) of a traceparent: lowercase hex
       digits, neither all '0' */
    static inline int pomelo_ids_ok(const uint8_t *p) {
    #if defined(__SSE2__)
        int z0, z1, z2;
        int ok = pomelo_hex16(_mm_loadu_si128((const __m128i *)(p + 3)), &z0)
               & pomelo_hex16(_mm_loadu_si128((const __m128i *)(p + 19)), &z1)
               & pomelo_hex16(_mm_loadu_si128((const __m128i *)(p + 36)), &z2);
        return ok == 0xFFFF && (z0 & z1) != 0xFFFF && z2 != 0xFFFF;
    #else
        return pomelo_hex_words(p + 3, 4) && pomelo_hex_words(p + 36, 2);
    #endif
    }
    """
    void pomelo_put_hex(uint8_t *p, uint64_t v) nogil
    bint pomelo_ids_ok(const uint8_t *p) nogil

cdef extern from *:
    """
    /* Whether a served traceparent's str may be rewritten in place (Served.settle)
       needs the variables of a context (PyContext's second field, the same from 3.10
       to 3.14) and the thread's context version (bumped by every context entered or
       left; cpython/pystate.h). Elsewhere (free-threaded builds, where a reference
       count is no proof that no other thread holds an object, other versions) no str
       is rewritten: each request's and each call's is made, as the pure core does. */
    #if PY_VERSION_HEX >= 0x030A0000 && PY_VERSION_HEX < 0x030F0000 \
        && !defined(Py_GIL_DISABLED) && !defined(PYPY_VERSION)
    #define POMELO_REWRITE 1
    typedef struct { PyObject_HEAD PyObject *prev; PyObject *vars; } pomelo_context_head;
    static inline PyObject *pomelo_vars_of(PyObject *ctx) {
        return ctx == NULL ? NULL : ((pomelo_context_head *)ctx)->vars;
    }
    static inline PyObject *pomelo_current_vars(void) {
        return pomelo_vars_of(PyThreadState_Get()->context);
    }
    static inline uint64_t pomelo_context_ver(void) {
        return PyThreadState_Get()->context_ver;
    }
    #else
    #define POMELO_REWRITE 0
    static inline PyObject *pomelo_vars_of(PyObject *ctx) { return NULL; }
    static inline PyObject *pomelo_current_vars(void) { return NULL; }
    static inline uint64_t pomelo_context_ver(void) { return 0; }
    #endif
    #define pomelo_refcnt(o) Py_REFCNT((PyObject *)(o))
    #define pomelo_forget_hash(o) (((PyASCIIObject *)(o))->hash = -1)
    /* a str that must not be rewritten even when nothing else holds it: interned
       (the table's references are not counted), or with a wchar_t copy (3.11's) */
    #if PY_VERSION_HEX < 0x030C0000
    #define pomelo_pinned(o) (PyUnicode_CHECK_INTERNED((PyObject *)(o)) \
                              || ((PyASCIIObject *)(o))->wstr != NULL)
    #else
    #define pomelo_pinned(o) PyUnicode_CHECK_INTERNED((PyObject *)(o))
    #endif
    """
    bint POMELO_REWRITE
    PyObject *pomelo_vars_of(PyObject *ctx)
    PyObject *pomelo_current_vars()
    uint64_t pomelo_context_ver()
    Py_ssize_t pomelo_refcnt(void *o)
    void pomelo_forget_hash(object o)
    bint pomelo_pinned(void *o)

cdef extern from "Python.h":
    int PyContextVar_Get(object var, PyObject *default_value, PyObject **value) except -1
    object PyContextVar_Set(object var, object value)
    int PyContextVar_Reset(object var, object token) except -1
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object o)
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

ALWAYS = 0
NEVER = 1
RATIO = 2

cdef enum:
    _ALWAYS = 0
    _RATIO = 2
    _LEN = 55            # "00-" 32 "-" 16 "-" 2

cdef enum:               # what a request's trace field makes current (Sampler._decide)
    _SAMPLED = 0         # nothing: it is sampled (the server makes its span)
    _AS_IS = 1           # the field itself (an unsampled traceparent)
    _CHILD = 2           # a child of it (``child``)
    _ROOT = 3            # a new trace's root (``_root``)


# ids ---------------------------------------------------------------------------

cdef uint64_t _s[4]


cdef inline uint64_t _rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef uint64_t _next() noexcept nogil:
    """xoshiro256**"""
    cdef uint64_t result = _rotl(_s[1] * 5, 7) * 9
    cdef uint64_t t = _s[1] << 17
    _s[2] ^= _s[0]
    _s[3] ^= _s[1]
    _s[1] ^= _s[2]
    _s[0] ^= _s[3]
    _s[2] ^= t
    _s[3] = _rotl(_s[3], 45)
    return result


def _seed():
    """Seed the generator from the OS (at import, and in a forked child)."""
    cdef bytes raw = os.urandom(32)
    cdef const uint8_t *p = raw
    cdef int i, j
    for i in range(4):
        _s[i] = 0
        for j in range(8):
            _s[i] = (_s[i] << 8) | p[8 * i + j]
    if _s[0] == 0 and _s[1] == 0 and _s[2] == 0 and _s[3] == 0:
        _s[0] = 1


_seed()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_seed)


cdef inline uint64_t _rand64() noexcept nogil:
    cdef uint64_t v = _next()
    return v if v else 1


def rand64():
    """A random 64-bit id, never 0."""
    return _rand64()


# traceparents --------------------------------------------------------------------

# the value of each lowercase hex digit, 16 for any other byte
cdef uint8_t _VALUE[256]
_VALUE[:] = [16] * 256
for _i in range(10):
    _VALUE[48 + _i] = _i          # "0".."9"
for _i in range(6):
    _VALUE[97 + _i] = 10 + _i     # "a".."f"


cdef inline int _hex(uint8_t c) noexcept nogil:
    return _VALUE[c] if _VALUE[c] < 16 else -1


cdef int _state(object value):
    """-1 if not a valid traceparent, else its sampled flag."""
    cdef const uint8_t *p
    if type(value) is not str or PyUnicode_GET_LENGTH(value) != _LEN \
            or not PyUnicode_IS_COMPACT_ASCII(value):
        return -1
    p = <const uint8_t *>PyUnicode_DATA(value)
    if (p[0] != 48 or p[1] != 48 or p[2] != 45 or p[35] != 45 or p[52] != 45
            or not pomelo_ids_ok(p) or _VALUE[p[53]] > 15 or _VALUE[p[54]] > 15):
        return -1
    return _VALUE[p[54]] & 1


cpdef int state(object value):
    """-1 if ``value`` is not a valid W3C traceparent (version 00), else its sampled
    flag: 1 sampled, 0 not."""
    return _state(value)


cdef const char *_DIGITS = b"0123456789abcdef"


cdef inline void _put(uint8_t *p, uint64_t v) noexcept nogil:
    """``v`` as 16 lowercase hex digits at ``p``."""
    pomelo_put_hex(p, v)


cdef inline void _child_at(uint8_t *p, const uint8_t *q) noexcept nogil:
    """``child`` of the traceparent at ``q``, written at ``p``."""
    memcpy(p, q, 36)
    _put(p + 36, _rand64())
    p[52] = 45
    p[53] = q[53]
    p[54] = _DIGITS[_hex(q[54]) & 14]


cpdef str child(str parent):
    """An unsampled traceparent in the trace of ``parent`` (a valid one) with a new span
    id and the parent's other flags."""
    cdef str out = PyUnicode_New(_LEN, 127)
    _child_at(<uint8_t *>PyUnicode_DATA(out), <const uint8_t *>PyUnicode_DATA(parent))
    return out


cpdef object trace_low(str parent):
    """The low 64 bits of the trace id of ``parent`` (a valid traceparent)."""
    return _trace_low(parent)


cdef uint64_t _trace_low(str parent):
    cdef const uint8_t *q = <const uint8_t *>PyUnicode_DATA(parent)
    cdef uint64_t v = 0
    cdef Py_ssize_t i
    for i in range(19, 35):
        v = (v << 4) | <uint64_t>_hex(q[i])
    return v


cdef str _root(uint64_t low, int flags):
    cdef str out = PyUnicode_New(_LEN, 127)
    _root_at(<uint8_t *>PyUnicode_DATA(out), low, flags)
    return out


cdef inline void _root_at(uint8_t *p, uint64_t low, int flags) noexcept nogil:
    """``_root(low, flags)`` written at ``p``."""
    p[0] = 48
    p[1] = 48
    p[2] = 45
    _put(p + 3, _rand64())
    _put(p + 19, low)
    p[35] = 45
    _put(p + 36, _rand64())
    p[52] = 45
    p[53] = _DIGITS[(flags >> 4) & 15]
    p[54] = _DIGITS[flags & 15]


def root(low, flags):
    """A traceparent of a new trace whose trace id's low 64 bits are ``low``."""
    return _root(low, flags)


cdef class Sampler:
    """The sampling of one tracer; see ``pomelo_rpc/core/sampling.py``."""

    # fields declared in sampling.pxd

    def __init__(self, int mode, bound, bint parent_based, int flags, trace_var, otel_var,
                 span_key, current_span, span_parent):
        if mode == _RATIO and bound > 0xFFFFFFFFFFFFFFFF:     # rate 1.0: every trace
            mode = _ALWAYS
        self.mode = mode
        self.bound = bound if mode == _RATIO else 0
        self.parent_based = parent_based
        self.flags = flags
        self.trace_var = trace_var
        self.otel_var = otel_var
        self.span_key = span_key
        self.current_span = current_span
        self.span_parent = span_parent
        self.trace_id = 0
        self.spare = None

    cdef bint _sampled_root(self, uint64_t low):
        if self.mode == _RATIO:
            return low < self.bound
        return self.mode == _ALWAYS

    def sampled_root(self, low):
        """Whether the root sampler samples a trace whose id's low 64 bits are ``low``."""
        return self._sampled_root(low)

    cdef object _spare(self):
        """A str of 55 characters for a traceparent this sampler hands out: the last
        one again, rewritten, when nothing else holds it any more (the frame it went
        into has copied it), else a new one."""
        cdef PyObject *last = <PyObject *>self.spare
        if (POMELO_REWRITE and last != <PyObject *>None and pomelo_refcnt(last) == 1
                and not pomelo_pinned(last)):
            pomelo_forget_hash(<object>last)
            return <object>last
        out = PyUnicode_New(_LEN, 127)
        self.spare = out
        return out

    cpdef object new_root(self):
        """A root: its unsampled traceparent, or None when it is sampled (its trace id
        is then ``take_trace_id()``'s)."""
        cdef uint64_t low = _rand64()
        if self._sampled_root(low):
            self.trace_id = (<object>_rand64() << 64) | low
            return None
        out = self._spare()
        _root_at(<uint8_t *>PyUnicode_DATA(out), low, self.flags)
        return out

    cpdef object within(self, object parent):
        """A call in the context of ``parent``: its unsampled traceparent, or None when
        it is sampled; a new root when ``parent`` is not a valid traceparent."""
        cdef int flag = _state(parent)
        cdef bint sampled
        if flag < 0:
            return self.new_root()
        if self.parent_based:
            sampled = flag == 1
        else:
            sampled = self._sampled_root(_trace_low(parent))
        if sampled:
            return None
        out = self._spare()
        _child_at(<uint8_t *>PyUnicode_DATA(out), <const uint8_t *>PyUnicode_DATA(parent))
        return out

    cpdef object outgoing(self):
        """A call made now: its unsampled traceparent, or None when it is sampled (the
        caller makes its span). Its parent: the application's current OpenTelemetry
        span if there is one, else the request this handler serves, else none."""
        cdef PyObject *value = NULL
        cdef PyObject *found = NULL
        span = None
        if self.otel_var is not None:
            PyContextVar_Get(self.otel_var, NULL, &value)
            if value is not NULL:
                ctx = <object>value
                Py_DECREF(ctx)
                if not isinstance(ctx, dict):
                    span = ctx.get(self.span_key)
                elif len(<dict>ctx):
                    found = PyDict_GetItem(ctx, self.span_key)
                    if found is not NULL:
                        span = <object>found
        else:
            span = self.current_span()
        if span is not None:
            parent = self.span_parent(span)
            if parent is not None:
                return None if parent == "" else self.within(parent)
        value = NULL
        PyContextVar_Get(self.trace_var, NULL, &value)
        carried = None
        if value is not NULL:
            carried = <object>value
            Py_DECREF(carried)
        return self.within(carried)

    cpdef object incoming(self, object carried):
        """A request that carried ``carried`` (its trace field): the unsampled
        traceparent to make current while it runs (``carried`` itself when it is
        unsampled already), or None when it is sampled (the server makes its span)."""
        cdef uint64_t low = 0
        cdef int made = self._decide(carried, &low)
        if made == _AS_IS:
            return carried
        if made == _CHILD:
            return child(carried)
        if made == _ROOT:
            return _root(low, self.flags)
        return None

    cdef int _decide(self, object carried, uint64_t *low) except -1:
        """What ``incoming(carried)`` makes current: ``_SAMPLED`` (nothing), ``_AS_IS``,
        ``_CHILD`` or ``_ROOT`` (its trace id's low bits put in ``low``)."""
        cdef int flag = _state(carried)
        if flag == 0:
            if self.parent_based or not self._sampled_root(_trace_low(carried)):
                return _AS_IS
            return _SAMPLED
        if flag < 0:
            low[0] = _rand64()
            if self._sampled_root(low[0]):
                self.trace_id = (<object>_rand64() << 64) | low[0]
                return _SAMPLED
            return _ROOT
        if self.parent_based or self._sampled_root(_trace_low(carried)):
            return _SAMPLED
        return _CHILD

    def take_trace_id(self):
        """The trace id of the root just sampled (0 if none): once."""
        trace_id = self.trace_id
        self.trace_id = 0
        return trace_id


cdef class Served:
    """The trace context of the requests one server connection runs during a read; see
    ``pomelo_rpc/core/sampling.py``.

    Here a request's traceparent is written into a str of this connection's, and the
    context variable set to it once per read. For the read's next request the same str
    is rewritten in place, with no new str and no set, when nothing but the current
    context can still see it: after the request ran, the context's variables are the
    ones the str was made current in and nothing else holds them (no copy of the
    context: no task, no handle, no context kept), no other context was entered (a
    coroutine's first step enters its own copy once, which set no variable), and
    nothing else holds the str (no variable kept it; nobody interned it). Else the
    request's str stays as it is (its holders see it, theirs, for good) and the next
    request's is a new one, set."""

    def __init__(self, Sampler sampler):
        self.sampler = sampler
        self.var = sampler.trace_var
        self.token = None
        self.value = None
        self.vars = None

    cpdef bint enter(self, object carried) except -1:
        """Before a request that carried ``carried`` (its trace field) runs: True when
        its unsampled trace context is made current for it, False when it is sampled
        (nothing current: the caller runs it through the span-making dispatch)."""
        cdef uint64_t low = 0
        cdef int made = self.sampler._decide(carried, &low)
        cdef object value = None
        cdef uint8_t *p
        cdef bint rewrite = False
        cdef PyObject *current
        if made == _SAMPLED:
            self.clear()
            return False
        if self.live:
            rewrite = self.reusable
            if rewrite:
                value = self.value
        elif (self.value is not None and pomelo_refcnt(<PyObject *>self.value) == 1
                and not pomelo_pinned(<PyObject *>self.value)):
            value = self.value  # not current, and nobody else holds it: made current again
        if value is None:
            value = PyUnicode_New(_LEN, 127)
        else:
            pomelo_forget_hash(value)
        p = <uint8_t *>PyUnicode_DATA(value)
        if made == _AS_IS:
            memcpy(p, PyUnicode_DATA(carried), _LEN)
        elif made == _CHILD:
            _child_at(p, <const uint8_t *>PyUnicode_DATA(carried))
        else:
            _root_at(p, low, self.sampler.flags)
        if not rewrite:
            token = PyContextVar_Set(self.var, value)
            if self.token is None:
                self.token = token
            self.value = value
            self.live = True
        self.reusable = False
        if POMELO_REWRITE:
            current = pomelo_current_vars()
            self.vars = <object>current if current is not NULL else None
            self.ver = pomelo_context_ver()
            self.steps = 0
            self.kept = True
        return True

    cpdef stepped(self, object ctx):
        """A coroutine's first step ran in ``ctx`` (a copy of the current context)."""
        if POMELO_REWRITE and self.live:
            self.steps += 1
            if pomelo_vars_of(<PyObject *>ctx) != <PyObject *>self.vars:
                self.kept = False

    cpdef settle(self):
        """After the request ``enter`` made current ran: whether the str it was given
        can be rewritten for the next request (see the class docstring)."""
        cdef PyObject *vars = <PyObject *>self.vars       # (no reference taken)
        self.reusable = (POMELO_REWRITE and self.live and self.kept
                         and pomelo_current_vars() == vars
                         and pomelo_refcnt(vars) == 2     # the context's, ours
                         and pomelo_context_ver() == self.ver + 2 * self.steps
                         and pomelo_refcnt(<PyObject *>self.value) == 2  # the context's, ours
                         and not pomelo_pinned(<PyObject *>self.value))

    cpdef clear(self):
        """No trace context current for the read's next request (one that sets its own)."""
        if self.live:
            PyContextVar_Set(self.var, None)
            self.live = False
            self.reusable = False

    cpdef leave(self):
        """The end of the read: the context as it was before its first ``enter``."""
        token = self.token
        self.live = False
        self.reusable = False
        self.vars = None
        if token is not None:
            self.token = None
            PyContextVar_Reset(self.var, token)
