# Included by the framers that write a request's JSON head in C (mqtt.pyx, pinus_tcp.pyx).

cdef inline int _digits(char *w, unsigned long long v):
    """Write ``v`` in decimal at ``w`` (NULL: only count); the number of digits."""
    cdef char tmp[20]
    cdef int n = 0, i
    while True:
        tmp[n] = <char>(0x30 + v % 10)
        n += 1
        v //= 10
        if not v:
            break
    if w != NULL:
        for i in range(n):
            w[i] = tmp[n - 1 - i]
    return n


cdef inline int _signed_digits(char *w, long long v):
    if v < 0:
        if w != NULL:
            w[0] = b"-"
            w += 1
        return 1 + _digits(w, <unsigned long long>(-(v + 1)) + 1)
    return _digits(w, <unsigned long long>v)


cdef inline Py_ssize_t _call_body(char *w, long long rid, bint has_budget, long long budget,
                                  bytes head, bytes args):
    """Write ``{"id":<rid>[,"budget":<budget>]<head><args>}}`` at ``w`` (NULL: only count);
    its length."""
    cdef Py_ssize_t nh = PyBytes_GET_SIZE(head), na = PyBytes_GET_SIZE(args)
    cdef Py_ssize_t size = 6 + _signed_digits(NULL, rid) + nh + na + 2
    if has_budget:
        size += 10 + _signed_digits(NULL, budget)
    if w == NULL:
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
    memcpy(w, PyBytes_AS_STRING(args), na)
    w += na
    memcpy(w, b"}}", 2)
    return size


cdef inline Py_ssize_t _call_size(object rid, object budget, bytes head, bytes args,
                                  long long *r, bint *has_budget, long long *b) except -1:
    """The length of a call's ``_call_body``, its ``rid`` and ``budget`` (if not None) as
    C integers in ``r`` and ``b``; TypeError unless ``head`` and ``args`` are bytes."""
    if head is None or args is None:
        raise TypeError("encode_call: head and args must be bytes")
    r[0] = rid
    has_budget[0] = budget is not None
    b[0] = budget if has_budget[0] else 0
    return _call_body(NULL, r[0], has_budget[0], b[0], head, args)
