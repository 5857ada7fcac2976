"""``pomelo://host:port``: membership through the master of a Node pomelo 2.2.7 cluster.

The process joins the cluster the way a pomelo server process does (pomelo's
``monitor`` component, pomelo-admin's ``MonitorAgent``; the wire is in
``pomelo_monitor``): it connects to the master, sends ``register`` (type ``monitor``,
its id, serverType, pid and info, the admin token), then subscribes to the master's
``__masterwatcher__``, whose answer is the cluster's server list. The master then
announces this server to every Node server (``addServer``), so their
``app.rpc.<type>...`` proxies route to it over pomelo-rpc's mqtt transport (run the
Python server with ``transport="mqtt"``), and tells this process of every change
(``addServer``, ``removeServer``, ``replaceServer`` to ``__monitorwatcher__``). It
also answers the master's other module requests (``pomelo_admin``).

URL: ``pomelo://master-host:port?token=T&client_type=pomelo_rpc_client``.

- ``token``: the admin token of the server type registering, as the cluster's
  ``config/adminServer.json`` lists it (``[{"type": "area", "token": "..."}]``); not
  needed when the cluster has no adminServer.json. A wrong one is refused by the
  master: ``MasterRefusedError``.
- ``client_type``: a process that only watches (a client without a server) registers
  as a monitor of this server type with an id of its own, and *without* a serverType
  in its info: the master keeps it out of the server list (nobody routes to it) but
  lets it subscribe. It authenticates with ``token`` too, so list this type in
  adminServer.json with that token.

One master is one cluster: ``cluster`` is not used. Leaving: ``deregister`` sends
DISCONNECT and the master drops this server from every process; a killed process is
dropped when the master sees its connection close. pomelo does not tell a stop from
a crash: every removal reaches the listener as a graceful leave (a record with
``leaving``, then gone), calls in flight to a crashed server fail with their connection.
When the master goes away, the last list is kept; the link reconnects with backoff,
registers and subscribes again and resyncs. Servers the new master does not know yet
are kept for ``ttl`` seconds (Node servers reconnect to it after about a second), then
dropped. The master's ``stop``/``kill`` (``pomelo stop``) stop this process: ``on_stop``
(default: SIGTERM to this process, which ``python -m pomelo_rpc serve`` takes as a
graceful stop; a watch-only process just logs it).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import pomelo_admin
from .base import (LEAVING, Backoff, Listener, OutageHold, Record, RegistryError, normalize_server,
                   parse_record)
from .pomelo_monitor import PRO_OK, MonitorLink, connect, within

__all__ = ["PomeloMasterRegistry", "MasterRefusedError", "URL_DEFAULTS"]

log = logging.getLogger("pomelo_rpc.registry.pomelo")

#: query parameters of a ``pomelo://`` URL and their defaults
URL_DEFAULTS: dict[str, Any] = {
    "token": None,                       # adminServer.json token of the registering type
    "client_type": "pomelo_rpc_client",  # server type a watch-only process registers as
}

MASTER_WATCHER = "__masterwatcher__"
MONITOR_WATCHER = "__monitorwatcher__"
#: pomelo's Constants.SIGNAL, the answer of a monitor to the master's watcher
SIGNAL_FAIL, SIGNAL_OK = 0, 1

_client_ids = itertools.count(1)


class MasterRefusedError(RegistryError):
    """The pomelo master refused the registration (a wrong or missing admin token)."""


class PomeloMasterRegistry:
    """A ``Registry`` whose engine is the master of a Node pomelo cluster."""

    #: s ``deregister`` waits after leaving, while the master tells every process (it
    #: takes milliseconds); the server still serves what is routed to it meanwhile
    notice_delay = 0.5
    #: Node servers close a removed server's connection at once (pomelo-rpc 1.0.7): what
    #: they sent it and it has not answered yet is lost (a backend server waits for a
    #: moment with none before leaving, see ``Gateway.stop``)
    callers_drop_leaving = True
    #: the URL's scheme and its query parameters (a flavour of the master: ``pinus``)
    scheme = "pomelo"
    url_defaults: dict[str, Any] = URL_DEFAULTS
    #: where the master reads its admin tokens (named in MasterRefusedError)
    admin_file = "config/adminServer.json"

    def __init__(self, url: str, *, cluster: str, ttl: float, connect_timeout: float) -> None:
        parts = urlsplit(url)
        scheme, defaults = self.scheme, self.url_defaults
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"a {scheme} registry URL is {scheme}://master-host:port: {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - set(defaults)
        if unknown:
            raise ValueError(f"unknown {scheme} registry parameter(s) "
                             f"{', '.join(sorted(unknown))} in {url!r}; known: "
                             f"{', '.join(defaults)}")
        params = {**defaults, **query}
        self.params = params
        self.host: str = parts.hostname
        self.port: int = parts.port
        self.token: str | None = params["token"]
        self.client_type: str = params["client_type"]
        self.cluster = cluster
        self.ttl = ttl
        self.connect_timeout = connect_timeout
        #: called when the master asks this process to stop; None: see the module doc
        self.on_stop: Callable[[], None] | None = None
        self._identity: dict[str, Any] | None = None   # id, serverType, info we register as
        self._is_server = False
        self._listener: Listener | None = None
        self._fresh: dict[str, Record] = {}     # the master's list, as last told
        self._hold = OutageHold(ttl)            # servers a new master does not know yet
        self._hold_timer: asyncio.TimerHandle | None = None
        self._servers: dict[str, Record] = {}   # what the listener got last
        self._link: MonitorLink | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def where(self) -> str:
        """``host:port`` of the master."""
        return f"{self.host}:{self.port}"

    # Registry -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect to the master (MQTT CONNECT/CONNACK) within ``connect_timeout``."""
        if self._link is None:
            self._link = await self._connect()

    async def register(self, record: Record) -> None:
        """Register this server with the master; it announces it to every process."""
        rec = normalize_server(record)
        await self._join({"id": rec["id"], "serverType": rec["server_type"],
                          "info": self._server_info(rec)}, server=True)

    def _server_info(self, rec: Record) -> dict[str, Any]:
        """The ``info`` this server registers with: the master hands it to every process."""
        info = {k: v for k, v in rec.items() if k not in ("server_type", LEAVING)}
        info["serverType"] = rec["server_type"]
        return info

    async def deregister(self, server_id: str) -> None:
        """Leave the cluster (DISCONNECT): the master drops this server everywhere;
        returns ``notice_delay`` s later, when every process has heard of it."""
        if not self._is_server or self._identity is None or self._identity["id"] != server_id:
            return
        await self._leave()     # and stops following: the listener keeps the last list
        await asyncio.sleep(self.notice_delay)

    async def watch(self, listener: Listener) -> dict[str, Record]:
        """The cluster's servers (Node ones included); ``listener`` follows the changes."""
        self._listener = listener
        if self._identity is None:
            await self._join(self._client_identity(), server=False)
        return dict(self._servers)

    async def close(self) -> None:
        """Leave the master (DISCONNECT) and stop following it."""
        self._listener = None
        await self._leave()
        if self._hold_timer is not None:
            self._hold_timer.cancel()

    # joining and leaving ---------------------------------------------------------------

    def _client_identity(self) -> dict[str, Any]:
        sid = f"{self.client_type}-{socket.gethostname()}-{os.getpid()}-{next(_client_ids)}"
        return {"id": sid, "serverType": self.client_type, "info": {"id": sid}}

    async def _connect(self) -> MonitorLink:
        try:
            return await connect(self.host, self.port, self._on_message,
                                 timeout=self.connect_timeout, keepalive=max(self.ttl / 3, 0.2))
        except (OSError, asyncio.TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            raise RegistryError(f"{self.scheme} master at {self.where} unreachable within "
                                f"{self.connect_timeout} s: {why}") from exc

    async def _join(self, identity: dict[str, Any], server: bool) -> None:
        """Register as ``identity`` on a link of its own, then keep it registered."""
        if self._identity is not None:
            await self._leave()
        self._identity, self._is_server = identity, server
        link, self._link = self._link or await self._connect(), None
        try:
            await self._session(link)
        except BaseException:
            link.abort()
            self._identity, self._is_server = None, False
            raise
        self._link = link
        self._task = asyncio.get_running_loop().create_task(self._supervise(link))

    async def _leave(self) -> None:
        """Stop reconnecting; DISCONNECT the current link and wait for it to close."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=self.connect_timeout)
        link, self._link = self._link, None
        if link is not None:
            link.disconnect()
            try:
                await within(asyncio.shield(link.closed), self.connect_timeout)
            except asyncio.TimeoutError:
                link.abort()
        self._identity, self._is_server = None, False

    async def _session(self, link: MonitorLink) -> None:
        """``register`` then subscribe on ``link``; the answer resyncs the server list."""
        assert self._identity is not None
        sid, stype = self._identity["id"], self._identity["serverType"]
        req = {"id": sid, "type": "monitor", "serverType": stype, "pid": os.getpid(),
               "info": self._identity["info"]}
        if self.token is not None:
            req["token"] = self.token
        try:
            answer = await link.register(req, self.connect_timeout)
            if answer.get("code") != PRO_OK:
                raise MasterRefusedError(
                    f"the {self.scheme} master at {self.where} refused {sid!r} of type "
                    f"{stype!r}: {answer.get('msg')} (the token must be the one its "
                    f"{self.admin_file} lists for type {stype!r})")
            error, servers = await link.request(
                MASTER_WATCHER, {"action": "subscribe", "id": sid}, self.connect_timeout)
        except (ConnectionError, asyncio.TimeoutError) as exc:
            raise RegistryError(f"{self.scheme} master at {self.where}: registering {sid!r} "
                                f"failed: {str(exc) or type(exc).__name__}") from exc
        if error is not None or not isinstance(servers, dict):
            raise RegistryError(f"{self.scheme} master at {self.where}: subscribing failed: "
                                f"{error!r} {servers!r:.200}")
        log.info("registry: %s registered with the pomelo master at %s (%d servers)",
                 sid, self.where, len(servers))
        self._resync(servers)

    async def _supervise(self, link: MonitorLink) -> None:
        """When the link to the master is lost: reconnect with backoff, register again."""
        backoff = Backoff(0.1, max(0.2, min(2.0, self.ttl / 3)))
        while True:
            await asyncio.shield(link.closed)
            self._link = None
            log.warning("registry: lost the pomelo master at %s; reconnecting", self.where)
            while True:
                try:
                    link = await self._connect()
                except RegistryError as exc:
                    await backoff.failed(f"connecting to the pomelo master at {self.where}", exc)
                    continue
                try:
                    await self._session(link)
                except RegistryError as exc:
                    link.abort()
                    await backoff.failed(f"registering with the pomelo master at {self.where}",
                                         exc)
                    continue
                except BaseException:
                    link.abort()
                    raise
                backoff.succeeded(f"the pomelo master at {self.where}")
                self._link = link
                break

    # the server list -----------------------------------------------------------------

    def _emit(self) -> None:
        if self._listener is not None:
            try:
                self._listener(dict(self._servers))
            except Exception:
                log.exception("registry: a pomelo registry listener failed")

    def _records(self, servers: dict[str, Any]) -> dict[str, Record]:
        out = {}
        for sid, info in servers.items():
            rec = parse_record(info, f"pomelo master {self.where}, server {sid!r}")
            if rec is not None:
                out[rec["id"]] = rec
        return out

    def _publish(self) -> None:
        """The master's list plus the held records; to the listener if it changed."""
        merged = dict(self._hold.merge(self._fresh))
        if merged != self._servers:
            self._servers = merged
            self._emit()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        delay = self._hold.next_expiry()
        if delay is not None:
            self._hold_timer = asyncio.get_running_loop().call_later(delay + 0.01,
                                                                     self._publish)

    def _resync(self, servers: dict[str, Any]) -> None:
        """The master's full list; servers it does not know (yet) are held for a ttl."""
        fresh = self._records(servers)
        self._hold.lost(self._servers, fresh)
        self._fresh = fresh
        self._publish()

    def _add(self, info: Any) -> bool:
        rec = parse_record(info, f"pomelo master {self.where}, addServer") if info else None
        if rec is None:
            return False
        self._fresh[rec["id"]] = rec
        self._publish()
        return True

    def _remove(self, ids: list[str], fresh: dict[str, Record] | None = None) -> None:
        """Removals (then the master's list ``fresh``, when given): each removed record
        with ``leaving`` first, then gone."""
        gone = [sid for sid in ids if sid in self._servers]
        for sid in ids:
            self._fresh.pop(sid, None)
            self._hold.held.pop(sid, None)
        if fresh is not None:
            self._fresh = fresh
        if gone:
            for sid in gone:
                self._servers[sid] = {**self._servers[sid], LEAVING: True}
            self._emit()
        self._publish()

    # the master's module requests ------------------------------------------------------

    def _on_message(self, link: MonitorLink, msg: dict[str, Any]) -> None:
        module, body, req_id = msg.get("moduleId"), msg.get("body"), msg.get("reqId")
        if "command" in msg:
            log.info("registry: pomelo master command %r for module %r not supported",
                     msg.get("command"), module)
            return
        handler = _MODULES.get(module) if isinstance(module, str) else None
        if handler is None:
            log.warning("registry: the pomelo master asked module %r, which this process "
                        "does not have: %.200r", module, msg)
            link.respond(req_id, f"unknown moduleId:{module} (not supported by pomelo_rpc)")
            return
        handler(self, link, req_id, body if isinstance(body, dict) else {})

    def _watcher(self, link: MonitorLink, req_id: Any, body: dict[str, Any]) -> None:
        action = body.get("action")
        ok = True
        if action == "addServer":
            ok = self._add(body.get("server"))
        elif action == "removeServer" and isinstance(body.get("id"), str):
            self._remove([body["id"]])
        elif action == "replaceServer" and isinstance(body.get("servers"), dict):
            fresh = self._records(body["servers"])
            self._remove([sid for sid in self._servers if sid not in fresh], fresh)
        elif action != "startOver":      # startOver: no lifecycle callbacks here
            log.warning("registry: pomelo master watcher action %r not understood: %.200r",
                        action, body)
            ok = False
        link.respond(req_id, SIGNAL_OK if ok else SIGNAL_FAIL)

    def _ids(self) -> tuple[str, str, dict[str, Any]]:
        ident = self._identity or {"id": "", "serverType": "", "info": {}}
        return ident["id"], ident["serverType"], ident["info"]

    def _console(self, link: MonitorLink, req_id: Any, body: dict[str, Any]) -> None:
        sid, stype, _ = self._ids()
        sig = body.get("signal")
        if sig == "list":
            link.respond(req_id, pomelo_admin.console_list(sid, stype))
        elif sig in ("stop", "kill"):
            link.respond(req_id, sid)
            self._stop_requested(sig)
        elif sig == "restart":      # an empty answer: the master restarts nothing
            log.warning("registry: the pomelo master asked %s to restart: a Python process "
                        "cannot be restarted by a Node master; ignored", sid)
            link.respond(req_id, None)
        else:
            log.warning("registry: pomelo console signal %r not supported", sig)
            link.respond(req_id, f"console {sig} is not supported by pomelo_rpc")

    def _stop_requested(self, sig: str) -> None:
        log.warning("registry: the pomelo master asked %s to %s", self._ids()[0], sig)
        if self.on_stop is not None:
            self.on_stop()
        elif self._is_server:
            os.kill(os.getpid(), signal.SIGTERM)

    def _watch_server(self, link: MonitorLink, req_id: Any, body: dict[str, Any]) -> None:
        sid, stype, info = self._ids()
        comd = body.get("comd")
        if comd == "servers":
            link.respond(req_id, pomelo_admin.watch_servers(sid, stype, info))
        elif comd == "modules":
            link.respond(req_id, None, {"msg": sorted(_MODULES)})
        elif comd == "status":
            link.respond(req_id, None, {"serverId": sid,
                                        "body": pomelo_admin.ps_info(sid, stype)})
        else:
            log.info("registry: pomelo watchServer %r not supported", comd)
            link.respond(req_id, f"watchServer {comd} is not supported by pomelo_rpc")

    def _system_info(self, link: MonitorLink, req_id: Any, body: dict[str, Any]) -> None:
        link.notify("systemInfo", {"serverId": self._ids()[0], "body": pomelo_admin.sys_info()})

    def _node_info(self, link: MonitorLink, req_id: Any, body: dict[str, Any]) -> None:
        sid, stype, _ = self._ids()
        link.notify("nodeInfo", {"serverId": sid, "body": pomelo_admin.ps_info(sid, stype)})


_ModuleHandler = Callable[[PomeloMasterRegistry, MonitorLink, Any, dict[str, Any]], None]
#: the master's modules this process answers, by moduleId
_MODULES: dict[str, _ModuleHandler] = {
    MONITOR_WATCHER: PomeloMasterRegistry._watcher,
    "__console__": PomeloMasterRegistry._console,
    "watchServer": PomeloMasterRegistry._watch_server,
    "systemInfo": PomeloMasterRegistry._system_info,
    "nodeInfo": PomeloMasterRegistry._node_info,
}
