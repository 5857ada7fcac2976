"""Client proxies: ``client.proxies.<namespace>.<server_type>.<service>.<method>``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from .errors import RpcError

if TYPE_CHECKING:
    from .client import RpcClient
    from .core.invoke import ProxyMethod


class ProxyNode:
    """A level of the proxy tree; attribute access goes one level down."""

    def __init__(self, path: list[str]) -> None:
        self._path = path
        # inner levels are ProxyNodes, the leaves (methods) ProxyMethods
        self._children: dict[str, ProxyNode | ProxyMethod] = {}

    def _child(self, name: str, factory: Callable[[], ProxyNode]) -> ProxyNode:
        node = self._children.get(name)
        if node is None:
            node = self._children[name] = factory()
        return cast(ProxyNode, node)  # only called for the namespace and server type levels

    # Any: the tree is built at run time from the remote service directories, so a
    # level's attributes are not known statically (a ProxyNode, or a ProxyMethod leaf)
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._children[name]
        except KeyError:
            where = ".".join(self._path) or "proxies"
            raise AttributeError(
                f"no remote {name!r} under {where}; known: {', '.join(sorted(self._children))}"
            ) from None

    def __getitem__(self, name: str) -> Any:
        return self.__getattr__(name)

    def __dir__(self) -> list[str]:
        return sorted(self._children)

    def __contains__(self, name: object) -> bool:
        return name in self._children


def add_to_tree(root: ProxyNode, client: RpcClient, namespace: str, server_type: str,
                interface: Mapping[str, Iterable[str]]) -> None:
    """Add ``{service: [methods]}`` of ``namespace``/``server_type`` under ``root``."""
    ns = root._child(namespace, lambda: ProxyNode([namespace]))
    st = ns._child(server_type, lambda: ProxyNode([namespace, server_type]))
    for service, methods in interface.items():
        # a reload replaces the service's methods as a whole
        node = st._children[service] = ProxyNode([namespace, server_type, service])
        for method in methods:
            node._children[method] = client.core.invoke.ProxyMethod(
                client._invoker, namespace, server_type, service, method)


def proxy_method(client: RpcClient, namespace: str, server_type: str | None, service: str,
                 method: str) -> ProxyMethod:
    """One proxy method of ``client``, outside its tree (``server_type`` None: calls that
    carry none, as pomelo's ``rpcInvoke`` to a server's ``sys`` remotes)."""
    method_: ProxyMethod = client.core.invoke.ProxyMethod(client._invoker, namespace,
                                                          server_type, service, method)
    return method_


class DynamicProxies:
    """``<server_type>.<service>.<method>`` proxies of one namespace, made on first use
    (and kept): for servers whose remote services are not on disk here, such as Node
    servers, as ``app.rpc`` of a pomelo application."""

    def __init__(self, client: RpcClient, namespace: str, path: tuple[str, ...] = ()) -> None:
        self._client = client
        self._namespace = namespace
        self._path = path
        self._children: dict[str, DynamicProxies | ProxyMethod] = {}

    # Any: a DynamicProxies level, or a ProxyMethod at the third
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        node = self._children.get(name)
        if node is None:
            if len(self._path) == 2:
                node = proxy_method(self._client, self._namespace, self._path[0],
                                    self._path[1], name)
            else:
                node = DynamicProxies(self._client, self._namespace, self._path + (name,))
            self._children[name] = node
        return node

    def __getitem__(self, name: str) -> Any:
        return self.__getattr__(name)


class BroadcastError(RpcError):
    """Some servers of a ``to_server("*")`` call failed: ``results`` and ``errors`` by id."""

    def __init__(self, message: str, results: dict[str, Any],
                 errors: dict[str, BaseException]) -> None:
        super().__init__(message)
        self.results = results
        self.errors = errors
