"""A Node pomelo 2.2.7 (or pinus 1.7.4) application on loopback, and simulated players:
what the backend tests, ``bench/backend.py`` and ``./dev demo --pomelo`` run Python
backend servers in.

``PomeloApp`` copies the repository's ``tests/node/pomelo_app`` (pomelo from npm, as
``./dev setup`` installs it from the committed lockfile) to a temporary directory,
writes its ``config/*.json`` on free loopback ports (a master, hybridconnectors over
WebSocket, Node backend servers) and runs ``node app.js``: the master starts the
servers. ``PinusApp`` does the same with ``tests/pinus/pinus_app`` (pinus from
``tests/pinus``), on either of pinus's rpc transports. ``Players`` drives
pomelo-client-websocket players in one Node process (``tests/node/players.js``; pinus's
connectors speak the same protocol). Development tools: they need a checkout, not an
install.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

from .registry.pinus import PinusMasterRegistry
from .registry.pomelo import PomeloMasterRegistry

__all__ = ["PomeloApp", "PinusApp", "Players", "NODE_DIR", "PINUS_DIR", "node_missing"]

_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
#: the Node side of the repository's tests (package.json, node_modules, the app)
NODE_DIR = os.path.join(_TESTS, "node")
#: the pinus side (pinus 1.7.4, pinus_app)
PINUS_DIR = os.path.join(_TESTS, "pinus")
#: the admin tokens of config/adminServer.json, by server type
TOKENS = {"connector": "connector-secret", "node": "node-secret", "area": "area-secret",
          "py": "py-secret", "pyclient": "pyclient-secret"}


def node_missing(where: str = NODE_DIR,
                 packages: Iterable[str] = ("pomelo", "pomelo-client-websocket")) -> str | None:
    """Why the Node side cannot run here (None: it can): Node, and ``packages`` in
    ``where``/node_modules."""
    if shutil.which("node") is None:
        return "Node.js is not installed"
    for package in packages:
        if not os.path.isdir(os.path.join(where, "node_modules", package)):
            return (f"{package} is not installed in {where}/node_modules "
                    f"(./dev setup runs npm ci there)")
    return None


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PomeloApp:
    """tests/node/pomelo_app in a temporary directory, configured and run.

    ``connectors``: ids of hybridconnectors (WebSocket); ``node``: ids of Node servers
    of type ``node`` (``node.relayHandler``, ``relayRemote``); ``areas``: ids of Node
    servers of type ``area`` (the Node twin of a Python area). ``nodelay``: TCP_NODELAY
    patched into every Node socket (app.js, ``POMELO_NODELAY``). ``rpc_timeout``: the
    connectors' rpc callback timeout in s (pomelo's ``proxyConfig.timeout``; None: its
    default, 30 s).
    """

    #: the npm packages' folder and the app's
    node_dir = NODE_DIR
    app_dir = os.path.join(NODE_DIR, "pomelo_app")
    #: what node_missing checks in node_dir
    packages: tuple[str, ...] = ("pomelo", "pomelo-client-websocket")
    #: the registry URL's scheme, and the watch-only registry of ``server_list``
    scheme = "pomelo"
    registry_class: type[PomeloMasterRegistry] = PomeloMasterRegistry
    #: the pomelo_rpc transport of the cluster's rpc (``server.create(transport=)``)
    transport = "mqtt"

    def __init__(self, connectors: Iterable[str] = ("connector-1",), node: Iterable[str] = (),
                 areas: Iterable[str] = (), nodelay: bool = False,
                 rpc_timeout: float | None = None, base: str | None = None) -> None:
        missing = node_missing(self.node_dir, self.packages)
        if missing is not None:
            raise RuntimeError(missing)
        self.node = shutil.which("node") or "node"
        self._made_base = base is None      # a temporary directory of ours: removed at stop
        self.base = base or tempfile.mkdtemp(prefix=f"{self.scheme}_app_")
        shutil.copytree(self.app_dir, self.base, dirs_exist_ok=True)
        self.nodelay = nodelay
        self.rpc_timeout = rpc_timeout
        self.master_port = free_port()
        #: the rpc port of every Node server, by id
        self.ports: dict[str, int] = {}
        #: the players' (WebSocket) port of each connector, by id
        self.client_ports: dict[str, int] = {}
        servers: dict[str, list[dict[str, Any]]] = {}
        for sid in connectors:
            self.ports[sid], self.client_ports[sid] = free_port(), free_port()
            servers.setdefault("connector", []).append(
                {"id": sid, "host": "127.0.0.1", "port": self.ports[sid], "frontend": True,
                 "clientHost": "127.0.0.1", "clientPort": self.client_ports[sid]})
        for server_type, ids in (("node", node), ("area", areas)):
            for sid in ids:
                self.ports[sid] = free_port()
                servers.setdefault(server_type, []).append(
                    {"id": sid, "host": "127.0.0.1", "port": self.ports[sid]})
        self._write("master.json", {"development": {
            "id": "master-server-1", "host": "127.0.0.1", "port": self.master_port}})
        self._write("servers.json", {"development": servers})
        self._write("adminServer.json", [{"type": t, "token": k} for t, k in TOKENS.items()])
        self.master: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self.base, f"{self.scheme}.log")
        #: the Node servers' records as the master lists them (pid included), by id
        self.servers: dict[str, dict[str, Any]] = {}

    def _write(self, name: str, obj: Any) -> None:
        with open(os.path.join(self.base, "config", name), "w") as f:
            json.dump(obj, f)

    def env(self) -> dict[str, str]:
        """The environment of the Node processes."""
        env = dict(os.environ, NODE_PATH=os.path.join(self.node_dir, "node_modules"))
        env["POMELO_NODELAY"] = "1" if self.nodelay else "0"
        env.setdefault("POMELO_LOG_LEVEL", "WARN")     # not every request at DEBUG
        if self.rpc_timeout is not None:
            env["POMELO_RPC_TIMEOUT"] = str(int(self.rpc_timeout * 1000))
        return env

    def url(self, server_type: str, **params: str) -> str:
        """The ``pomelo://`` (``pinus://``) URL of the master with the token of
        ``server_type``."""
        query = "&".join([f"token={TOKENS[server_type]}"]
                         + [f"{k}={v}" for k, v in params.items()])
        return f"{self.scheme}://127.0.0.1:{self.master_port}?{query}"

    async def start(self, timeout: float = 60.0) -> None:
        """Run the master (which starts the servers); return once every server is
        listed by the master and every connector takes players."""
        with open(self.log_path, "ab") as log:
            self.master = subprocess.Popen(
                [self.node, "app.js", "env=development"], cwd=self.base, env=self.env(),
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            await self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        want = set(self.ports)
        while True:
            if self.master is not None and self.master.poll() is not None:
                raise RuntimeError(f"the {self.scheme} master exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.scheme} app did not start within {timeout} s "
                                   f"(servers listed: {sorted(self.servers)}):\n"
                                   f"{self.log_tail()}")
            try:
                self.servers = await self.server_list()
            except Exception:
                self.servers = {}
            if want <= set(self.servers) and all(
                    await asyncio.gather(*(_accepts(p) for p in self.client_ports.values()))):
                return
            await asyncio.sleep(0.1)

    async def server_list(self) -> dict[str, dict[str, Any]]:
        """The master's server list now (asked by a watch-only registry of its own)."""
        reg = self.registry_class(self.url("pyclient", client_type="pyclient"),
                                  cluster="default", ttl=3.0, connect_timeout=2.0)
        try:
            await reg.open()
            return await reg.watch(lambda servers: None)
        finally:
            await reg.close()

    def pid(self, server_id: str) -> int:
        """The process id of Node server ``server_id``."""
        return int(self.servers[server_id]["pid"])

    def stop(self) -> None:
        """SIGKILL the master's process group and every server it started; remove the
        temporary directory if this object made it."""
        pids = [info.get("pid") for info in self.servers.values()]
        if self.master is not None:
            try:
                os.killpg(self.master.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.master.wait(10)
            self.master = None
        for pid in pids:      # the servers run in the master's group; in case one left it
            if isinstance(pid, int):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._made_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, size: int = 3000) -> str:
        """The end of the Node processes' log."""
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-size:].decode(errors="replace")
        except OSError:
            return ""


