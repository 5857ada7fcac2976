"""Client proxies: ``client.proxies.<namespace>.<server_type>.<service>.<method>``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from .errors import RpcError

if TYPE_CHECKING:
    from .client import RpcClient


class ProxyMethod:
    """A remote method; call it with ``(route_param, *args)`` or ``.to_server(id, *args)``."""

    __slots__ = ("_client", "namespace", "server_type", "service", "method", "route")

    def __init__(self, client: RpcClient, namespace: str, server_type: str, service: str,
                 method: str) -> None:
        self._client = client
        self.namespace = namespace
        self.server_type = server_type
        self.service = service
        self.method = method
        self.route = f"{namespace}.{server_type}.{service}.{method}"

    def message(self, args: Iterable[Any]) -> dict[str, Any]:
        """The call message of this method with ``args``."""
        return {"namespace": self.namespace, "server_type": self.server_type,
                "service": self.service, "method": self.method, "args": list(args)}

    def __call__(self, route_param: Any, *args: Any,
                 timeout: float | None = None) -> Awaitable[Any]:
        """Route the call with ``route_param`` and return an awaitable of the result."""
        return self._client._routed_call(route_param, self.message(args), timeout)

    def to_server(self, server_id: str, *args: Any,
                  timeout: float | None = None) -> Awaitable[Any]:
        """Call server ``server_id``; ``"*"`` calls every server of the type (dict of answers)."""
        if server_id == "*":
            return self._client._broadcast(self.message(args), timeout)
        return self._client._direct_call(server_id, self.message(args), timeout)

    toServer = to_server  # pomelo's name

    def __repr__(self) -> str:
        return f"<ProxyMethod {self.route}>"


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
            node._children[method] = ProxyMethod(client, namespace, server_type, service, method)


class BroadcastError(RpcError):
    """Some servers of a ``to_server("*")`` call failed: ``results`` and ``errors`` by id."""

    def __init__(self, message: str, results: dict[str, Any],
                 errors: dict[str, BaseException]) -> None:
        super().__init__(message)
        self.results = results
        self.errors = errors
