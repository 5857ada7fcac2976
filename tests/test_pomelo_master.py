"""registry="pomelo://...": Python processes join a running Node pomelo 2.2.7 cluster.

The cluster is tests/node/pomelo_app (pomelo@2.2.7 from npm): its master and two
backend servers of type "node", started with ``node app.js`` on free loopback ports
(one cluster for the module). Each Node server answers on a small HTTP hook: its
server list (``app.getServers()``) and ``app.rpc.<type>.<service>.<method>`` calls.
Python servers are of type "py" (tests/remote/pomelo), on the mqtt transport.
"""

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REMOTE, ROOT
from pomelo_rpc import client, server
from pomelo_rpc.core import mqtt
from pomelo_rpc.registry import RegistryError
from pomelo_rpc.registry.pomelo import MasterRefusedError, PomeloMasterRegistry

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "node")
APP_DIR = os.path.join(NODE_DIR, "pomelo_app")
PY_REMOTE = os.path.join(REMOTE, "pomelo")
TOKENS = {"node": "node-secret", "py": "py-secret", "pyclient": "pyclient-secret"}
NODE_IDS = ["node-1", "node-2"]
#: in CI (./dev test) a missing Node.js or npm package fails instead of skipping
STRICT = any(os.environ.get(v, "") not in ("", "0")
             for v in ("POMELO_RPC_REQUIRE_NODE", "POMELO_RPC_REQUIRE_CYTHON"))


