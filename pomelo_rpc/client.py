"""The RPC client: ``client.create(...)`` returns an RpcClient with generated proxies.

For example::

    cli = client.create(context={"server_id": "connector-1"})
    await cli.start()
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": "remote/test"}])
    cli.add_servers([{"id": "test-1", "server_type": "test", "host": "127.0.0.1", "port": 3333}])
    await cli.proxies.user.test.service.echo(session, "hello")
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import core as _core
from . import remotes
from .deadline import inherited_timeout
from .errors import NoServerError, RpcError
from .failure import FailPolicy
from .options import CLIENT_DEFAULTS, SERVER_DEFAULTS, merge
from .proxy import BroadcastError, ProxyNode, add_to_tree
from .registry import Registry
from .registry import create as create_registry
from .registry.base import check_cluster
from .registry.follow import Borrowed, Follower
from .router import make_router
from .station import MailStation

if TYPE_CHECKING:
    from typing import Protocol

    from .core.invoke import Invoker

    #: ``f(server_id, msg)``, sync or async; see ``RpcClient.before``
    BeforeFilter = Callable[[str, dict[str, Any]], Any]
    #: ``f(server_id, msg, result, error)``, sync or async; see ``RpcClient.after``
    AfterFilter = Callable[[str, dict[str, Any], Any, "Exception | None"], Any]
    #: ``handler(error, server_id, msg)``, sync or async
    ErrorHandler = Callable[[Exception, str, dict[str, Any]], Any]

    class BeforeFilterObject(Protocol):
        def before(self, server_id: str, msg: dict[str, Any], /) -> Any: ...

    class AfterFilterObject(Protocol):
        def after(self, server_id: str, msg: dict[str, Any], result: Any,
                  error: Exception | None, /) -> Any: ...

log = logging.getLogger("pomelo_rpc.client")

__all__ = ["create", "RpcClient"]


def normalize_message(msg: dict[str, Any]) -> dict[str, Any]:
    """A call message with snake_case keys; pomelo's ``serverType`` accepted."""
    if "server_type" not in msg and "serverType" in msg:
        msg = dict(msg)
        msg["server_type"] = msg.pop("serverType")
    missing = [k for k in ("namespace", "service", "method") if k not in msg]
    if missing:
        raise ValueError(f"rpc message lacks {', '.join(missing)}: {msg!r}")
    args = msg.get("args")
    if not isinstance(args, list):
        msg = dict(msg)
        msg["args"] = [] if args is None else list(args)
    return msg


def _ignore_outcome(fut: asyncio.Future[Any]) -> None:
    """Done callback: the outcome of a call nobody awaits is retrieved and dropped."""
    if not fut.cancelled():
        fut.exception()


async def _maybe_await(value: object) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value


