# cython: language_level=3
"""Dispatch (namespace -> service -> method), Cython. Twin: ``pomelo_rpc/core/dispatch.py``."""

from pomelo_rpc.errors import DispatchError, FrameError

DONE = 0
FAILED = 1
PENDING = 2

cdef enum:
    _REQ_ID = 1
    _REQ_NAME = 2


cdef class Method:
    """One remote method: its id, names, the callable and how many arguments it takes."""

    cdef readonly Py_ssize_t mid
    cdef readonly object namespace
    cdef readonly object service
    cdef readonly object name
    cdef readonly object func
    cdef readonly Py_ssize_t min_args
    cdef readonly Py_ssize_t max_args
    cdef readonly bint is_async

    def __cinit__(self, mid, namespace, service, name, func, min_args, max_args, is_async):
        self.mid = mid
        self.namespace = namespace
        self.service = service
        self.name = name
        self.func = func
        self.min_args = min_args
        self.max_args = max_args
        self.is_async = is_async

    @property
    def route(self):
        """``namespace.service.method``."""
        return f"{self.namespace}.{self.service}.{self.name}"

    def __repr__(self):
        return f"<Method {self.mid} {self.route}>"


cdef class Dispatcher:
    """Looks up methods by id or by name, checks arity and calls them."""

    cdef list _methods
    cdef dict _by_name
    cdef dict _namespaces

    def __init__(self, methods):
        """``methods``: iterable of (namespace, service, name, func, min_args, max_args, is_async)."""
        self._methods = []
        self._by_name = {}
        for ns, svc, name, func, lo, hi, is_async in methods:
            key = (ns, svc, name)
            if key in self._by_name:
                raise ValueError(f"duplicate remote method {ns}.{svc}.{name}")
            m = Method(len(self._methods), ns, svc, name, func, lo, hi, bool(is_async))
            self._methods.append(m)
            self._by_name[key] = m
        self._namespaces = {}
        for ns, svc, _ in self._by_name:
            self._namespaces.setdefault(ns, set()).add(svc)

    @property
    def table(self):
        """``[[namespace, service, method], ...]``: index i is method id i."""
        cdef Method m
        return [[m.namespace, m.service, m.name] for m in self._methods]

    @property
    def methods(self):
        """The methods, in id order."""
        return list(self._methods)

    def __len__(self):
        return len(self._methods)

    cpdef Method by_id(self, object mid):
        """The method with id ``mid``; DispatchError if there is none."""
        if type(mid) is int and 0 <= mid < len(self._methods):
            return self._methods[mid]
        raise DispatchError(f"unknown method id {mid!r}")

    cpdef Method by_name(self, object namespace, object service, object name):
        """The method ``namespace.service.name``; DispatchError naming the missing part."""
        m = self._by_name.get((namespace, service, name))
        if m is not None:
            return m
        services = self._namespaces.get(namespace)
        if services is None:
            raise DispatchError(f"unknown namespace {namespace!r}")
        if service not in services:
            raise DispatchError(f"unknown service {namespace}.{service}")
        raise DispatchError(f"unknown method {namespace}.{service}.{name}")

    cpdef object call(self, Method method, list args):
        """Check the argument count and call; return the result (or coroutine)."""
        cdef Py_ssize_t n = len(args)
        if n < method.min_args or (method.max_args >= 0 and n > method.max_args):
            if method.min_args == method.max_args:
                want = str(method.min_args)
            elif method.max_args < 0:
                want = f"at least {method.min_args}"
            else:
                want = f"{method.min_args} to {method.max_args}"
            raise DispatchError(f"{method.route} takes {want} argument(s), got {n}")
        return method.func(*args)

    cpdef tuple dispatch(self, object msg):
        """Run a request frame body; return ``(rid, state, outcome)`` (DONE/FAILED/PENDING).

        FrameError if ``msg`` is not a request this protocol can answer (no rid).
        """
        cdef list m
        cdef Method method
        if type(msg) is not list or len(<list>msg) < 2 or type((<list>msg)[1]) is not int:
            raise FrameError(f"malformed request frame: {msg!r:.80}")
        m = <list>msg
        rid = m[1]
        kind = m[0]
        try:
            if kind == _REQ_ID and len(m) == 4:
                method = self.by_id(m[2])
                args = m[3]
            elif kind == _REQ_NAME and len(m) == 6:
                method = self.by_name(m[2], m[3], m[4])
                args = m[5]
            else:
                raise DispatchError(f"malformed request of kind {kind!r} with {len(m)} fields")
            if type(args) is not list:
                raise DispatchError(f"request arguments must be a list, got {type(args).__name__}")
            result = self.call(method, args)
        except Exception as exc:
            return (rid, FAILED, exc)
        if method.is_async:
            return (rid, PENDING, result)
        return (rid, DONE, result)
