# cython: annotation_typing=False
"""A client's call path, from the proxy method a user calls to its mailbox: one
source for both cores (compiled with ``pomelo_rpc/_cy/invoke.pxd``).

``ProxyMethod`` is a leaf of ``client.proxies`` (``pomelo_rpc.proxy`` builds the tree).
``Invoker`` routes its calls: with a synchronous router and no filters (failfast),
a call is the router, a dict lookup and the mailbox's ``send``, and its awaitable is
the mailbox's future itself; otherwise the client's coroutines (an async router's
wait, the filters and the fail modes) take over. A call that cannot start fails
when it is awaited, as a coroutine's would. A notify (a one-way call) takes the same
path to its mailbox; its awaitable is done once it is written.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..errors import NoServerError, RpcError
from .coro import as_list

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from ..client import RpcClient
    from ..station import MailStation

_iscoroutine = asyncio.iscoroutine
_Future = asyncio.Future


def failed(exc: BaseException) -> asyncio.Future[Any]:
    """A future failed with ``exc``: how a call that cannot start fails at its await."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_exception(exc)
    return fut


class Invoker:
    """The call path of one client; see the module docstring."""

    def __init__(self, client: RpcClient, station: MailStation,
                 route: Callable[[Any, dict[str, Any], Any], Any], route_context: Any,
                 timeout: float) -> None:
        self.client = client
        self.station = station
        self.mailboxes = station.mailboxes
        #: ``route(route_param, msg, route_context)``: a server id, None, or an awaitable
        self.route = route
        self.route_context = route_context
        self.timeout = timeout        # the client's default per-call timeout
        self.started = False          # between the client's start and stop
        self.plain = True             # failfast, no filters: straight to the mailbox
        # the mailbox of the last call and its ``direct`` (set in its constructor, never
        # changed after): most calls go where the one before went, with no attribute
        # of the mailbox (a Python object) to look up again
        self.last_mailbox: Any = None
        self.last_direct: Any = None

    def routed(self, route_param: Any, msg: dict[str, Any], timeout: float | None,
               notify: bool = False) -> Awaitable[Any]:
        """The awaitable of a call (a notify with ``notify``) the router places."""
        if not self.started:
            return failed(RpcError("rpc client is not started"))
        try:
            server_id = self.route(route_param, msg, self.route_context)
        except Exception as exc:
            return failed(exc)
        if type(server_id) is not str:
            if _iscoroutine(server_id) or isinstance(server_id, _Future):
                return self.client._routed_later(server_id, msg, timeout, notify)
            if server_id is None:
                return failed(NoServerError(
                    f"the router gave no server for {msg['server_type']}"))
        if notify:
            return self.notify(server_id, msg, timeout)
        return self.call(server_id, msg, timeout)

    def direct(self, server_id: str, msg: dict[str, Any],
               timeout: float | None) -> Awaitable[Any]:
        """The awaitable of a call to ``server_id`` (``to_server``)."""
        if not self.started:
            return failed(RpcError("rpc client is not started"))
        return self.call(server_id, msg, timeout)

    def call(self, server_id: str, msg: dict[str, Any],
             timeout: float | None) -> Awaitable[Any]:
        """The awaitable of one call to ``server_id``: the mailbox's future when plain,
        else the coroutine of the filters and the fail mode."""
        if not self.plain:
            return self.client._filtered_call(server_id, msg, timeout)
        try:
            mailbox = self.mailboxes.get(server_id)
            if mailbox is None:
                mailbox = self.station.mailbox(server_id)
            if timeout is None:
                timeout = self.timeout
            # the mailbox's own send is its protocol's: call that directly, unless an
            # observer wraps send (or the mailbox is a custom one)
            if mailbox is self.last_mailbox:
                direct = self.last_direct
            else:
                direct = getattr(mailbox, "direct", None)
                self.last_mailbox = mailbox
                self.last_direct = direct
            if direct is not None:
                fut: Awaitable[Any] = direct.send(msg, timeout)
                return fut
            return mailbox.send(msg, timeout)
        except Exception as exc:
            return failed(exc)

    def notify(self, server_id: str, msg: dict[str, Any],
               timeout: float | None) -> Awaitable[Any]:
        """The awaitable of a notify to ``server_id``: done once it is written (the
        filters' coroutine when there are filters; fail modes do not retry a notify)."""
        if not self.started:
            return failed(RpcError("rpc client is not started"))
        if not self.plain:
            return self.client._filtered_notify(server_id, msg, timeout)
        try:
            mailbox = self.mailboxes.get(server_id)
            if mailbox is None:
                mailbox = self.station.mailbox(server_id)
            if timeout is None:
                timeout = self.timeout
            direct = getattr(mailbox, "notify_direct", None)    # as for a call
            if direct is not None:
                fut: Awaitable[Any] = direct.notify(msg, timeout)
                return fut
            notify = getattr(mailbox, "notify", None)
            if notify is None:        # a custom mailbox: a call whose answer is dropped
                return self.client._notify_by_call(mailbox, msg, timeout)
            fut = notify(msg, timeout)
            return fut
        except Exception as exc:
            return failed(exc)


class ProxyMethod:
    """A remote method; call it with ``(route_param, *args)`` or ``.to_server(id, *args)``."""

    def __init__(self, invoker: Invoker, namespace: str, server_type: str, service: str,
                 method: str) -> None:
        self.invoker = invoker
        self.namespace = namespace
        self.server_type = server_type
        self.service = service
        self.method = method
        self.route = f"{namespace}.{server_type}.{service}.{method}"
        #: the call message, its args to fill in: copying it is cheaper than building
        #: it (and the args replace a value, no key is added)
        self.base: dict[str, Any] = {"namespace": namespace, "server_type": server_type,
                                     "service": service, "method": method, "args": None}

    def message(self, args: tuple[Any, ...]) -> dict[str, Any]:
        """The call message of this method with ``args``."""
        msg = self.base.copy()
        msg["args"] = as_list(args)
        return msg

    def __call__(self, route_param: Any, *args: Any,
                 timeout: float | None = None) -> Awaitable[Any]:
        """Route the call with ``route_param`` and return an awaitable of the result."""
        return self.invoker.routed(route_param, self.message(args), timeout)

    def to_server(self, server_id: str, *args: Any,
                  timeout: float | None = None) -> Awaitable[Any]:
        """Call server ``server_id``; ``"*"`` calls every server of the type (dict of answers)."""
        if server_id == "*":
            return self.invoker.client._broadcast(self.message(args), timeout)
        return self.invoker.direct(server_id, self.message(args), timeout)

    def toServer(self, server_id: str, *args: Any,
                 timeout: float | None = None) -> Awaitable[Any]:
        """pomelo's name of ``to_server``."""
        return self.to_server(server_id, *args, timeout=timeout)

    def notify(self, route_param: Any, *args: Any,
               timeout: float | None = None) -> Awaitable[Any]:
        """A one-way call routed with ``route_param``: no answer is awaited; the
        awaitable is done once the request is written (it fails if it cannot be).
        ``timeout``: the budget the server runs it under."""
        return self.invoker.routed(route_param, self.message(args), timeout, True)

    def notify_server(self, server_id: str, *args: Any,
                      timeout: float | None = None) -> Awaitable[Any]:
        """A one-way call to server ``server_id`` (``"*"``: every server of the type)."""
        if server_id == "*":
            return self.invoker.client._broadcast(self.message(args), timeout, True)
        return self.invoker.notify(server_id, self.message(args), timeout)

    def __repr__(self) -> str:
        return f"<ProxyMethod {self.route}>"
