"""Handlers: a server type's handler directory (pomelo's ``app/servers/<type>/handler``)
loaded as remote service directories are (``pomelo_rpc.remotes``: each ``*.py`` file is
a handler named by its file, its module functions or the object of its
``create(app)``; ``def`` or ``async def`` methods ``(msg, session)``), and the route
table ``forwardMessage`` looks a route up in. With ``reload_handlers`` the files are
polled and reloaded as ``reload_remotes`` does (``pomelo_rpc.reloader``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from .. import remotes
from ..reloader import ServiceWatcher

log = logging.getLogger("pomelo_rpc.backend.handlers")

#: the namespace the handler directory is loaded under (by the reloader; never served)
_NAMESPACE = "handler"


class HandlerError(Exception):
    """An error a handler (or a before filter) raises to answer the player with
    ``code``: ``raise HandlerError("not enough gold", code=501)`` reaches the player as
    ``{"code": 501}``. Any exception with an int ``code`` attribute does the same."""

    def __init__(self, message: str = "", code: int = 500) -> None:
        super().__init__(message)
        self.code = code


class RouteError(Exception):
    """A forwarded route this server has no handler for (or cannot parse)."""


#: a route's handler method and whether it is a coroutine function
Entry = tuple[Callable[..., Any], bool]


class Handlers:
    """The handlers of one directory, by route (``<server_type>.<handler>.<method>``)."""

    def __init__(self, directory: str, app: Any, server_type: str | None,
                 reload: bool = False) -> None:
        self.directory = directory
        self.app = app
        self.server_type = server_type or None
        self._watcher: ServiceWatcher | None = None
        if reload:
            self._watcher = ServiceWatcher([{"namespace": _NAMESPACE, "path": directory}], app)
        #: route -> entry; the full route when the server type is known, else
        #: ``handler.method`` (any server type prefix is then taken)
        self.routes: dict[str, Entry] = {}
        self.names: dict[str, list[str]] = {}   # handler -> its method names

    def load(self) -> None:
        """Load every handler (an error raises: the server does not start)."""
        if self._watcher is not None:
            services = self._watcher.load().get(_NAMESPACE, {})
        else:
            services = remotes.load_directory(self.directory, self.app)
        self._build(services)

    def check(self) -> list[str]:
        """With ``reload``: reload the handler files that changed; the changes made."""
        if self._watcher is None:
            return []
        changes = self._watcher.scan()
        if changes:
            self._build(self._watcher.namespaces().get(_NAMESPACE, {}))
            log.info("reloaded handlers: %s", ", ".join(changes))
        return changes

    def _build(self, services: Mapping[str, Any]) -> None:
        prefix = f"{self.server_type}." if self.server_type else ""
        routes: dict[str, Entry] = {}
        names: dict[str, list[str]] = {}
        for handler, service in services.items():
            methods = remotes.public_methods(service)
            names[handler] = sorted(methods)
            for name, func in methods.items():
                routes[f"{prefix}{handler}.{name}"] = (func, remotes.is_async(func))
        self.routes, self.names = routes, names

    def lookup(self, route: Any) -> Entry:
        """The handler method of ``route``; RouteError saying what is wrong with it."""
        if self.server_type is not None:
            entry = self.routes.get(route) if type(route) is str else None
        elif type(route) is str:
            entry = self.routes.get(route.partition(".")[2])
        else:
            entry = None
        if entry is not None:
            return entry
        raise RouteError(self._why(route))

    def _why(self, route: Any) -> str:
        if type(route) is not str:
            return f"the route is not a string: {route!r:.80}"
        parts = route.split(".")
        if len(parts) != 3 or not all(parts):
            return f"bad route {route!r:.80}: a route is <server type>.<handler>.<method>"
        server_type, handler, method = parts
        if self.server_type is not None and server_type != self.server_type:
            return (f"route {route!r:.80} is for server type {server_type!r:.40}; this "
                    f"server is of type {self.server_type!r}")
        if handler not in self.names:
            return (f"no handler {handler!r:.40} (route {route!r:.80}); handlers: "
                    f"{', '.join(sorted(self.names)) or 'none'}")
        return f"handler {handler!r} has no method {method!r:.40} (route {route!r:.80})"
