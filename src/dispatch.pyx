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

    cdef list _methods        # index: method id; None where the method was removed
    cdef dict _by_name        # live methods only
    cdef dict _namespaces     # live methods only
    cdef list _keys           # index: method id; (namespace, service, name) ever given one
    cdef dict _ids            # (namespace, service, name) -> method id, never forgotten

    def __init__(self, methods):
        """``methods``: iterable of (namespace, service, name, func, min_args, max_args, is_async)."""
        self._methods = []
        self._by_name = {}
        self._namespaces = {}
        self._keys = []
        self._ids = {}
        self.replace(methods)

    def replace(self, methods):
        """Make ``methods`` (as for the constructor) the methods served from now on.

        Method ids are stable: a method whose (namespace, service, name) already had an
        id keeps it, a new one gets the next id, and the id of a method no longer in
        ``methods`` answers "... was removed" (the table keeps its name, so the ids a
        client holds stay valid). All or nothing: a duplicate raises ValueError and
        changes nothing.
        """
        cdef list keys = list(self._keys)
        cdef dict ids = dict(self._ids)
        cdef dict by_name = {}
        cdef list table
        cdef dict namespaces = {}
        cdef Method m
        for ns, svc, name, func, lo, hi, is_async in methods:
            key = (ns, svc, name)
            if key in by_name:
                raise ValueError(f"duplicate remote method {ns}.{svc}.{name}")
            mid = ids.get(key)
            if mid is None:
                mid = ids[key] = len(keys)
                keys.append(key)
            by_name[key] = Method(mid, ns, svc, name, func, lo, hi, bool(is_async))
        table = [None] * len(keys)
        for m in by_name.values():
            table[m.mid] = m
            namespaces.setdefault(m.namespace, set()).add(m.service)
        self._keys, self._ids, self._by_name = keys, ids, by_name
        self._methods, self._namespaces = table, namespaces

    @property
    def table(self):
        """``[[namespace, service, method], ...]``: index i is method id i (removed ones too)."""
        return [[ns, svc, name] for ns, svc, name in self._keys]

    @property
    def methods(self):
        """The methods served, in id order."""
        return [m for m in self._methods if m is not None]

    def __len__(self):
        """The number of methods served."""
        return len(self._by_name)

    cpdef Method by_id(self, object mid):
        """The method with id ``mid``; DispatchError if there is none."""
        cdef object m
        if type(mid) is int and 0 <= mid < len(self._methods):
            m = self._methods[mid]
            if m is not None:
                return <Method>m
            ns, svc, name = self._keys[mid]
            raise DispatchError(f"{ns}.{svc}.{name} was removed (method id {mid})")
        raise DispatchError(f"unknown method id {mid!r}")

    cpdef Method by_name(self, object namespace, object service, object name):
        """The method ``namespace.service.name``; DispatchError naming the missing part."""
        m = self._by_name.get((namespace, service, name))
        if m is not None:
            return m
        if (namespace, service, name) in self._ids:
            raise DispatchError(f"{namespace}.{service}.{name} was removed")
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

        ``[1, rid, method_id, args]`` or ``[2, rid, namespace, service, method, args]``,
        either optionally followed by a trace id (see ``describe``) and a budget in ms
        (see ``core.frames``), both unused here.
        FrameError if ``msg`` is not a request this protocol can answer (no rid).
        """
        cdef list m
        cdef Method method
        cdef Py_ssize_t n
        if type(msg) is not list or len(<list>msg) < 2 or type((<list>msg)[1]) is not int:
            raise FrameError(f"malformed request frame: {msg!r:.80}")
        m = <list>msg
        rid = m[1]
        kind = m[0]
        n = len(m)
        try:
            if kind == _REQ_ID and 4 <= n <= 6:
                method = self.by_id(m[2])
                args = m[3]
            elif kind == _REQ_NAME and 6 <= n <= 8:
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

    def describe(self, object msg):
        """``(trace_id, route)`` of a request frame, for tracing; None if ``msg`` is not one.

        ``trace_id`` is the optional field of ``[1, rid, method_id, args, trace, budget]`` or
        ``[2, rid, namespace, service, method, args, trace, budget]`` when it is a str, else None;
        ``route`` is ``namespace.service.method`` (a removed method's too), or None when
        the frame names no method. Never raises, never runs anything.
        """
        cdef list m
        cdef Py_ssize_t n
        if type(msg) is not list or len(<list>msg) < 2 or type((<list>msg)[1]) is not int:
            return None
        m = <list>msg
        n = len(m)
        kind = m[0]
        trace = route = None
        if kind == _REQ_ID and 4 <= n <= 6:
            mid = m[2]
            if type(mid) is int and 0 <= mid < len(self._keys):
                ns, svc, name = self._keys[mid]
                route = f"{ns}.{svc}.{name}"
            if n >= 5 and type(m[4]) is str:
                trace = m[4]
        elif kind == _REQ_NAME and 6 <= n <= 8:
            ns, svc, name = m[2], m[3], m[4]
            if type(ns) is str and type(svc) is str and type(name) is str:
                route = f"{ns}.{svc}.{name}"
            if n >= 7 and type(m[6]) is str:
                trace = m[6]
        return (trace, route)
