"""pinus 1.7.4 clusters: the mqtt and tcp transports against pinus-rpc, both ways, and
``registry="pinus://..."`` with the JS stubs pinus builds ``app.rpc`` from.

The clusters are tests/pinus/pinus_app (pinus@1.7.4 from npm, plain JS): a master and a
Node server of type "node", started with ``node app.js`` on free loopback ports, once
with pinus's default rpc (mqtt) and once with its tcp transport
(``PINUS_RPC_TRANSPORT=tcp``: ``createTcpMailBox`` / ``createTcpAcceptor``), both for the
module. The Node server answers on a small HTTP hook (its server list, ``app.rpc``
calls and notifies, what it received). Python servers are of type "py"
(tests/remote/pinus), Python watch-only clients of type "pyclient".

One test waits 35 s on purpose (pinus's timers are 30 s): the others are quick.
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import REMOTE, ROOT
from pomelo_rpc import RemoteError, client, server
from pomelo_rpc.core import select as select_core
from pomelo_rpc.registry.pomelo import MasterRefusedError
from test_pomelo_master import STRICT, _http_sync, free_port, http, until

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "pinus")
APP_DIR = os.path.join(NODE_DIR, "pinus_app")
PY_REMOTE = os.path.join(REMOTE, "pinus")
TOKENS = {"node": "node-secret", "py": "py-secret", "pyclient": "pyclient-secret"}
TRANSPORTS = {"mqtt": "mqtt", "pinus-tcp": "tcp"}    # ours -> PINUS_RPC_TRANSPORT
#: the tcp cluster's mailboxes ping every 0.3 s (pinus: 25 s) and allow 1 s for the pong
TCP_ENV = {"PINUS_TCP_PING": "300", "PINUS_TCP_PONG": "1000"}


def node_exe():
    """``node``, with pinus 1.7.4 installed in tests/pinus/node_modules (npm ci if not)."""
    exe = shutil.which("node")
    if exe is None:
        (pytest.fail if STRICT else pytest.skip)("Node.js is not installed: the pinus tests "
                                                 "need it")
    pkg = os.path.join(NODE_DIR, "node_modules", "pinus", "package.json")
    if not os.path.exists(pkg):
        npm = shutil.which("npm")
        if npm is None:
            (pytest.fail if STRICT else pytest.skip)("npm is needed to install pinus 1.7.4")
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    with open(pkg) as f:
        assert json.load(f)["version"] == "1.7.4"
    return exe


class PinusCluster:
    """tests/pinus/pinus_app copied to ``base``, with config on free ports, running the
    rpc ``transport`` of ours ("mqtt" or "pinus-tcp")."""

    def __init__(self, node, base, transport):
        self.node = node
        self.base = base
        self.transport = transport
        shutil.copytree(APP_DIR, base, dirs_exist_ok=True)
        self.master_port = free_port()
        self.port, self.hook = free_port(), free_port()
        self._write("master.json", {"development": {
            "id": "master-server-1", "host": "127.0.0.1", "port": self.master_port}})
        self._write("servers.json", {"development": {"node": [
            {"id": "node-1", "host": "127.0.0.1", "port": self.port, "hookPort": self.hook}]}})
        self._write("adminServer.json", [{"type": t, "token": k} for t, k in TOKENS.items()])
        self.log_path = os.path.join(base, "pinus.log")
        self.log = open(self.log_path, "ab")
        env = dict(os.environ, NODE_PATH=os.path.join(NODE_DIR, "node_modules"),
                   PINUS_RPC_TRANSPORT=TRANSPORTS[transport])
        if transport == "pinus-tcp":
            env.update(TCP_ENV)
        # the master reads config/adminServer from its working directory (pinus-admin)
        self.master = subprocess.Popen([node, "app.js"], cwd=base, env=env, stdout=self.log,
                                       stderr=self.log, stdin=subprocess.DEVNULL,
                                       start_new_session=True)

    def _write(self, name, obj):
        with open(os.path.join(self.base, "config", name), "w") as f:
            json.dump(obj, f)

    def url(self, token_type="py", **params):
        """``pinus://`` URL of the master with the token of ``token_type``."""
        query = "&".join([f"token={TOKENS[token_type]}"] + [f"{k}={v}" for k, v in params.items()])
        return f"pinus://127.0.0.1:{self.master_port}?{query}"

    def wait_started(self, limit=30.0):
        deadline = time.monotonic() + limit
        while True:
            try:
                if list(_http_sync(self.hook, "/servers")) == ["node-1"]:
                    return
            except OSError:
                pass
            assert self.master.poll() is None, f"the pinus master exited:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"pinus did not start:\n{self.log_tail()}"
            time.sleep(0.05)

    def kill(self):
        try:
            os.killpg(self.master.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.master.wait(10)
        self.log.close()

    def log_tail(self):
        with open(self.log_path, "rb") as f:
            return f.read()[-3000:].decode(errors="replace")


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    """Both pinus clusters (mqtt, tcp), started side by side."""
    node = node_exe()
    started = {}
    try:
        for transport in TRANSPORTS:
            started[transport] = PinusCluster(
                node, str(tmp_path_factory.mktemp(f"pinus_{transport}")), transport)
        for c in started.values():
            c.wait_started()
        yield started
    finally:
        for c in started.values():
            c.kill()


@pytest.fixture(params=list(TRANSPORTS))
def cluster(request, clusters):
    """One pinus cluster, per rpc transport."""
    return clusters[request.param]


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    """The JS stubs of tests/remote/pinus, written by ``python -m pomelo_rpc stubs``."""
    out = str(tmp_path_factory.mktemp("stubs"))
    done = subprocess.run([sys.executable, "-m", "pomelo_rpc", "stubs", "--remote",
                           f"user={PY_REMOTE}", "--out", out, "--server-type", "py"],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sorted(os.path.basename(p) for p in report["written"]) == ["echoRemote.js",
                                                                      "errors.js"]
    assert report["remoterPaths"] == [{"namespace": "user", "serverType": "py",
                                       "path": os.path.join(out, "user")}]
    return out


def py_server(cluster, stubs, sid, core="cython", notes=None, **opts):
    """A Python server of type "py" joining ``cluster`` (not started)."""
    return server.create(paths=[{"namespace": "user", "path": PY_REMOTE}],
                         transport=cluster.transport, core=core,
                         context={"server_id": sid, "notes": [] if notes is None else notes},
                         server_info={"id": sid, "server_type": "py"},
                         registry=cluster.url("py", stubs=stubs), **opts)


def py_client(cluster, core="cython", **opts):
    """A watch-only Python client of the cluster, on its transport."""
    return client.create(transport=cluster.transport, core=core, registry=cluster.url(
        "pyclient", client_type="pyclient"), **opts)


async def node_rpc(cluster, method, *args, server_id=None, uid=None, notify=False,
                   service="echoRemote", type_="py"):
    """``app.rpc.<type>.<service>.<method>`` on the Node server: ``{error, result}``."""
    return await http(cluster.hook, "/rpc", {
        "type": type_, "service": service, "method": method, "args": list(args),
        "serverId": server_id, "uid": uid, "notify": notify})


def known(cluster, sid, present=True):
    """A condition: the Node server lists ``sid`` (or does not) and, when it does, has
    built ``app.rpc.py`` from its stubs."""
    async def cond():
        if (sid in await http(cluster.hook, "/servers")) != present:
            return False
        return not present or "py" in (await http(cluster.hook, "/health"))["rpc"]
    return cond


async def _value(value):
    return value


RELAY = {"namespace": "user", "serverType": "node", "service": "relayRemote"}


# ---------------------------------------------------------------------------------------

async def test_stubs_are_what_pinus_loads_and_match_the_services(stubs):
    """pinus-loader loads the stub folder into remoters whose method lists are the
    Python services'."""
    script = ("require('reflect-metadata');"
              "const L = require('pinus-loader');"
              "const {listEs6ClassMethods} = require('pinus-rpc');"
              "const m = L.load(process.argv[1], null, false, false, 'pinus:remoter');"
              "const out = {};"
              "for (const k in m) out[k] = listEs6ClassMethods(m[k]).sort();"
              "console.log(JSON.stringify(out));")
    done = subprocess.run([node_exe(), "-e", script, os.path.join(stubs, "user")],
                          capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, NODE_PATH=os.path.join(NODE_DIR, "node_modules")))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"echoRemote": ["echo", "note", "nothing"],
                                       "errors": ["coded"]}