class PinusApp(PomeloApp):
    """tests/pinus/pinus_app (pinus 1.7.4) in a temporary directory, configured and run
    as ``PomeloApp`` runs the pomelo one (the same servers, connectors and options), on
    pinus's rpc ``transport``: ``"mqtt"`` (its default) or ``"pinus-tcp"`` (its tcp
    mailbox and acceptor). ``stubs``: the folder of JS stubs the Python servers
    advertise (``python -m pomelo_rpc stubs``), added to ``url()`` as ``stubs=``.
    ``nodelay`` does nothing here: pinus-rpc sets TCP_NODELAY itself."""

    node_dir = PINUS_DIR
    app_dir = os.path.join(PINUS_DIR, "pinus_app")
    packages = ("pinus", "pinus-rpc")
    scheme = "pinus"
    registry_class = PinusMasterRegistry

    def __init__(self, *args: Any, transport: str = "mqtt", stubs: str | None = None,
                 **kw: Any) -> None:
        if transport not in ("mqtt", "pinus-tcp"):
            raise ValueError(f"a pinus cluster's transport is mqtt or pinus-tcp, not "
                             f"{transport!r}")
        self.transport = transport
        self.stubs = stubs
        super().__init__(*args, **kw)

    def env(self) -> dict[str, str]:
        """The environment of the Node processes: the rpc transport too."""
        env = super().env()
        env["PINUS_RPC_TRANSPORT"] = "tcp" if self.transport == "pinus-tcp" else "mqtt"
        return env

    def url(self, server_type: str, **params: str) -> str:
        """The ``pinus://`` URL of the master with the token of ``server_type`` (and
        ``stubs=`` if this app has stubs and ``params`` none)."""
        if self.stubs is not None:
            params.setdefault("stubs", self.stubs)
        return super().url(server_type, **params)


