"""The RPC server: ``server.create(...)`` returns a Gateway exporting remote services.

    gw = server.create(paths=[{"namespace": "user", "path": "remote/test"}], port=0)
    await gw.start(); print(gw.port); ...; await gw.stop()
"""

import logging

from . import core as _core
from . import remotes
from .acceptor import NativeAcceptor
from .mqtt_acceptor import MqttAcceptor
from .options import SERVER_DEFAULTS, merge

log = logging.getLogger("pomelo_rpc.server")

__all__ = ["create", "Gateway"]

_TRANSPORTS = {"native": NativeAcceptor}


def register_transport(name, acceptor_class):
    """Make ``transport=name`` build ``acceptor_class(opts, dispatcher, core)``."""
    _TRANSPORTS[name] = acceptor_class


register_transport("mqtt", MqttAcceptor)


def _normalize_paths(paths):
    out = []
    for item in paths or ():
        if "namespace" not in item or "path" not in item:
            raise ValueError(f"a remote path needs 'namespace' and 'path': {item!r}")
        out.append({"namespace": item["namespace"], "path": str(item["path"])})
    return out


class Gateway:
    """A server instance: remote services, their dispatcher and an acceptor."""

    def __init__(self, opts):
        self.opts = opts
        self.core = _core.select(opts["core"])
        self.paths = _normalize_paths(opts["paths"])
        if opts["acceptor_factory"] is None and opts["transport"] not in _TRANSPORTS:
            raise ValueError(f"unknown transport {opts['transport']!r}; "
                             f"known: {', '.join(sorted(_TRANSPORTS))}")
        self.services = {}
        self.dispatcher = None
        self.acceptor = None

    @property
    def port(self):
        """The port the acceptor is bound to (the ephemeral one when ``port=0``)."""
        return self.acceptor.port if self.acceptor is not None else None

    def _build_dispatcher(self):
        self.services = remotes.load_paths(self.paths, self.opts["context"], self.opts["services"])
        return self.core.dispatch.Dispatcher(remotes.method_entries(self.services))

    async def start(self):
        """Load the services and start listening."""
        if self.acceptor is not None:
            raise RuntimeError("server already started")
        self.dispatcher = self._build_dispatcher()
        factory = self.opts["acceptor_factory"]
        if factory is not None:
            acceptor = factory(self.opts, self.dispatcher)
        else:
            acceptor = _TRANSPORTS[self.opts["transport"]](self.opts, self.dispatcher, self.core)
        await acceptor.listen(self.opts["host"], self.opts["port"])
        self.acceptor = acceptor
        log.info("rpc server started on port %s with %d methods (%s core)",
                 self.port, len(self.dispatcher), self.core.name)

    async def stop(self, grace=None):
        """Stop listening; answer calls already received for up to ``grace`` s; close."""
        if self.acceptor is None:
            return
        acceptor, self.acceptor = self.acceptor, None
        await acceptor.close(self.opts["stop_grace"] if grace is None else grace)
        log.info("rpc server stopped")

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.stop()


def create(**opts):
    """Create a Gateway; see ``pomelo_rpc.options.SERVER_DEFAULTS`` for the options."""
    return Gateway(merge(SERVER_DEFAULTS, opts, "server.create"))