def free_port():
    """A port nothing listens on now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_exe():
    """``node``, with pomelo 2.2.7 installed in tests/node/node_modules (npm ci if not)."""
    exe = shutil.which("node")
    if exe is None:
        if STRICT:
            pytest.fail("Node.js is not installed: the pomelo cluster tests need it")
        pytest.skip("Node.js is not installed: the pomelo cluster tests need it")
    pkg = os.path.join(NODE_DIR, "node_modules", "pomelo", "package.json")
    if not os.path.exists(pkg):
        npm = shutil.which("npm")
        if npm is None:
            (pytest.fail if STRICT else pytest.skip)("npm is needed to install pomelo 2.2.7")
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    with open(pkg) as f:
        assert json.load(f)["version"] == "2.2.7"
    return exe


class PomeloCluster:
    """tests/node/pomelo_app copied to a temp dir, with config on free ports, running."""

    def __init__(self, node, base):
        self.node = node
        self.base = base
        shutil.copytree(APP_DIR, base, dirs_exist_ok=True)
        self.master_port = free_port()
        self.ports = {sid: free_port() for sid in NODE_IDS}
        self.hooks = {sid: free_port() for sid in NODE_IDS}
        self._write("master.json", {"development": {
            "id": "master-server-1", "host": "127.0.0.1", "port": self.master_port}})
        self._write("servers.json", {"development": {"node": [
            {"id": sid, "host": "127.0.0.1", "port": self.ports[sid],
             "hookPort": self.hooks[sid]} for sid in NODE_IDS]}})
        self._write("adminServer.json", [{"type": t, "token": k} for t, k in TOKENS.items()])
        self.groups = []          # processes started here, each leading a process group
        self.master = None
        self.log = open(os.path.join(base, "pomelo.log"), "ab")

    def _write(self, name, obj):
        with open(os.path.join(self.base, "config", name), "w") as f:
            json.dump(obj, f)

    def url(self, token_type="py", **params):
        """``pomelo://`` URL of the master with the token of ``token_type``."""
        query = "&".join([f"token={TOKENS[token_type]}"] + [f"{k}={v}" for k, v in params.items()])
        return f"pomelo://127.0.0.1:{self.master_port}?{query}"

    def start_master(self, *args):
        """``node app.js`` in a process group of its own (``type=master``: no servers)."""
        env = dict(os.environ, NODE_PATH=os.path.join(NODE_DIR, "node_modules"))
        self.master = subprocess.Popen([self.node, "app.js", *args], cwd=self.base, env=env,
                                       stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        self.groups.append(self.master)

    def start_server(self, sid):
        """Start Node server ``sid`` as the master does (``node app.js key=value...``)."""
        env = dict(os.environ, NODE_PATH=os.path.join(NODE_DIR, "node_modules"))
        args = ["env=development", f"id={sid}", "host=127.0.0.1", f"port={self.ports[sid]}",
                f"hookPort={self.hooks[sid]}", "serverType=node"]
        proc = subprocess.Popen([self.node, "app.js", *args], cwd=self.base, env=env,
                                stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.groups.append(proc)

    def kill_all(self):
        """SIGKILL every process group started here."""
        for proc in self.groups:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
        self.log.close()

    def log_tail(self):
        """The end of the cluster's log, for failure messages."""
        with open(os.path.join(self.base, "pomelo.log"), "rb") as f:
            return f.read()[-3000:].decode(errors="replace")


def _http_sync(port, path, body=None, timeout=2.0):
    data = json.dumps(body).encode() if body is not None else b""
    method = "POST" if body is not None else "GET"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"{method} {path} HTTP/1.0\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                  + data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks).split(b"\r\n\r\n", 1)[1])


async def http(port, path, body=None):
    """GET (or POST ``body`` as JSON) a Node server's hook; its JSON answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode() if body is not None else b""
    method = "POST" if body is not None else "GET"
    writer.write(f"{method} {path} HTTP/1.0\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                 + data)
    raw = await asyncio.wait_for(reader.read(), 15)
    writer.close()
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


async def node_lists(cluster):
    """``{node_server_id: sorted ids it knows}``."""
    return {sid: sorted(await http(port, "/servers")) for sid, port in cluster.hooks.items()}


async def node_rpc(cluster, via, service, method, *args, server_id=None, uid=None):
    """``app.rpc.py.<service>.<method>`` called on Node server ``via``."""
    return await http(cluster.hooks[via], "/rpc", {
        "type": "py", "service": service, "method": method, "args": list(args),
        "serverId": server_id, "uid": uid})


async def until(cond, limit, what):
    """Poll async ``cond()`` until true; the seconds it took (AssertionError at ``limit``)."""
    t0 = time.monotonic()
    while True:
        if await cond():
            return time.monotonic() - t0
        if time.monotonic() - t0 > limit:
            raise AssertionError(f"not within {limit} s: {what}")
        await asyncio.sleep(0.02)


def everywhere(cluster, sid, present=True):
    """A condition: every Node server knows ``sid`` (or none does)."""
    async def cond():
        lists = await node_lists(cluster)
        return all((sid in ids) == present for ids in lists.values())
    return cond


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The pomelo app's master and its two Node servers, up and hooked."""
    c = PomeloCluster(node_exe(), str(tmp_path_factory.mktemp("pomelo_app")))
    c.start_master()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                lists = {sid: _http_sync(port, "/servers") for sid, port in c.hooks.items()}
                if all(sorted(ids) == NODE_IDS for ids in lists.values()):
                    break
            except OSError:
                pass
            assert c.master.poll() is None, f"the pomelo master exited:\n{c.log_tail()}"
            assert time.monotonic() < deadline, f"the pomelo cluster did not start:\n{c.log_tail()}"
            time.sleep(0.05)
        yield c
    finally:
        c.kill_all()


def py_server(cluster, sid, core="cython", **opts):
    """A Python server of type "py" joining ``cluster`` (not started)."""
    return server.create(paths=[{"namespace": "user", "path": PY_REMOTE}], transport="mqtt",
                         context={"server_id": sid}, core=core,
                         server_info={"id": sid, "server_type": "py"},
                         registry=cluster.url("py"), **opts)


def py_client(cluster, core="cython"):
    """A watch-only Python client of the cluster (mqtt, as the Node servers speak)."""
    return client.create(transport="mqtt", core=core, registry=cluster.url(
        "pyclient", client_type="pyclient"))


RELAY = {"namespace": "user", "server_type": "node", "service": "relayRemote"}


# ---------------------------------------------------------------------------------------

async def test_python_server_joins_and_node_servers_call_it(cluster, core):
    gw = py_server(cluster, "py-join", core)
    await gw.start()
    try:
        took = await until(everywhere(cluster, "py-join"), 5, "both Node servers list py-join")
        print(f"py-join in every Node server's list {took * 1000:.0f} ms after start() returned")
        for via in NODE_IDS:
            # app.rpc.py.echoRemote.echo.toServer("py-join", ...) and routed by uid
            answer = await node_rpc(cluster, via, "echoRemote", "echo", {"n": 1, "s": "é"},
                                    server_id="py-join")
            assert answer == {"error": None, "result": {"server_id": "py-join",
                                                        "msg": {"n": 1, "s": "é"}}}
            answer = await node_rpc(cluster, via, "echoRemote", "echo", "routed", uid="u1")
            assert answer["result"] == {"server_id": "py-join", "msg": "routed"}
        info = (await http(cluster.hooks["node-1"], "/servers"))["py-join"]
        assert info["serverType"] == "py" and info["host"] == "127.0.0.1"
        assert info["port"] == gw.port and info["pid"] == os.getpid()
    finally:
        await gw.stop()
    await until(everywhere(cluster, "py-join", present=False), 5, "py-join left")


async def test_python_client_sees_the_cluster_and_round_trips_through_node(cluster, core):
    gw = py_server(cluster, "py-rt", core)
    await gw.start()
    cli = py_client(cluster, core)
    await cli.start()
    try:
        assert cli.server_ids("node") == NODE_IDS
        assert cli.server_info("node-1")["port"] == cluster.ports["node-1"]
        assert cli.server_ids("py") == ["py-rt"]
        # the client may hear of py-rt before the Node servers do (and pomelo-rpc holds a
        # call to a server it does not know yet, unanswered): wait for them
        await until(everywhere(cluster, "py-rt"), 5, "both Node servers list py-rt")
        # Python -> Node (relayRemote.relay) -> Python (echoRemote.echo on py-rt) -> back
        for via in NODE_IDS:
            answer = await cli.rpc_invoke(via, dict(RELAY, method="relay", args=["py-rt", "hi"]))
            assert answer == {"via": via, "answer": {"server_id": "py-rt", "msg": "hi"}}
        who = await cli.rpc_invoke("node-2", dict(RELAY, method="whoami", args=[]))
        assert who == {"id": "node-2", "servers": {"node": NODE_IDS, "py": ["py-rt"]}}
        # a watch-only process is not a server: no Node server lists it
        assert all(ids == NODE_IDS + ["py-rt"] for ids in (await node_lists(cluster)).values())
        # a server joining later reaches the client too
        late = py_server(cluster, "py-late", core)
        await late.start()
        try:
            took = await until(lambda: _async(cli.server_ids("py") == ["py-late", "py-rt"]), 5,
                               "the client sees py-late")
            print(f"client sees py-late {took * 1000:.0f} ms after its start() returned")
        finally:
            await late.stop()
        await until(lambda: _async(cli.server_ids("py") == ["py-rt"]), 5, "py-late gone")
    finally:
        await cli.stop()
        await gw.stop()


async def test_python_client_follows_node_servers_going_and_coming_back(cluster):
    cli = py_client(cluster)
    await cli.start()
    try:
        info = cli.server_info("node-2")
        os.kill(info["pid"], signal.SIGKILL)        # a Node server crashes
        took = await until(lambda: _async(cli.server_ids("node") == ["node-1"]), 5,
                           "the client dropped node-2")
        print(f"Node server killed: gone from the Python client {took * 1000:.0f} ms later")
        assert sorted(await http(cluster.hooks["node-1"], "/servers")) == ["node-1"]
        # and comes back, started the way the master starts it
        cluster.start_server("node-2")
        took = await until(lambda: _async(cli.server_ids("node") == NODE_IDS), 15,
                           "the client sees node-2 again")
        print(f"Node server restarted: in the Python client {took * 1000:.0f} ms after spawn")
        # node-2 itself learns the list from its own subscription, maybe a bit later
        await until(everywhere(cluster, "node-2"), 5, "both Node servers list node-2")
        who = await cli.rpc_invoke("node-2", dict(RELAY, method="whoami", args=[]))
        assert who == {"id": "node-2", "servers": {"node": NODE_IDS}}
    finally:
        await cli.stop()


async def _async(value):
    return value


async def test_graceful_stop_and_sigkill_each_remove_the_python_server(cluster):
    cli = py_client(cluster)
    await cli.start()
    proc = None
    try:
        gw = py_server(cluster, "py-stop")
        await gw.start()
        await until(everywhere(cluster, "py-stop"), 5, "py-stop joined")
        stopping = asyncio.ensure_future(gw.stop())
        took = await until(everywhere(cluster, "py-stop", present=False), 5, "py-stop left")
        print(f"graceful stop: gone from every Node server {took * 1000:.0f} ms after stop() "
              f"was called")
        await stopping
        await until(lambda: _async("py-stop" not in cli.server_ids("py")), 2,
                    "py-stop left the Python client")

        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", KILLED_SERVER, PY_REMOTE, cluster.url("py"), "py-killed",
            stdout=asyncio.subprocess.PIPE, env=dict(os.environ, PYTHONPATH=ROOT))
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert json.loads(line)["registered"] == "py-killed"
        await until(everywhere(cluster, "py-killed"), 5, "py-killed joined")
        await until(lambda: _async("py-killed" in cli.server_ids("py")), 2, "client sees it")
        assert (await node_rpc(cluster, "node-1", "echoRemote", "echo", 7,
                               server_id="py-killed"))["result"]["msg"] == 7
        proc.kill()
        await proc.wait()
        took = await until(everywhere(cluster, "py-killed", present=False), 5,
                           "py-killed dropped by every Node server")
        print(f"SIGKILL: gone from every Node server {took * 1000:.0f} ms after the kill")
        await until(lambda: _async("py-killed" not in cli.server_ids("py")), 2,
                    "py-killed dropped by the Python client")
        assert cli.server_ids("node") == NODE_IDS
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await cli.stop()


async def test_graceful_stop_under_load_fails_no_python_call(cluster, core):
    servers = [py_server(cluster, sid, core) for sid in ("py-a", "py-b")]
    for gw in servers:
        await gw.start()
    cli = client.create(transport="mqtt", core=core, router_type="rr",
                        registry=cluster.url("pyclient", client_type="pyclient"))
    cli.add_proxies([{"namespace": "user", "server_type": "py", "path": PY_REMOTE}])
    await cli.start()
    slow = cli.proxies.user.py.echoRemote.slow
    answers, errors, stopped = [], [], asyncio.Event()

    async def caller(n):
        while not stopped.is_set():
            try:
                answers.append(((await slow(None, n, 0.05))["server_id"], time.monotonic()))
            except Exception as exc:      # any failure is the test's failure
                errors.append(exc)

    try:
        assert cli.server_ids("py") == ["py-a", "py-b"]
        callers = [asyncio.ensure_future(caller(n)) for n in range(20)]
        await asyncio.sleep(0.3)
        await servers[0].stop()          # leaves, waits for the notice, drains, closes
        after = time.monotonic()
        await asyncio.sleep(0.3)
        stopped.set()
        await asyncio.gather(*callers)
        assert errors == []
        assert {sid for sid, _ in answers} == {"py-a", "py-b"}
        assert all(sid == "py-b" for sid, t in answers if t > after)
        assert cli.server_ids("py") == ["py-b"]
    finally:
        await cli.stop()
        for gw in servers:
            await gw.stop()


KILLED_SERVER = """
import asyncio, json, sys
import pomelo_rpc
from pomelo_rpc import server

async def main():
    remote, url, sid = sys.argv[1:4]
    gw = server.create(paths=[{"namespace": "user", "path": remote}], transport="mqtt",
                       context={"server_id": sid}, server_info={"id": sid, "server_type": "py"},
                       registry=url)
    await gw.start()
    print(json.dumps({"registered": sid, "port": gw.port}), flush=True)
    await asyncio.Event().wait()

pomelo_rpc.run(main())
"""


async def test_wrong_token_and_unreachable_master_are_clear_errors(cluster):
    gw = server.create(paths=[{"namespace": "user", "path": PY_REMOTE}], transport="mqtt",
                       server_info={"id": "py-bad", "server_type": "py"},
                       registry=cluster.url("node"), registry_connect_timeout=2.0)
    with pytest.raises(MasterRefusedError) as err:
        await gw.start()
    assert "server auth failed" in str(err.value) and "adminServer.json" in str(err.value)
    assert "'py'" in str(err.value)
    assert gw.port is None                                  # it stopped listening again
    assert all("py-bad" not in ids for ids in (await node_lists(cluster)).values())

    cli = client.create(transport="mqtt", registry=cluster.url("node", client_type="pyclient"))
    with pytest.raises(MasterRefusedError):
        await cli.start()

    port = free_port()
    cli = client.create(transport="mqtt", connect_timeout=1.0,
                        registry=f"pomelo://127.0.0.1:{port}?token=x")
    t0 = time.monotonic()
    with pytest.raises(RegistryError, match="unreachable"):
        await cli.start()
    assert time.monotonic() - t0 < 1.5

    # a listener that never answers CONNECT: the same error, within connect_timeout
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    cli = client.create(transport="mqtt", connect_timeout=0.5,
                        registry=f"pomelo://127.0.0.1:{port}?token=x")
    t0 = time.monotonic()
    try:
        with pytest.raises(RegistryError, match="unreachable within 0.5 s"):
            await cli.start()
        assert time.monotonic() - t0 < 1.0
    finally:
        silent.close()


async def test_master_restart_reregisters_and_resyncs(cluster):
    gw = py_server(cluster, "py-ha", registry_ttl=3.0)
    await gw.start()
    cli = py_client(cluster)
    await cli.start()
    try:
        await until(everywhere(cluster, "py-ha"), 5, "py-ha joined")
        lost = []
        cli_ids = lambda: cli.server_ids("node") + cli.server_ids("py")   # noqa: E731

        cluster.master.kill()
        await asyncio.get_running_loop().run_in_executor(None, cluster.master.wait)
        # master down: the Python client keeps its list and calls keep flowing
        for _ in range(3):
            answer = await cli.rpc_invoke("node-1", dict(RELAY, method="relay",
                                                         args=["py-ha", "down"]))
            assert answer["answer"] == {"server_id": "py-ha", "msg": "down"}
            await asyncio.sleep(0.2)
            lost += [sid for sid in NODE_IDS + ["py-ha"] if sid not in cli_ids()]
        cluster.start_master("type=master")      # the same port, no servers started
        t0 = time.monotonic()

        async def master_knows_all():      # asked of the new master by a fresh watcher
            reg = PomeloMasterRegistry(cluster.url("pyclient", client_type="pyclient"),
                                       cluster="default", ttl=3.0, connect_timeout=1.0)
            try:
                await reg.open()
                return sorted(await reg.watch(lambda m: None)) == NODE_IDS + ["py-ha"]
            except RegistryError:
                return False
            finally:
                await reg.close()
        await until(master_knows_all, 15, "the new master knows py-ha and the Node servers")
        print(f"master restarted: py-ha and both Node servers registered with the new master "
              f"{(time.monotonic() - t0) * 1000:.0f} ms after its start")
        lost += [sid for sid in NODE_IDS + ["py-ha"] if sid not in cli_ids()]
        assert lost == []        # the client never lost a server meanwhile

        # the new master relays changes both ways: a server joining now, one leaving now
        late = py_server(cluster, "py-after")
        await late.start()
        try:
            await until(everywhere(cluster, "py-after"), 5, "py-after in every Node server")
            await until(lambda: _async("py-after" in cli.server_ids("py")), 5,
                        "the resynced client sees py-after")
            answer = await node_rpc(cluster, "node-2", "echoRemote", "echo", "again",
                                    server_id="py-ha")
            assert answer["result"] == {"server_id": "py-ha", "msg": "again"}
            await gw.stop()
            await until(everywhere(cluster, "py-ha", present=False), 5, "py-ha left")
            await until(lambda: _async(cli.server_ids("py") == ["py-after"]), 5,
                        "the client saw py-ha leave")
        finally:
            await late.stop()
    finally:
        await cli.stop()
        await gw.stop()


POMELO_BIN = os.path.join(NODE_DIR, "node_modules", "pomelo", "bin", "pomelo")


async def node_script(cluster, *args):
    """Run ``node <args>`` in the app's directory; its exit code and output (no colours)."""
    proc = await asyncio.create_subprocess_exec(
        cluster.node, *args, cwd=cluster.base, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ, NODE_PATH=os.path.join(NODE_DIR, "node_modules")))
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, re.sub(r"\x1b\[[0-9;]*m", "", out.decode(errors="replace"))


