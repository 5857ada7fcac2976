# Included by the framers that write a request's JSON head in C (mqtt.pyx, pinus_tcp.pyx).

include "_json_text.pxi"

cdef inline int _digits(char *w, unsigned long long v):
    """Write ``v`` in decimal at ``w`` (NULL: only count); the number of digits."""
    cdef int n = 1, i
    cdef unsigned long long rest = v
    while rest >= 10:
        rest //= 10
        n += 1
    if w != NULL:
        for i in range(n - 1, -1, -1):
            w[i] = <char>(0x30 + v % 10)
            v //= 10
    return n


cdef inline int _signed_digits(char *w, long long v):
    if v < 0:
        if w != NULL:
            w[0] = b"-"
            w += 1
        return 1 + _digits(w, <unsigned long long>(-(v + 1)) + 1)
    return _digits(w, <unsigned long long>v)


cdef inline Py_ssize_t _call_body(char *w, long long rid, bint has_budget, long long budget,
                                  bytes head, const char *args, Py_ssize_t na):
    """Write ``{"id":<rid>[,"budget":<budget>]<head><args>}}`` at ``w`` (NULL: only count),
    ``args`` the ``na`` bytes of the arguments' JSON text; its length."""
    cdef Py_ssize_t nh = PyBytes_GET_SIZE(head)
    cdef Py_ssize_t size
    cdef char *start = w
    if w == NULL:
        size = 6 + _signed_digits(NULL, rid) + nh + na + 2
        if has_budget:
            size += 10 + _signed_digits(NULL, budget)
        return size
    memcpy(w, b'{"id":', 6)
    w += 6
    w += _signed_digits(w, rid)
    if has_budget:
        memcpy(w, b',"budget":', 10)
        w += 10
        w += _signed_digits(w, budget)
    memcpy(w, PyBytes_AS_STRING(head), nh)
    w += nh
    memcpy(w, args, na)
    w += na
    memcpy(w, b"}}", 2)
    return w + 2 - start


cdef inline object _call_args(object args, object codec, Py_ssize_t *na):
    """The JSON text of a call's ``args`` (a value): None when ``_json_text`` wrote it
    (in ``_text``, which stays busy until ``_text_done``), else
    ``codec.dumps_bytes(args)``; its length in ``na``."""
    global _text_busy
    cdef object text
    if not _text_busy:
        _text_busy = True
        try:
            na[0] = _json_text(0, <PyObject *>args, codec, 0)
        except BaseException:
            _text_done()
            raise
        if na[0] >= 0:
            return None
        _text_done()
    text = codec.dumps_bytes(args)
    if type(text) is not bytes:
        raise TypeError("encode_call_json: the codec's dumps_bytes must give bytes")
    na[0] = PyBytes_GET_SIZE(text)
    return text


ctypedef bytes (*_call_framer)(object rid, object budget, bytes head, const char *args,
                               Py_ssize_t na)


cdef inline bytes _framed_text(_call_framer frame, object rid, object budget, bytes head,
                               object args):
    """``frame``'s bytes of a call whose arguments are JSON text already (``args``)."""
    if args is None:
        raise TypeError("encode_call: head and args must be bytes")
    return frame(rid, budget, head, PyBytes_AS_STRING(args), PyBytes_GET_SIZE(args))


cdef inline bytes _framed_json(_call_framer frame, object rid, object budget, bytes head,
                               object args, object codec):
    """``frame``'s bytes of a call whose arguments are a value: written as JSON by
    ``_call_args`` (in ``_text`` or by the codec)."""
    cdef Py_ssize_t na
    cdef object text = _call_args(args, codec, &na)
    if text is not None:
        return frame(rid, budget, head, PyBytes_AS_STRING(text), na)
    try:
        return frame(rid, budget, head, _text, na)
    finally:
        _text_done()


cdef inline Py_ssize_t _call_size(object rid, object budget, bytes head, Py_ssize_t na,
                                  long long *r, bint *has_budget, long long *b) except -1:
    """The length of a call's ``_call_body`` (arguments of ``na`` bytes), its ``rid`` and
    ``budget`` (if not None) as C integers in ``r`` and ``b``; TypeError unless
    ``head`` is bytes."""
    if head is None:
        raise TypeError("encode_call: head and args must be bytes")
    r[0] = rid
    has_budget[0] = budget is not None
    b[0] = budget if has_budget[0] else 0
    return _call_body(NULL, r[0], has_budget[0], b[0], head, NULL, na)
