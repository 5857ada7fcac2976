"""The RPC server: ``server.create(...)`` returns a Gateway exporting remote services.

For example::

    gw = server.create(paths=[{"namespace": "user", "path": "remote/test"}], port=0)
    await gw.start(); print(gw.port); ...; await gw.stop()
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import core as _core
from . import remotes
from .acceptor import NativeAcceptor
from .backend.app import App
from .backend.filters import HandlerFilters
from .backend.handlers import Handlers
from .backend.msg_remote import MsgRemote
from .mqtt_acceptor import MqttAcceptor
from .pinus_tcp_acceptor import PinusTcpAcceptor
from .options import SERVER_DEFAULTS, merge
from .registry import Registry
from .registry import create as create_registry
from .registry.base import TTL_KEY, check_cluster, normalize_server
from .reloader import ServiceWatcher
from .scheduling import batch_off, batch_on

if TYPE_CHECKING:
    from typing import Protocol

    from .core import Core
    from .core.dispatch import Dispatcher

    class AcceptorLike(Protocol):
        """What the gateway uses of an acceptor (a transport's, or one from
        ``acceptor_factory``)."""

        @property
        def port(self) -> int | None: ...
        async def listen(self, host: str, port: int) -> None: ...
        async def close(self, grace: float) -> None: ...

    #: ``acceptor_class(opts, dispatcher, core)``
    AcceptorClass = Callable[[dict[str, Any], Dispatcher, Core], AcceptorLike]

log = logging.getLogger("pomelo_rpc.server")

__all__ = ["create", "Gateway"]

_TRANSPORTS: dict[str, AcceptorClass] = {"native": NativeAcceptor}
#: the transports a backend server (``handlers=``) can serve Node connectors on
_CONNECTOR_TRANSPORTS = ("mqtt", "pinus-tcp")


def in_pinus_cluster(opts: Mapping[str, Any]) -> bool:
    """Whether a server of these options is in a pinus cluster (transport ``pinus-tcp``,
    or registered with a pinus master), not a pomelo one: what a backend server answers
    a connector differs a little (``pomelo_rpc.backend.msg_remote``)."""
    registry = opts.get("registry")
    scheme = (urlsplit(registry).scheme.lower() if isinstance(registry, str)
              else getattr(registry, "scheme", None))
    return bool(opts.get("transport") == "pinus-tcp" or scheme == "pinus")


def register_transport(name: str, acceptor_class: AcceptorClass) -> None:
    """Make ``transport=name`` build ``acceptor_class(opts, dispatcher, core)``."""
    _TRANSPORTS[name] = acceptor_class


register_transport("mqtt", MqttAcceptor)
register_transport("pinus-tcp", PinusTcpAcceptor)


def _normalize_paths(paths: Iterable[Mapping[str, Any]] | None) -> list[dict[str, str]]:
    out = []
    for item in paths or ():
        if "namespace" not in item or "path" not in item:
            raise ValueError(f"a remote path needs 'namespace' and 'path': {item!r}")
        out.append({"namespace": item["namespace"], "path": str(item["path"])})
    return out


class Gateway:
    """A server instance: remote services, their dispatcher and an acceptor."""

    def __init__(self, opts: dict[str, Any]) -> None:
        self.opts = opts
        self.core = _core.select(opts["core"])
        self.paths = _normalize_paths(opts["paths"])
        if not 0.0 <= opts["read_coalesce"] <= 1.0:
            raise ValueError(f"read_coalesce must be between 0 and 1 s, not "
                             f"{opts['read_coalesce']!r}")
        if opts["acceptor_factory"] is None and opts["transport"] not in _TRANSPORTS:
            raise ValueError(f"unknown transport {opts['transport']!r}; "
                             f"known: {', '.join(sorted(_TRANSPORTS))}")
        self.services: dict[str, dict[str, Any]] = {}
        self.dispatcher: Dispatcher | None = None
        # handlers=: a backend server of a pomelo cluster (pomelo_rpc.backend)
        self.app: App | None = None
        self.filters = HandlerFilters()
        self.handlers: Handlers | None = None
        #: what each remote service's ``create(context)`` gets: ``context``, or the app
        #: of a backend server given none
        self.context: Any = opts["context"]
        if opts["handlers"] is not None:
            self._make_app(opts)
        self.acceptor: AcceptorLike | None = None
        # reload_remotes: the services by file, and the task polling their files
        self._watcher: ServiceWatcher | None = None
        self._watch_task: asyncio.Task[None] | None = None
        # registry=: where this server's record is published while it runs
        self.registry: Registry | None = None
        self.record: dict[str, Any] | None = None
        self._batch = False      # sched_batch: this server switched its loop's thread
        if opts["registry"] is not None:
            info = opts["server_info"] or {}
            if not info.get("id") or not info.get("server_type", info.get("serverType")):
                raise ValueError("server.create: registry= needs server_info with "
                                 "'id' and 'server_type'")
            check_cluster(opts["cluster"])

    def _make_app(self, opts: dict[str, Any]) -> None:
        """``handlers=``: the app the handlers get, its client, the handlers."""
        if opts["acceptor_factory"] is None and opts["transport"] not in _CONNECTOR_TRANSPORTS:
            raise ValueError("server.create: handlers= needs transport='mqtt' (what pomelo's "
                             "connectors speak, and pinus's by default) or 'pinus-tcp' (a "
                             "pinus cluster on pinus-rpc's tcp transport)")
        info = opts["server_info"] or {}
        server_type = info.get("server_type", info.get("serverType"))
        client_opts = {"transport": opts["transport"], "core": opts["core"],
                       "context": opts["context"], **(opts["rpc_options"] or {})}
        self.app = App(info.get("id"), server_type, opts["context"], client_opts)
        if self.context is None:
            self.context = self.app
        self.handlers = Handlers(str(opts["handlers"]), self.app, server_type,
                                 opts["reload_handlers"])

    @property
    def port(self) -> int | None:
        """The port the acceptor is bound to (the ephemeral one when ``port=0``)."""
        return self.acceptor.port if self.acceptor is not None else None

    def before(self, f: Any) -> None:
        """Add a handler before filter ``f(msg, session)`` (sync or async; or an
        object's ``.before``): raising refuses the request, its ``code`` (else 500)
        reaching the player. Backend servers (``handlers=``) only."""
        self._check_handlers()
        self.filters.before(f)

    def after(self, f: Any) -> None:
        """Add a handler after filter ``f(msg, session, resp, error)`` (sync or async;
        or an object's ``.after``), run before the answer leaves; what it raises is
        logged. Backend servers (``handlers=``) only."""
        self._check_handlers()
        self.filters.after(f)

    def _check_handlers(self) -> None:
        if self.handlers is None:
            raise RuntimeError("handler filters need a server with handlers=")

    def _extra_services(self) -> Any:
        """``services`` plus, with handlers, the ``sys.msgRemote`` a connector calls."""
        extra = self.opts["services"]
        if self.handlers is None or self.app is None:
            return extra
        merged = {ns: dict(svcs) for ns, svcs in (extra or {}).items()}
        merged.setdefault("sys", {})["msgRemote"] = MsgRemote(
            self.app, self.handlers, self.filters, pinus=in_pinus_cluster(self.opts),
            core=self.core)
        return merged

    def _build_dispatcher(self) -> Dispatcher:
        if self.handlers is not None:
            self.handlers.load()
        extra = self._extra_services()
        if self.opts["reload_remotes"]:
            self._watcher = ServiceWatcher(self.paths, self.context, extra)
            self.services = self._watcher.load()
        else:
            self.services = remotes.load_paths(self.paths, self.context, extra)
        dispatcher: Dispatcher = self.core.dispatch.Dispatcher(
            remotes.method_entries(self.services))
        return dispatcher

    def check_remotes(self) -> list[str]:
        """With ``reload_remotes``: reload the services whose files changed, appeared or
        went away since the last check (the server checks every ``reload_interval`` s by
        itself); return the changes made, e.g. ``["reloaded user.chat"]``.

        Calls already running finish on the old code, new ones get the new code. Method
        ids do not change (a removed method's id answers "... was removed"); new methods
        get new ids, which the native acceptor sends to its clients in a new HELLO. A
        file that fails to load is logged and the old code keeps serving.
        """
        if self._watcher is None or self.dispatcher is None:
            return []
        changes = self._watcher.scan()
        if not changes:
            return changes
        services = self._watcher.namespaces()
        ids_before = len(self.dispatcher.table)
        self.dispatcher.replace(remotes.method_entries(services))
        self.services = services
        log.info("reloaded remote services: %s (%d methods)", ", ".join(changes),
                 len(self.dispatcher))
        if len(self.dispatcher.table) > ids_before and self.acceptor is not None:
            methods_changed = getattr(self.acceptor, "methods_changed", None)
            if methods_changed is not None:
                methods_changed()
        return changes

    async def _watch_remotes(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.check_remotes()
                if self.handlers is not None:
                    self.handlers.check()
            except Exception:
                log.exception("reloading the remote services or handlers failed; the old "
                              "ones keep serving")

    async def start(self) -> None:
        """Load the services and start listening."""
        if self.acceptor is not None:
            raise RuntimeError("server already started")
        self.dispatcher = self._build_dispatcher()
        if self.app is not None:
            await self.app.start()
        factory = self.opts["acceptor_factory"]
        if factory is not None:
            acceptor: AcceptorLike = factory(self.opts, self.dispatcher)
        else:
            acceptor = _TRANSPORTS[self.opts["transport"]](self.opts, self.dispatcher, self.core)
        await acceptor.listen(self.opts["host"], self.opts["port"])
        self.acceptor = acceptor
        if self.opts["sched_batch"]:
            self._batch = batch_on()
        if self._watcher is not None or self.opts["reload_handlers"]:
            self._watch_task = asyncio.get_running_loop().create_task(
                self._watch_remotes(self.opts["reload_interval"]))
        log.info("rpc server started on port %s with %d methods (%s core)",
                 self.port, len(self.dispatcher), self.core.name)
        if self.opts["registry"] is not None:
            try:
                await self._register()
                if (self.app is not None and self.registry is not None
                        and "registry" not in (self.opts["rpc_options"] or {})):
                    # the handlers' client follows the list this registration brought
                    await self.app.follow(self.registry)
            except BaseException:
                await self.stop(0)
                raise

    async def _register(self) -> None:
        """Publish this server's record (listening already, so it is routable at once)."""
        opts = self.opts
        info = dict(opts["server_info"])
        host = opts["host"]
        info.setdefault("host", socket.gethostname() if host in ("", "0.0.0.0", "::") else host)
        info.setdefault("port", self.port)
        info[TTL_KEY] = opts["registry_ttl"]   # how long clients wait for it after an outage
        record = normalize_server(info)
        reg = create_registry(opts["registry"], cluster=opts["cluster"],
                              ttl=opts["registry_ttl"],
                              connect_timeout=opts["registry_connect_timeout"])
        if self.handlers is not None and getattr(reg, "scheme", None) == "pinus":
            # a backend: its remoterPaths need the sys entry (registry.pinus)
            setattr(reg, "backend", True)
        try:
            await reg.open()
            await reg.register(record)
        except BaseException:
            await reg.close()
            raise
        self.registry, self.record = reg, record
        log.info("registered %s (%s) at %s:%s", record["id"], record["server_type"],
                 record["host"], record["port"])

    async def stop(self, grace: float | None = None) -> None:
        """Stop listening; answer calls already received for up to ``grace`` s; close.

        With a registry, the record is withdrawn first (marked leaving until every
        client can have seen it, then deleted), so clients stop routing here before
        the server closes. A backend server's client (``app``) stops last.
        """
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
        grace = self.opts["stop_grace"] if grace is None else grace
        if (self.registry is not None and self.handlers is not None
                and getattr(self.registry, "callers_drop_leaving", False)):
            # pomelo's connectors close a leaving server's connection at once, so the
            # requests it holds would be lost: a backend server leaves once they are
            # answered (still serving, up to the grace)
            await self._quiet(grace)
        reg, self.registry = self.registry, None
        if reg is not None and self.record is not None:
            try:
                await reg.deregister(self.record["id"])
            except Exception as exc:   # engine down: clients drop it when its ttl runs out
                log.warning("deregistering %s failed: %s", self.record["id"], exc)
            await reg.close()
        if self.acceptor is not None:
            acceptor, self.acceptor = self.acceptor, None
            await acceptor.close(grace)
            log.info("rpc server stopped")
        if self.app is not None:
            # after the drain: handlers still running could push to players until then
            await self.app.stop()
        if self._batch:
            self._batch = False
            batch_off()

    async def _quiet(self, grace: float) -> None:
        """Wait (up to ``grace`` s) for a moment when no call is held: none queued,
        none running."""
        acceptor = self.acceptor
        overload = getattr(acceptor, "overload", None)
        if overload is None:
            return
        deadline = asyncio.get_running_loop().time() + grace
        while overload.held and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        if overload.held:
            log.warning("stopping: %d call(s) still held after the %g s grace; leaving the "
                        "cluster anyway (their callers lose them)", overload.held, grace)

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def create(**opts: Any) -> Gateway:
    """Create a Gateway; see ``pomelo_rpc.options.SERVER_DEFAULTS`` for the options."""
    return Gateway(merge(SERVER_DEFAULTS, opts, "server.create"))
