# cython: annotation_typing=False
"""Dispatch (namespace -> service -> method): one source for both cores.

Imported as it is for the pure-Python core; compiled with ``pomelo_rpc/_cy/dispatch.pxd``
for the Cython core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import CoroutineType
from typing import Any

from ..errors import DispatchError, FrameError
from .coro import call_list

# Outcome of Dispatcher.dispatch
DONE = 0      # the method returned: outcome is its result
FAILED = 1    # dispatch or the method raised: outcome is the exception
PENDING = 2   # the method is a coroutine function: outcome is the coroutine to await

_REQ_ID = 1
_REQ_NAME = 2

#: The rid of a notify's request inside a server (a native notify frame, a pinus tcp
#: request of id 0): a notify has none on the wire and is never answered; the
#: observers read it to count the call as a notify.
NOTIFY_RID = -1


class Method:
    """One remote method: its id, names, the callable and how many arguments it takes."""

    __slots__ = ("mid", "namespace", "service", "name", "func", "min_args", "max_args", "is_async")

    def __init__(self, mid: int, namespace: str, service: str, name: str,
                 func: Callable[..., Any], min_args: int, max_args: int, is_async: bool) -> None:
        self.mid = mid
        self.namespace = namespace
        self.service = service
        self.name = name
        self.func = func
        self.min_args = min_args
        self.max_args = max_args      # -1: any number (``*args``)
        self.is_async = is_async

    @property
    def route(self) -> str:
        """``namespace.service.method``."""
        return f"{self.namespace}.{self.service}.{self.name}"

    def __repr__(self) -> str:
        return f"<Method {self.mid} {self.route}>"


class Dispatcher:
    """Looks up methods by id or by name, checks arity and calls them."""

    def __init__(self,
                 methods: Iterable[tuple[str, str, str, Callable[..., Any], int, int, bool]]
                 ) -> None:
        """``methods``: iterable of (namespace, service, name, func, min_args, max_args, is_async)."""
        # index: method id; None where the method was removed by ``replace``
        self._methods: list[Method | None] = []
        # live methods only
        self._by_name: dict[tuple[str, str, str], Method] = {}
        self._namespaces: dict[str, set[str]] = {}
        # every (namespace, service, name) ever given an id, by id, and its id
        self._keys: list[tuple[str, str, str]] = []
        self._ids: dict[tuple[str, str, str], int] = {}
        #: the key ``by_name`` found last and its method (a connection's requests mostly
        #: name one method, with the same str objects each time: compared by identity)
        self._last_key: tuple[Any, Any, Any] = (None, None, None)
        self._last: Method | None = None
        #: the state of the outcome ``run`` returned last (DONE, FAILED or PENDING)
        self.state = DONE
        self.replace(methods)

    def replace(self,
                methods: Iterable[tuple[str, str, str, Callable[..., Any], int, int, bool]]
                ) -> None:
        """Make ``methods`` (as for the constructor) the methods served from now on.

        Method ids are stable: a method whose (namespace, service, name) already had an
        id keeps it, a new one gets the next id, and the id of a method no longer in
        ``methods`` answers "... was removed" (the table keeps its name, so the ids a
        client holds stay valid). All or nothing: a duplicate raises ValueError and
        changes nothing.
        """
        keys = list(self._keys)
        ids = dict(self._ids)
        by_name: dict[tuple[str, str, str], Method] = {}
        for ns, svc, name, func, lo, hi, is_async in methods:
            key = (ns, svc, name)
            if key in by_name:
                raise ValueError(f"duplicate remote method {ns}.{svc}.{name}")
            mid = ids.get(key)
            if mid is None:
                mid = ids[key] = len(keys)
                keys.append(key)
            by_name[key] = Method(mid, ns, svc, name, func, lo, hi, bool(is_async))
        table: list[Method | None] = [None] * len(keys)
        namespaces: dict[str, set[str]] = {}
        for m in by_name.values():
            table[m.mid] = m
            namespaces.setdefault(m.namespace, set()).add(m.service)
        self._keys, self._ids, self._by_name = keys, ids, by_name
        self._last = None
        self._methods, self._namespaces = table, namespaces

    @property
    def table(self) -> list[list[str]]:
        """``[[namespace, service, method], ...]``: index i is method id i (removed ones too)."""
        return [[ns, svc, name] for ns, svc, name in self._keys]

    @property
    def methods(self) -> list[Method]:
        """The methods served, in id order."""
        return [m for m in self._methods if m is not None]

    def __len__(self) -> int:
        """The number of methods served."""
        return len(self._by_name)

    def by_id(self, mid: object) -> Method:
        """The method with id ``mid``; DispatchError if there is none."""
        if type(mid) is int and 0 <= mid < len(self._methods):
            m = self._methods[mid]
            if m is not None:
                return m
            ns, svc, name = self._keys[mid]
            raise DispatchError(f"{ns}.{svc}.{name} was removed (method id {mid})")
        raise DispatchError(f"unknown method id {mid!r}")

    def by_name(self, namespace: str, service: str, name: str) -> Method:
        """The method ``namespace.service.name``; DispatchError naming the missing part."""
        last = self._last_key
        if (namespace is last[0] and service is last[1] and name is last[2]
                and self._last is not None):
            return self._last
        key = (namespace, service, name)
        m = self._by_name.get(key)
        if m is not None:
            self._last_key = key
            self._last = m
            return m
        if (namespace, service, name) in self._ids:
            raise DispatchError(f"{namespace}.{service}.{name} was removed")
        services = self._namespaces.get(namespace)
        if services is None:
            raise DispatchError(f"unknown namespace {namespace!r}")
        if service not in services:
            raise DispatchError(f"unknown service {namespace}.{service}")
        raise DispatchError(f"unknown method {namespace}.{service}.{name}")

    def call(self, method: Method, args: list[Any]) -> Any:
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
        return call_list(method.func, args)

    def dispatch(self, msg: object) -> tuple[int, int, Any]:
        """Run a request frame body; return ``(rid, state, outcome)`` (DONE/FAILED/PENDING).

        ``[1, rid, method_id, args]`` or ``[2, rid, namespace, service, method, args]``,
        either optionally followed by a trace id (see ``describe``) and a budget in ms
        (see ``core.frames``), both unused here.
        FrameError if ``msg`` is not a request this protocol can answer (no rid).
        """
        outcome = self.run(msg)
        return msg[1], self.state, outcome  # type: ignore[index]  # run checked it

    def run(self, msg: object) -> Any:
        """``dispatch`` without its tuple: the outcome, its state left in ``state``
        (the server protocol's way, one object fewer per request)."""
        if type(msg) is not list or len(msg) < 2 or type(msg[1]) is not int:
            raise FrameError(f"malformed request frame: {msg!r:.80}")
        kind = msg[0]
        n = len(msg)
        try:
            if kind == _REQ_ID and 4 <= n <= 6:
                method = self.by_id(msg[2])
                args = msg[3]
            elif kind == _REQ_NAME and 6 <= n <= 8:
                method = self.by_name(msg[2], msg[3], msg[4])
                args = msg[5]
            else:
                raise DispatchError(f"malformed request of kind {kind!r} with {len(msg)} fields")
            if type(args) is not list:
                raise DispatchError(f"request arguments must be a list, got {type(args).__name__}")
            result = self.call(method, args)
        except Exception as exc:
            self.state = FAILED
            return exc
        if method.is_async or type(result) is CoroutineType:
            # (a ``def`` method may answer with a coroutine: run as an ``async def``'s,
            # as ``core.forward``'s forwardMessage does for an ``async def`` handler)
            self.state = PENDING
        else:
            self.state = DONE
        return result

    def describe(self, msg: object) -> tuple[str | None, str | None] | None:
        """``(trace_id, route)`` of a request frame, for tracing; None if ``msg`` is not one.

        ``trace_id`` is the optional field of ``[1, rid, method_id, args, trace, budget]`` or
        ``[2, rid, namespace, service, method, args, trace, budget]`` when it is a str, else None;
        ``route`` is ``namespace.service.method`` (a removed method's too), or None when
        the frame names no method. Never raises, never runs anything.
        """
        if type(msg) is not list or len(msg) < 2 or type(msg[1]) is not int:
            return None
        n = len(msg)
        kind = msg[0]
        trace = route = None
        if kind == _REQ_ID and 4 <= n <= 6:
            mid = msg[2]
            if type(mid) is int and 0 <= mid < len(self._keys):
                ns, svc, name = self._keys[mid]
                route = f"{ns}.{svc}.{name}"
            if n >= 5 and type(msg[4]) is str:
                trace = msg[4]
        elif kind == _REQ_NAME and 6 <= n <= 8:
            ns, svc, name = msg[2], msg[3], msg[4]
            if type(ns) is str and type(svc) is str and type(name) is str:
                route = f"{ns}.{svc}.{name}"
            if n >= 7 and type(msg[6]) is str:
                trace = msg[6]
        return trace, route