async def test_python_server_joins_and_node_calls_it_through_app_rpc(cluster, stubs, core):
    gw = py_server(cluster, stubs, "py-join", core)
    await gw.start()
    try:
        took = await until(known(cluster, "py-join"), 5, "node-1 lists py-join")
        print(f"{cluster.transport}: py-join in node-1's list {took * 1000:.0f} ms after start()")
        info = (await http(cluster.hook, "/servers"))["py-join"]
        assert info["serverType"] == "py" and info["port"] == gw.port
        assert info["pid"] == os.getpid()
        assert info["remoterPaths"] == [{"namespace": "user", "serverType": "py",
                                         "path": os.path.join(stubs, "user")}]
        assert (await http(cluster.hook, "/health"))["rpc"]["py"] == ["echoRemote", "errors"]
        # app.rpc.py.echoRemote.echo.to("py-join")(...), and routed (pinus's crc32 of uid)
        assert await node_rpc(cluster, "echo", {"n": 1, "s": "é"}, server_id="py-join") == {
            "error": None, "result": {"echo": {"n": 1, "s": "é"}, "by": "py-join"}}
        assert (await node_rpc(cluster, "echo", "routed", uid="u1"))["result"] == {
            "echo": "routed", "by": "py-join"}
        # a method returning None: pinus resolves with resp[1], null
        assert await node_rpc(cluster, "nothing", server_id="py-join") == {
            "error": None, "result": None}
        # app.rpcInvoke gets the callback's arguments after err
        answer = await http(cluster.hook, "/invoke", {"serverId": "py-join", "msg": {
            "namespace": "user", "serverType": "py", "service": "echoRemote",
            "method": "echo", "args": [3]}})
        assert answer == {"error": None, "result": {"echo": 3, "by": "py-join"}}
    finally:
        await gw.stop()
    took = await until(known(cluster, "py-join", present=False), 5, "py-join left")
    print(f"{cluster.transport}: graceful stop: gone from node-1 {took * 1000:.0f} ms later")


