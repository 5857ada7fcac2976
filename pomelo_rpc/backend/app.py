"""The application object a backend server's handlers receive (``create(app)``):
who this server is, ``app.rpc`` (proxies to the cluster's servers), ``app.channels``
and ``app.sessions``. Its client (``app.client``) is the gateway's own: it follows the
cluster through the gateway's registry (with ``pomelo://``, the master's list that
comes with the gateway's registration), and carries the calls to the connectors'
``sys`` remotes as well as ``app.rpc``'s, with the client's routing, deadlines and
fail modes (``rpc_options``)."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

from .. import client as _client
from ..proxy import DynamicProxies, proxy_method
from ..registry import Registry
from .channels import ChannelService
from .sessions import SessionService

__all__ = ["App"]


class App:
    """What handlers (and, without a ``context``, remote services) are given."""

    def __init__(self, server_id: str | None, server_type: str | None, context: Any,
                 client_opts: Mapping[str, Any]) -> None:
        self.server_id = server_id
        self.server_type = server_type
        #: the gateway's ``context`` (None if it was given none)
        self.context = context
        #: the client of ``app.rpc`` and of the calls to the connectors
        self.client = _client.create(**client_opts)
        #: ``app.rpc.<server_type>.<service>.<method>(session, *args)``: pomelo's
        #: ``app.rpc`` (namespace ``user``), routed by the session's uid, or
        #: ``.to_server(server_id, *args)``
        self.rpc = DynamicProxies(self.client, "user")
        self.channels = ChannelService(self)
        self.sessions = SessionService(self)
        self._sys: dict[tuple[str, str], Any] = {}   # the sys proxy methods used so far

    def sys_call(self, server_id: str, service: str, method: str, *args: Any) -> Awaitable[Any]:
        """Call ``sys.<service>.<method>(*args)`` on server ``server_id`` (a connector's
        ``sessionRemote``/``channelRemote``), as pomelo's ``rpcInvoke`` does: no server
        type in the message."""
        proxy = self._sys.get((service, method))
        if proxy is None:
            proxy = self._sys[(service, method)] = proxy_method(
                self.client, "sys", None, service, method)
        result: Awaitable[Any] = proxy.to_server(server_id, *args)
        return result

    async def start(self) -> None:
        """Start the client (no server known yet, unless added by hand)."""
        await self.client.start()

    async def follow(self, registry: Registry) -> None:
        """Follow the cluster in ``registry``, which the gateway opened and registered
        with (nothing is registered again)."""
        await self.client.follow(registry)

    async def stop(self) -> None:
        """Stop the client: calls still in flight fail."""
        await self.client.stop()

    # pomelo's names
    def getServerId(self) -> str | None:   # noqa: N802
        """This server's id."""
        return self.server_id

    def getServerType(self) -> str | None:   # noqa: N802
        """This server's type."""
        return self.server_type
