"""Dispatch (namespace -> service -> method), pure-Python twin of ``src/dispatch.pyx``."""

from ..errors import DispatchError, FrameError

# Outcome of Dispatcher.dispatch
DONE = 0      # the method returned: outcome is its result
FAILED = 1    # dispatch or the method raised: outcome is the exception
PENDING = 2   # the method is a coroutine function: outcome is the coroutine to await

_REQ_ID = 1
_REQ_NAME = 2


class Method:
    """One remote method: its id, names, the callable and how many arguments it takes."""

    __slots__ = ("mid", "namespace", "service", "name", "func", "min_args", "max_args", "is_async")

    def __init__(self, mid, namespace, service, name, func, min_args, max_args, is_async):
        self.mid = mid
        self.namespace = namespace
        self.service = service
        self.name = name
        self.func = func
        self.min_args = min_args
        self.max_args = max_args      # -1: any number (``*args``)
        self.is_async = is_async

    @property
    def route(self):
        """``namespace.service.method``."""
        return f"{self.namespace}.{self.service}.{self.name}"

    def __repr__(self):
        return f"<Method {self.mid} {self.route}>"


class Dispatcher:
    """Looks up methods by id or by name, checks arity and calls them."""

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
        return [[m.namespace, m.service, m.name] for m in self._methods]

    @property
    def methods(self):
        """The methods, in id order."""
        return list(self._methods)

    def __len__(self):
        return len(self._methods)

    def by_id(self, mid):
        """The method with id ``mid``; DispatchError if there is none."""
        if type(mid) is int and 0 <= mid < len(self._methods):
            return self._methods[mid]
        raise DispatchError(f"unknown method id {mid!r}")

    def by_name(self, namespace, service, name):
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

    def call(self, method, args):
        """Check the argument count and call; return the result (or coroutine)."""
        n = len(args)
        if n < method.min_args or (method.max_args >= 0 and n > method.max_args):
            if method.min_args == method.max_args:
                want = str(method.min_args)
            elif method.max_args < 0:
                want = f"at least {method.min_args}"
            else:
                want = f"{method.min_args} to {method.max_args}"
            raise DispatchError(f"{method.route} takes {want} argument(s), got {n}")
        return method.func(*args)

    def dispatch(self, msg):
        """Run a request frame body; return ``(rid, state, outcome)`` (DONE/FAILED/PENDING).

        FrameError if ``msg`` is not a request this protocol can answer (no rid).
        """
        if type(msg) is not list or len(msg) < 2 or type(msg[1]) is not int:
            raise FrameError(f"malformed request frame: {msg!r:.80}")
        rid = msg[1]
        kind = msg[0]
        try:
            if kind == _REQ_ID and len(msg) == 4:
                method = self.by_id(msg[2])
                args = msg[3]
            elif kind == _REQ_NAME and len(msg) == 6:
                method = self.by_name(msg[2], msg[3], msg[4])
                args = msg[5]
            else:
                raise DispatchError(f"malformed request of kind {kind!r} with {len(msg)} fields")
            if type(args) is not list:
                raise DispatchError(f"request arguments must be a list, got {type(args).__name__}")
            result = self.call(method, args)
        except Exception as exc:
            return rid, FAILED, exc
        if method.is_async:
            return rid, PENDING, result
        return rid, DONE, result