async def test_errors_both_ways(cluster, stubs, core):
    gw = py_server(cluster, stubs, "py-err", core)
    await gw.start()
    cli = py_client(cluster, core)
    await cli.start()
    try:
        await until(known(cluster, "py-err"), 5, "node-1 lists py-err")
        # Python -> pinus: the error's message, and its code for err.code
        answer = await node_rpc(cluster, "coded", 42, "boom", server_id="py-err",
                                service="errors")
        assert answer["result"] is None
        error = answer["error"]
        assert error["message"] == "boom" and error["code"] == 42
        assert error["keys"] == ["code", "message", "msg", "stack"]
        assert error["stack"] == "CodedError: boom"
        answer = await node_rpc(cluster, "echo", 1, 2, 3, server_id="py-err")
        assert "takes 1 argument(s), got 3" in answer["error"]["message"]
        # pinus -> Python: RemoteError with the fields pinus sent ({code, stack})
        with pytest.raises(RemoteError) as info:
            await cli.rpc_invoke("node-1", dict(RELAY, method="fail", args=[42, "bang"]))
        err = info.value
        assert (err.message, err.remote_type, err.code) == ("bang", "Error", 42)
        assert err.fields == {"code": 42} and err.remote_stack.startswith("Error: bang\n")
        with pytest.raises(RemoteError) as info:
            await cli.rpc_invoke("node-1", dict(RELAY, method="fail", args=[None, "plain"]))
        assert info.value.code is None and info.value.fields == {}
        with pytest.raises(RemoteError, match="no such method"):
            await cli.rpc_invoke("node-1", dict(RELAY, method="nope", args=[]))
    finally:
        await cli.stop()
        await gw.stop()