class RpcClient:
    """Routes calls to remote servers through their mailboxes."""

    def __init__(self, opts: dict[str, Any]) -> None:
        self.opts = opts
        self.core = _core.select(opts["core"])
        self.context: Any = opts["context"]
        self.proxies = ProxyNode([])
        self._station = MailStation(opts, self.core)
        self._route = make_router(self, opts["router"], opts["router_type"])
        self._timeout: float = opts["timeout"]
        #: the per-call path (the core's): routing and the hand-off to the mailboxes
        self._invoker: Invoker = self.core.invoke.Invoker(
            self, self._station, self._route, opts["route_context"], self._timeout)
        self._before: list[BeforeFilter] = []
        self._after: list[AfterFilter] = []
        self._error_handler: ErrorHandler | None = None
        self._policy = FailPolicy(self, opts["fail_mode"])
        self._station.on_removed = self._policy.server_removed
        self._station.health.on_back = self._policy.server_back
        # no filter, no handler, failfast: calls go straight to the mailbox
        self._invoker.plain = opts["fail_mode"] == "failfast"
        if opts["metrics"]:      # the servers' health (the calls: observe_mailbox)
            from .metrics import for_registry
            for_registry(opts["metrics_registry"]).add_station(self._station)
        self._follower: Follower | None = None    # registry=: follows the cluster
        if opts["registry"] is not None:
            check_cluster(opts["cluster"])

    @property
    def route_context(self) -> Any:
        """The third argument of the router."""
        return self._invoker.route_context

    @route_context.setter
    def route_context(self, value: Any) -> None:
        self._invoker.route_context = value

    @property
    def _started(self) -> bool:
        return self._invoker.started

    # lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Start the client (connections open lazily, on each server's first call).

        With ``registry=``, the cluster's server list is loaded before this returns
        (RegistryError if the engine cannot be reached within ``connect_timeout``),
        then followed as servers come and go.
        """
        if self._started:
            raise RuntimeError("client already started")
        if self.opts["registry"] is not None:
            reg = create_registry(self.opts["registry"], cluster=self.opts["cluster"],
                                  ttl=SERVER_DEFAULTS["registry_ttl"],
                                  connect_timeout=self.opts["connect_timeout"])
            follower = Follower(self._station, reg)
            await follower.start()
            self._follower = follower
        self._invoker.started = True

    async def follow(self, registry: Registry) -> None:
        """Follow the servers of ``registry``, which its owner (a gateway of this
        process) opened and registered with: nothing is opened or registered again,
        and ``stop`` leaves it to its owner. On a started client without ``registry=``."""
        self._check_started()
        if self._follower is not None:
            raise RuntimeError("the client already follows a registry")
        follower = Follower(self._station, Borrowed(registry))
        await follower.start()
        self._follower = follower

    async def stop(self) -> None:
        """Close every connection; calls in flight fail with ConnectionLostError."""
        self._invoker.started = False
        if self._follower is not None:
            follower, self._follower = self._follower, None
            await follower.close()
        self._policy.close()
        await self._station.close()

    async def __aenter__(self) -> RpcClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # proxies and servers -----------------------------------------------

    def add_proxies(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Generate proxies from ``[{"namespace", "server_type", "path"}]`` (remote service dirs)."""
        for record in records:
            server_type = record.get("server_type", record.get("serverType"))
            if server_type is None or "namespace" not in record or "path" not in record:
                raise ValueError(f"a proxy record needs namespace, server_type and path: {record!r}")
            interface = remotes.interface(str(record["path"]), self.context)
            add_to_tree(self.proxies, self, record["namespace"], server_type, interface)

    def add_servers(self, servers: Iterable[Mapping[str, Any]]) -> None:
        """Add remote servers: ``[{"id", "server_type", "host", "port", ...}]``.

        A server already known keeps its place (and its connection, unless its
        address changed).
        """
        self._station.add_servers(servers)

    def remove_servers(self, ids: Iterable[str]) -> None:
        """Remove servers by id: their connections close, calls in flight to them fail at once."""
        self._station.remove_servers(ids)

    def replace_servers(self, servers: Iterable[Mapping[str, Any]]) -> None:
        """Make ``servers`` the whole server list; unchanged servers keep their connections."""
        self._station.replace_servers(servers)

    def add_server(self, server: Mapping[str, Any]) -> None:
        """Add one remote server (pomelo's ``addServer``)."""
        self.add_servers([server])

    def remove_server(self, server_id: str) -> None:
        """Remove one remote server by id (pomelo's ``removeServer``)."""
        self.remove_servers([server_id])

    def server_ids(self, server_type: str) -> list[str]:
        """Ids of the servers of ``server_type``, in the order they were added."""
        return self._station.by_type.get(server_type, [])

    def server_info(self, server_id: str) -> dict[str, Any]:
        """The info of server ``server_id`` (NoServerError if unknown)."""
        try:
            return self._station.servers[server_id]
        except KeyError:
            raise NoServerError(f"unknown server id {server_id!r}") from None

    def in_flight(self, server_id: str) -> int:
        """Calls in flight to ``server_id``."""
        return self._station.in_flight(server_id)

    def server_state(self, server_id: str) -> dict[str, Any]:
        """What this client knows of ``server_id``'s health (docs/liveness.md):
        ``available`` (False while it is down: calls to it fail at once with
        ServerUnavailableError and the load-spreading routers skip it), ``since`` (the
        wall-clock time its availability last changed, or None), ``connection`` (its
        mailbox's state: idle, connecting, open, or None without one),
        ``dead_connections`` (connections to it declared dead so far) and, while it is
        down, ``reason``, ``failures`` and ``next_probe_in`` (s). NoServerError if
        the server is unknown."""
        self.server_info(server_id)
        state = self._station.health.state(server_id)
        mailbox = self._station.mailboxes.get(server_id)
        state["connection"] = getattr(mailbox, "state", None) if mailbox is not None else None
        return state

    def server_states(self, server_type: str | None = None) -> list[dict[str, Any]]:
        """``server_state`` of every known server (of ``server_type`` if given)."""
        ids = (self.server_ids(server_type) if server_type is not None
               else list(self._station.servers))
        return [self.server_state(sid) for sid in ids]

    # filters -------------------------------------------------------------

    def before(self, f: BeforeFilter | BeforeFilterObject) -> None:
        """Add a before filter ``f(server_id, msg)``, sync or async.

        It may return None (go on unchanged), a new server id, a new message (a dict),
        or ``(server_id, msg)`` to change both (None in the pair keeps that part);
        raising fails the call with that error.
        """
        # getattr gives a filter object's bound .before, which mypy cannot tell from f itself
        self._before.append(getattr(f, "before", f))  # type: ignore[arg-type]
        self._invoker.plain = False

    def after(self, f: AfterFilter | AfterFilterObject) -> None:
        """Add an after filter ``f(server_id, msg, result, error)``, sync or async.

        It sees every outcome (``error`` is None on success); returning a value other
        than None replaces the result; raising fails the call with that error.
        """
        # getattr gives a filter object's bound .after, which mypy cannot tell from f itself
        self._after.append(getattr(f, "after", f))  # type: ignore[arg-type]
        self._invoker.plain = False

    def filter(self, f: BeforeFilterObject | AfterFilterObject) -> None:
        """Add ``f`` (an object with ``before`` and/or ``after``) as both kinds of filter."""
        if not hasattr(f, "before") and not hasattr(f, "after"):
            raise TypeError("filter() takes an object with .before and/or .after")
        if hasattr(f, "before"):
            self.before(f.before)
        if hasattr(f, "after"):
            self.after(f.after)

    def set_error_handler(self, handler: ErrorHandler) -> None:
        """Call ``handler(error, server_id, msg)`` (sync or async) for every failed call."""
        self._error_handler = handler
        self._invoker.plain = False

    # calls ---------------------------------------------------------------

    def _check_started(self) -> None:
        if not self._started:
            raise RpcError("rpc client is not started")

    async def rpc_invoke(self, server_id: str, msg: dict[str, Any],
                         timeout: float | None = None) -> Any:
        """Call server ``server_id`` with ``msg`` (namespace, server_type, service, method, args)."""
        self._check_started()
        return await self._invoker.call(server_id, normalize_message(msg), timeout)

    async def rpc_notify(self, server_id: str, msg: dict[str, Any],
                         timeout: float | None = None) -> None:
        """Notify server ``server_id`` with ``msg`` (as for ``rpc_invoke``): a one-way
        call; returns once the request is written (raises if it cannot be)."""
        self._check_started()
        await self._invoker.notify(server_id, normalize_message(msg), timeout)

    async def _routed_later(self, server_id: Awaitable[Any], msg: dict[str, Any],
                            timeout: float | None, notify: bool = False) -> Any:
        """A call (or notify) whose async router is still choosing its server."""
        sid = await server_id
        if sid is None:
            raise NoServerError(f"the router gave no server for {msg['server_type']}")
        if notify:
            return await self._invoker.notify(sid, msg, timeout)
        return await self._invoker.call(sid, msg, timeout)

    async def _before_filters(self, server_id: str,
                              msg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The target and the message once the before filters have had them."""
        for f in self._before:
            change = await _maybe_await(f(server_id, msg))
            if change is None:
                continue
            if isinstance(change, tuple):
                target, new_msg = change
            elif isinstance(change, dict):
                target, new_msg = None, change
            else:
                target, new_msg = change, None
            if target is not None:
                server_id = target
            if new_msg is not None:
                msg = normalize_message(new_msg)
        return server_id, msg

    async def _after_filters(self, server_id: str, msg: dict[str, Any], result: Any,
                             error: Exception | None) -> Any:
        """The outcome once the after filters have seen it (and the error handler, if
        it failed): the result, or the error raised."""
        for f in self._after:
            try:
                replaced = await _maybe_await(f(server_id, msg, result, error))
            except Exception as exc:
                error, result = exc, None
            else:
                if replaced is not None and error is None:
                    result = replaced
        if error is not None:
            if self._error_handler is not None:
                try:
                    await _maybe_await(self._error_handler(error, server_id, msg))
                except Exception:
                    log.exception("rpc error handler raised")
            raise error
        return result

    async def _filtered_call(self, server_id: str, msg: dict[str, Any],
                             timeout: float | None) -> Any:
        """A call through the before filters, the fail mode and the after filters."""
        loop = asyncio.get_running_loop()
        # a call made by a handler keeps to what is left of the deadline of the call served
        deadline = loop.time() + (inherited_timeout(self._timeout if timeout is None else timeout)
                                  or 0.0)
        result: Any = None
        error: Exception | None = None
        try:
            server_id, msg = await self._before_filters(server_id, msg)
            result = await self._policy.run(server_id, msg, deadline)
        except Exception as exc:
            error = exc
        return await self._after_filters(server_id, msg, result, error)

    async def _filtered_notify(self, server_id: str, msg: dict[str, Any],
                               timeout: float | None) -> None:
        """A notify through the before filters, then the after filters (with a None
        result); a notify fails fast, whatever the fail mode."""
        error: Exception | None = None
        try:
            server_id, msg = await self._before_filters(server_id, msg)
            mailbox = self._station.mailbox(server_id)
            if timeout is None:
                timeout = self._timeout
            notify = getattr(mailbox, "notify", None)
            await (notify(msg, timeout) if notify is not None
                   else self._notify_by_call(mailbox, msg, timeout))
        except Exception as exc:
            error = exc
        await self._after_filters(server_id, msg, None, error)

    def _notify_by_call(self, mailbox: Any, msg: dict[str, Any],
                        timeout: float | None) -> asyncio.Future[None]:
        """A notify through a mailbox that has no ``notify`` (a custom one): a call whose
        answer is dropped; done at once."""
        answer = asyncio.ensure_future(mailbox.send(msg, timeout))
        answer.add_done_callback(_ignore_outcome)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def _broadcast(self, msg: dict[str, Any], timeout: float | None,
                         notify: bool = False) -> dict[str, Any] | None:
        """A call (or notify) to every server of the type: ``{server_id: answer}``."""
        self._check_started()
        ids = list(self.server_ids(msg["server_type"]))
        if not ids:
            raise NoServerError(f"no server of type {msg['server_type']!r}")
        send = self.rpc_notify if notify else self.rpc_invoke
        outcomes = await asyncio.gather(
            *(send(sid, msg, timeout=timeout) for sid in ids), return_exceptions=True)
        results: dict[str, Any]
        errors: dict[str, BaseException]
        results, errors = {}, {}
        for sid, outcome in zip(ids, outcomes):
            (errors if isinstance(outcome, BaseException) else results)[sid] = outcome
        if errors:
            raise BroadcastError(
                f"{len(errors)} of {len(ids)} servers failed: "
                + "; ".join(f"{sid}: {exc}" for sid, exc in errors.items()), results, errors)
        return None if notify else results

    rpcInvoke = rpc_invoke  # pomelo's name


def create(**opts: Any) -> RpcClient:
    """Create an RpcClient; see ``pomelo_rpc.options.CLIENT_DEFAULTS`` for the options."""
    return RpcClient(merge(CLIENT_DEFAULTS, opts, "client.create"))