async def _accepts(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


class Players:
    """Players in one Node process (``tests/node/players.js``); see its header.

    ``on_event(event)``, if given, sees every event (pushes, kicks, closes, responses).
    """

    def __init__(self, on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.on_event = on_event
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._events: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._tags = 0

    async def start(self) -> Players:
        """Start the Node process."""
        missing = node_missing()
        if missing is not None:
            raise RuntimeError(missing)
        self.proc = await asyncio.create_subprocess_exec(
            shutil.which("node") or "node", os.path.join(NODE_DIR, "players.js"),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=dict(os.environ, NODE_PATH=os.path.join(NODE_DIR, "node_modules")),
            limit=1 << 24)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        while line := await stdout.readline():
            event = json.loads(line)
            if self.on_event is not None:
                self.on_event(event)
            kind = event.get("ev")
            key: Any = None
            if kind in ("response", "load"):
                key = event.get("tag")
            elif kind in ("connected", "error") and "p" in event:
                key = ("connect", event["p"])
            elif kind == "error" and "tag" in event:
                key = event["tag"]
            fut = self._waiting.pop(key, None) if key is not None else None
            if fut is not None and not fut.done():
                fut.set_result(event)
            elif "p" in event:
                self.queue(event["p"]).put_nowait(event)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the players process ended"))

    def queue(self, player: str) -> asyncio.Queue[dict[str, Any]]:
        """The pushes, kicks and closes of ``player``, in order."""
        q = self._events.get(player)
        if q is None:
            q = self._events[player] = asyncio.Queue()
        return q

    def _send(self, cmd: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())

    async def _ask(self, key: Any, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        self._send(cmd)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(key, None)

    async def connect(self, player: str, port: int, timeout: float = 10.0) -> None:
        """Connect ``player`` to the connector whose players' port is ``port``."""
        event = await self._ask(("connect", player),
                                {"op": "connect", "p": player, "port": port}, timeout)
        if event["ev"] != "connected":
            raise ConnectionError(f"player {player}: {event.get('error')}")

    async def request(self, player: str, route: str, msg: Any = None,
                      timeout: float = 10.0) -> Any:
        """A request of ``player``; the response's body."""
        self._tags += 1
        event = await self._ask(self._tags, {"op": "request", "p": player, "route": route,
                                             "msg": msg or {}, "tag": self._tags}, timeout)
        return event.get("body")

    def notify(self, player: str, route: str, msg: Any = None) -> None:
        """A notify of ``player`` (no response)."""
        self._send({"op": "notify", "p": player, "route": route, "msg": msg or {}})

    def close(self, player: str) -> None:
        """Disconnect ``player``."""
        self._send({"op": "close", "p": player})

    async def next_event(self, player: str, kind: str | None = None,
                         timeout: float = 10.0) -> dict[str, Any]:
        """The next push/kick/close of ``player`` (of ``kind`` if given; others before
        it are dropped)."""
        q = self.queue(player)
        deadline = time.monotonic() + timeout
        while True:
            event = await asyncio.wait_for(q.get(), max(0.0, deadline - time.monotonic()))
            if kind is None or event["ev"] == kind:
                return event

    async def load(self, port: int, players: int, seconds: float, route: str,
                   msg: Any = None, entry: Any = None, push_every: int = 0) -> dict[str, Any]:
        """``players`` players each requesting ``route`` one after the other for
        ``seconds``: ``{requests, errors, pushes, seconds, p50, p99}`` (ms)."""
        self._tags += 1
        event = await self._ask(self._tags, {
            "op": "load", "tag": self._tags, "port": port, "players": players,
            "seconds": seconds, "route": route, "msg": msg or {}, "entry": entry or {},
            "pushEvery": push_every}, seconds + 60)
        if event["ev"] != "load":
            raise RuntimeError(f"load failed: {event.get('error')}")
        return event

    async def stop(self) -> None:
        """End the Node process."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=2)