async def test_python_client_follows_the_cluster_and_round_trips(cluster, stubs, core):
    gw = py_server(cluster, stubs, "py-rt", core)
    await gw.start()
    cli = py_client(cluster, core)
    await cli.start()
    try:
        assert cli.server_ids("node") == ["node-1"]
        assert cli.server_info("node-1")["port"] == cluster.port
        assert cli.server_ids("py") == ["py-rt"]
        await until(known(cluster, "py-rt"), 5, "node-1 lists py-rt")
        assert await cli.rpc_invoke("node-1", dict(RELAY, method="echo", args=["hi"])) == "hi"
        # Python -> Node (relayRemote.relay) -> Python (echoRemote.echo on py-rt) -> back
        answer = await cli.rpc_invoke("node-1", dict(RELAY, method="relay", args=["py-rt", 5]))
        assert answer == {"via": "node-1", "answer": {"echo": 5, "by": "py-rt"}}
        who = await cli.rpc_invoke("node-1", dict(RELAY, method="whoami", args=[]))
        assert who == {"id": "node-1", "servers": {"node": ["node-1"], "py": ["py-rt"]}}
        many = await asyncio.gather(*(cli.rpc_invoke("node-1", dict(RELAY, method="echo",
                                                                     args=[i]))
                                      for i in range(200)))
        assert many == list(range(200))
    finally:
        await cli.stop()
        await gw.stop()


async def test_notify_both_ways(cluster, stubs, core):
    notes = []
    gw = py_server(cluster, stubs, "py-note", core, notes)
    await gw.start()
    cli = py_client(cluster, core)
    await cli.start()
    try:
        await until(known(cluster, "py-note"), 5, "node-1 lists py-note")
        # pinus -> Python: .to("py-note", true)(...) (mqtt: a request with an id, answered;
        # tcp: id 0, not answered)
        for i in range(3):
            assert await node_rpc(cluster, "note", f"n{i}", server_id="py-note",
                                  notify=True) == {"error": None, "result": None}
        await until(lambda: _value(notes == ["n0", "n1", "n2"]), 5, "the notes")
        # Python -> pinus
        await cli.rpc_notify("node-1", dict(RELAY, method="note", args=[{"from": core}]))
        await until(lambda: _async_in(cluster, {"from": core}), 5, "node-1 noted it")
        assert await cli.rpc_invoke("node-1", dict(RELAY, method="echo", args=[1])) == 1
    finally:
        await cli.stop()
        await gw.stop()


async def _async_in(cluster, note):
    return note in await http(cluster.hook, "/notes")


async def test_sigkill_removes_the_python_server(cluster, stubs, aspawn, core):
    cli = py_client(cluster)
    await cli.start()
    try:
        srv = await aspawn("py-killed", "py", {"user": PY_REMOTE}, core=core,
                           transport=cluster.transport,
                           args=["--registry", cluster.url("py", stubs=stubs)])
        await until(known(cluster, "py-killed"), 5, "py-killed joined")
        assert (await node_rpc(cluster, "echo", 7, server_id="py-killed"))["result"] == {
            "echo": 7, "by": "py-killed"}
        await until(lambda: _value("py-killed" in cli.server_ids("py")), 2, "client sees it")
        await srv.akill()
        took = await until(known(cluster, "py-killed", present=False), 5,
                           "py-killed dropped by node-1")
        print(f"{cluster.transport}: SIGKILL: gone from node-1 {took * 1000:.0f} ms later")
        await until(lambda: _value("py-killed" not in cli.server_ids("py")), 2,
                    "py-killed dropped by the Python client")
    finally:
        await cli.stop()


async def test_wrong_token_is_a_clear_error(clusters):
    cluster = clusters["mqtt"]
    gw = server.create(paths=[{"namespace": "user", "path": PY_REMOTE}], transport="mqtt",
                       server_info={"id": "py-bad", "server_type": "py"},
                       registry=cluster.url("node"), registry_connect_timeout=2.0)
    with pytest.raises(MasterRefusedError) as err:
        await gw.start()
    assert "pinus master" in str(err.value) and "config/adminServer" in str(err.value)
    assert "working directory" in str(err.value)
    assert "py-bad" not in await http(cluster.hook, "/servers")


async def test_node_tcp_pings_are_answered(clusters, stubs, core):
    """pinus's tcp mailbox pings (every 0.3 s in this cluster) and closes a connection
    whose pong does not come within 1 s: ours answers, so Node keeps one connection."""
    cluster = clusters["pinus-tcp"]
    gw = py_server(cluster, stubs, "py-ping", core)
    await gw.start()
    try:
        await until(known(cluster, "py-ping"), 5, "node-1 lists py-ping")
        assert (await node_rpc(cluster, "echo", 1, server_id="py-ping"))["result"]["echo"] == 1
        [conn] = gw.acceptor.connections
        await until(lambda: _value(conn.pings >= 6), 5, "Node's pings")
        assert (await node_rpc(cluster, "echo", 2, server_id="py-ping"))["result"]["echo"] == 2
        assert gw.acceptor.accepted == 1 and list(gw.acceptor.connections) == [conn]
    finally:
        await gw.stop()