async def admin(cluster, module_id, body):
    """A request of the admin console (admin.js) to the master: its ``data``."""
    code, out = await node_script(cluster, "admin.js", str(cluster.master_port), module_id,
                                  json.dumps(body))
    answer = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and answer["error"] is None, out
    return answer["data"]


async def test_pomelo_admin_tools_list_watch_and_stop_a_python_server(cluster, spawn):
    loop = asyncio.get_running_loop()
    # the README's line: a `serve` process joining the cluster
    srv = await loop.run_in_executor(None, lambda: spawn(
        "py-admin", "py", {"user": PY_REMOTE}, transport="mqtt",
        args=["--registry", cluster.url("py")]))
    await until(everywhere(cluster, "py-admin"), 5, "py-admin joined")
    pid = srv.proc.pid

    # `pomelo list`: the console module's list signal, answered by every process
    code, out = await node_script(cluster, POMELO_BIN, "list", "-P", str(cluster.master_port))
    rows = [line.split() for line in out.splitlines() if line.startswith("py-admin ")]
    assert code == 0 and rows and rows[0][:3] == ["py-admin", "py", str(pid)], out
    assert all(float(x) >= 0 for x in rows[0][3:7]), rows

    servers = (await admin(cluster, "watchServer", {"comd": "servers", "context": "all"}))["msg"]
    assert sorted(servers) == ["master-server-1", "node-1", "node-2", "py-admin"]
    assert servers["py-admin"]["serverType"] == "py" and servers["py-admin"]["pid"] == pid
    assert servers["py-admin"]["port"] == srv.port

    # systemInfo and nodeInfo: the master pulls them from every process each second
    async def pulled():
        return ("py-admin" in await admin(cluster, "systemInfo", {})
                and "py-admin" in await admin(cluster, "nodeInfo", {}))
    await until(pulled, 10, "the master collected systemInfo and nodeInfo of py-admin")
    system = (await admin(cluster, "systemInfo", {}))["py-admin"]
    assert system["hostname"] == socket.gethostname() and system["totalmem"] > 0
    assert 0 <= system["cpu_idle"] <= 100 and len(system["Time"]) == 19
    node_info = (await admin(cluster, "nodeInfo", {}))["py-admin"]
    assert node_info["pid"] == pid and int(node_info["rss"]) > 0
    assert node_info["serverType"] == "py"

    # `pomelo stop py-admin`: the Python process stops gracefully and leaves
    code, out = await node_script(cluster, POMELO_BIN, "stop", "-P", str(cluster.master_port),
                                  "py-admin")
    assert code == 0, out
    assert await loop.run_in_executor(None, lambda: srv.proc.wait(15)) == 0
    await until(everywhere(cluster, "py-admin", present=False), 5, "py-admin left")