def _node_composer(frames):
    """pinus-rpc's composer (lib/util/composer) composing ``[(type, text)]``, hex."""
    script = ("const {Composer} = require('pinus-rpc/dist/lib/util/composer');"
              "const c = new Composer({});"
              "const spec = JSON.parse(require('fs').readFileSync(0, 'utf-8'));"
              "const out = spec.map(([t, s]) => "
              "(s === null ? c.compose(t) : c.compose(t, s)).toString('hex'));"
              "console.log(JSON.stringify(out));")
    done = subprocess.run([node_exe(), "-e", script], input=json.dumps(frames),
                          capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, NODE_PATH=os.path.join(NODE_DIR, "node_modules")))
    assert done.returncode == 0, done.stderr
    return [bytes.fromhex(h) for h in json.loads(done.stdout)]


def test_frames_are_byte_identical_to_pinus_rpcs_composer():
    texts = ["{}", "é" * 63, "x" * 126, "x" * 127, "x" * 300, "y" * 16383, "z" * 16384,
             "w" * 2_100_000]
    frames = [(1, None), (2, None)] + [(t, s) for t in (0, 3) for s in texts]
    node = _node_composer(frames)
    for name in ("cython", "python"):
        try:
            pt = select_core(name).pinus_tcp
        except ImportError:
            continue
        ours = [pt.encode(t, b"" if s is None else s.encode()) for t, s in frames]
        assert ours == node, name
        decoded = pt.PinusDecoder(1 << 30).feed(b"".join(node))
        assert decoded == [(t, b"" if s is None else s.encode()) for t, s in frames]


async def test_pinus_stays_healthy_35_s_after_notifies_and_idles(clusters, stubs):
    """The one slow test: pinus's timers are 30 s. A notify from pinus (mqtt: it holds an
    id and throws `cb is not a function` if unanswered after 30 s; tcp: id 0, never
    answered) leaves the Node process healthy; pinus's mqtt mailbox pings every 10 s and
    is answered; a Python pinus-tcp client connected and idle for 35 s keeps its
    connection to pinus's tcp acceptor, which closes a connection silent for a 30 s tick
    (ours pings every 25 s)."""
    notes = {t: [] for t in clusters}
    servers = {t: py_server(c, stubs, f"py-35-{TRANSPORTS[t]}", notes=notes[t])
               for t, c in clusters.items()}
    for gw in servers.values():
        await gw.start()
    tcp = clusters["pinus-tcp"]
    cli = client.create(transport="pinus-tcp")
    cli.add_servers([{"id": "node-1", "server_type": "node", "port": tcp.port}])
    await cli.start()
    try:
        for t, c in clusters.items():
            sid = f"py-35-{TRANSPORTS[t]}"
            await until(known(c, sid), 5, f"node-1 lists {sid}")
            assert (await node_rpc(c, "note", "35 s", server_id=sid, notify=True))["error"] is None
        await until(lambda: _value(all(n == ["35 s"] for n in notes.values())), 5, "noted")
        # connected, nothing sent: pinus's first 30 s tick sees only what the client sends
        mailbox = cli._station.mailbox("node-1")
        await mailbox.connect()
        transport = mailbox._transport
        await asyncio.sleep(35)        # the condition here is time itself: pinus's 30 s timers
        for t, c in clusters.items():
            assert c.master.poll() is None, c.log_tail()
            health = await http(c.hook, "/health")
            assert health["uncaught"] == [], health["uncaught"]
            assert "cb is not a function" not in c.log_tail()
        [conn] = servers["mqtt"].acceptor.connections
        assert conn.pings >= 3             # pinus's mqtt mailbox: a PINGREQ every 10 s
        assert mailbox.state == "open", mailbox.close_reason     # pinus did not close it
        assert cli._station.mailboxes.get("node-1") is mailbox
        assert mailbox._transport is transport
        assert await cli.rpc_invoke("node-1", dict(RELAY, method="echo", args=["after"])) == \
            "after"
    finally:
        await cli.stop()
        for gw in servers.values():
            await gw.stop()