class RawMaster:
    """A listener that speaks just enough of the master's side to register a monitor,
    then sends what a test asks it to: the registry's hostile-input peer."""

    def __init__(self):
        self.conns = asyncio.Queue()      # (reader-side queue of messages, writer) per link

    async def start(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _conn(self, reader, writer):
        msgs = asyncio.Queue()
        decoder = mqtt.MqttDecoder()
        await self.conns.put((msgs, writer))
        while data := await reader.read(65536):
            for pkt in decoder.feed(data):
                if pkt[0] == mqtt.CONNECT:
                    writer.write(mqtt.encode_connack())
                elif pkt[0] == mqtt.PINGREQ:
                    writer.write(mqtt.encode_pingresp())
                elif pkt[0] == mqtt.PUBLISH:
                    msg = json.loads(pkt[2])
                    msg = json.loads(msg) if isinstance(msg, str) else msg
                    if pkt[1] == "register":
                        self.send(writer, "register", {"code": 1, "msg": "ok"})
                    elif msg.get("body", {}).get("action") == "subscribe":
                        self.send(writer, "monitor", json.dumps(
                            {"respId": msg["reqId"], "body": {"node-9": {
                                "id": "node-9", "serverType": "node", "host": "127.0.0.1",
                                "port": 1}}}))
                    await msgs.put((pkt[1], msg))

    @staticmethod
    def send(writer, topic, payload):
        writer.write(mqtt.encode_publish(json.dumps(payload).encode(), topic))

    async def close(self):
        self.server.close()


async def test_unexpected_and_malformed_master_messages_are_answered_or_logged(caplog):
    master = await RawMaster().start()
    reg = PomeloMasterRegistry(f"pomelo://127.0.0.1:{master.port}", cluster="default", ttl=3.0,
                               connect_timeout=2.0)
    seen = []
    try:
        await reg.open()
        assert await reg.watch(seen.append) == {"node-9": {
            "id": "node-9", "server_type": "node", "host": "127.0.0.1", "port": 1}}
        msgs, writer = await master.conns.get()
        topic, register = await msgs.get()
        assert topic == "register" and register["type"] == "monitor"
        assert register["serverType"] == "pomelo_rpc_client"
        assert "serverType" not in register["info"]          # kept out of the server list
        await msgs.get()                                   # the subscribe request

        async def ask(req_id, module_id, body):
            master.send(writer, "monitor", json.dumps(
                {"reqId": req_id, "moduleId": module_id, "body": body}))
            topic, resp = await asyncio.wait_for(msgs.get(), 5)
            assert topic == "monitor" and resp["respId"] == req_id
            return resp.get("error"), resp.get("body")

        error, _ = await ask(1, "noSuchModule", {})
        assert "unknown moduleId:noSuchModule" in error
        assert await ask(2, "__monitorwatcher__", {"action": "explode"}) == (0, None)
        assert await ask(3, "__monitorwatcher__", "not an object") == (0, None)
        assert await ask(4, "__monitorwatcher__", {"action": "addServer",
                                                  "server": {"id": "x"}}) == (0, None)
        error, _ = await ask(5, "watchServer", {"comd": "cpu"})
        assert "not supported" in error
        error, _ = await ask(6, "__console__", {"signal": "list"})
        assert error["body"]["pid"] == os.getpid()
        assert await ask(7, "__monitorwatcher__", {"action": "addServer", "server": {
            "id": "node-8", "serverType": "node", "host": "127.0.0.1", "port": 2}}) == (1, None)
        assert sorted(seen[-1]) == ["node-8", "node-9"]
        assert "explode" in caplog.text and "noSuchModule" in caplog.text

        # garbage: the link is closed (logged), then opened again and re-registered
        for garbage in (mqtt.encode_publish(b"\xff{not json", "monitor"), b"\xf0\x00",
                        mqtt.encode_publish(b"[1, 2]", "register")):
            writer.write(garbage)
            msgs, writer = await asyncio.wait_for(master.conns.get(), 5)
            topic, again = await asyncio.wait_for(msgs.get(), 5)
            assert topic == "register" and again["id"] == register["id"]
            await msgs.get()                               # subscribed again
        assert "malformed" in caplog.text
        assert sorted(seen[-1]) == ["node-8", "node-9"]    # kept through the reconnections

        # the watcher's other actions, on the last link
        assert await ask(8, "__monitorwatcher__", {"action": "startOver"}) == (1, None)
        node7 = {"id": "node-7", "serverType": "node", "host": "127.0.0.1", "port": 3}
        assert await ask(9, "__monitorwatcher__", {"action": "replaceServer",
                                                  "servers": {"node-7": node7}}) == (1, None)
        assert seen[-2]["node-8"]["leaving"] and seen[-2]["node-9"]["leaving"]
        assert sorted(seen[-1]) == ["node-7"]
        assert await ask(10, "__monitorwatcher__", {"action": "removeServer",
                                                   "id": "node-7"}) == (1, None)
        assert seen[-2]["node-7"]["leaving"] and seen[-1] == {}
    finally:
        await reg.close()
        await master.close()
