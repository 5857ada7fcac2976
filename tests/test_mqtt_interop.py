"""transport="mqtt" against the real Node pomelo-rpc 1.0.7, both directions, both cores.

The Node peers are tests/node/server.js and tests/node/client.js running the npm
package itself (installed into tests/node/node_modules on first use). Also: the
codec's bytes against Node's own MQTT encoder, and Python <-> Python over mqtt.
"""

import asyncio
import json
import os
import shutil
import socket
import subprocess

import pytest

from conftest import REMOTE
from pomelo_rpc import ConnectionLostError, RemoteError, RpcError, client, core as core_pkg, server
from pomelo_rpc.mqtt_json import json_bytes
from pomelo_rpc.mqtt_mailbox import describe_remote_error, results_value

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "node")
TEST_DIR = os.path.join(REMOTE, "test")

VALUES = ["hello", "", "héllo wörld ✓ 日本語 🎉", 0, 42, -7, 2 ** 40, 3.5, -0.25, True, False,
          None, [], [1, "two", None, [3.5]], {}, {"a": {"b": {"c": [1, {"d": "ü"}]}, "e": None}}]


# Node peers -----------------------------------------------------------------------

@pytest.fixture(scope="session")
def node():
    """Path of ``node``, with tests/node/node_modules holding pomelo-rpc 1.0.7."""
    exe = shutil.which("node")
    if exe is None:
        # in CI (./dev test) a missing Node.js fails the run instead of skipping it
        if os.environ.get("POMELO_RPC_REQUIRE_NODE", "") not in ("", "0"):
            pytest.fail("Node.js is not installed (POMELO_RPC_REQUIRE_NODE is set)")
        pytest.skip("Node.js is not installed: the mqtt interop tests need it")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "pomelo-rpc")):
        npm = shutil.which("npm")
        assert npm is not None, "npm is needed to install pomelo-rpc 1.0.7 for the interop tests"
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"npm install failed:\n{done.stdout}\n{done.stderr}"
    with open(os.path.join(NODE_DIR, "node_modules", "pomelo-rpc", "package.json")) as f:
        assert json.load(f)["version"] == "1.0.7"
    return exe


class NodeServer:
    """A ``node server.js`` process: Node pomelo-rpc's own server on 127.0.0.1."""

    def __init__(self, node, log_path, *flags):
        self.log = open(log_path, "w")
        # stdin is a pipe: the process exits when this one goes away
        self.proc = subprocess.Popen([node, "server.js", *flags], cwd=NODE_DIR,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"node server.js did not start; see {log_path}")
        info = json.loads(line)
        self.port = info["port"]
        self.server_id = info["server_id"]

    def stop(self):
        """Kill the process."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def node_server(node, tmp_path_factory):
    """A Node pomelo-rpc server answering each response at once."""
    srv = NodeServer(node, tmp_path_factory.mktemp("node") / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def node_server_buffered(node, tmp_path_factory):
    """A Node pomelo-rpc server with bufferMsg: responses come as JSON arrays."""
    srv = NodeServer(node, tmp_path_factory.mktemp("node") / "server.log",
                     "--buffer-msg", "--interval", "10", "--server-id", "node-buffered-1")
    yield srv
    srv.stop()


async def node_client(node, port, calls, *flags):
    """Run Node pomelo-rpc's client (client.js) against ``port``; its callback arguments."""
    proc = await asyncio.create_subprocess_exec(
        node, "client.js", "--port", str(port), "--calls", json.dumps(calls), *flags,
        cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = out.decode().strip().splitlines()
    assert lines, f"client.js printed nothing; stderr:\n{err.decode()[-3000:]}"
    report = json.loads(lines[-1])
    assert "error" not in report, report
    return report["results"]


def py_server(core, **opts):
    """A Python mqtt server with tests/remote/test (not started)."""
    return server.create(paths=[{"namespace": "user", "path": TEST_DIR}], transport="mqtt",
                         core=core, context={"server_id": "py-1"}, **opts)


def py_client(core, port, **opts):
    """A Python mqtt client with one server, id 'target', at ``port``."""
    cli = client.create(transport="mqtt", core=core, **opts)
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_DIR}])
    cli.add_servers([{"id": "target", "serverType": "test", "host": "127.0.0.1", "port": port}])
    return cli


def invoke(cli, method, *args):
    """rpc_invoke user.service.<method> on 'target'."""
    return cli.rpc_invoke("target", {"namespace": "user", "serverType": "test",
                                     "service": "service", "method": method, "args": list(args)})


def count_publishes(monkeypatch, core):
    """Record every PUBLISH payload the given core's codec encodes from now on."""
    mq = core_pkg.select(core).mqtt
    sent = []
    encode = mq.encode_publish

    def recording(payload, *args):
        """encode_publish, recording the payload."""
        sent.append(bytes(payload))
        return encode(payload, *args)

    monkeypatch.setattr(mq, "encode_publish", recording)
    return sent


class PublishRelay:
    """A loopback relay to the server at ``port`` recording the payload of every PUBLISH
    a client sends through it (``sent``), read off the wire: whichever code wrote it."""

    def __init__(self, port):
        self.target = port
        self.sent = []
        self.server = None
        self.port = None

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def relay(self, reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        decoder = core_pkg.select("python").mqtt.MqttDecoder()

        async def pipe(src, dst, record):
            try:
                while data := await src.read(65536):
                    if record:
                        self.sent += [p[2] for p in decoder.feed(data) if p[0] == 3]
                    dst.write(data)
            finally:
                dst.close()
        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False),
                             return_exceptions=True)


# the codec's bytes are Node's bytes -------------------------------------------------

def test_packets_are_byte_identical_to_node_pomelo_rpc(node, core):
    mq = core_pkg.select(core).mqtt
    msg = {"namespace": "user", "serverType": "test", "service": "service", "method": "echo",
           "args": ["héllo ✓", 1, 2.5, None, {"a": [True]}]}
    script = r"""
      var gen = require('mqtt-packet').generate;
      var msg = JSON.parse(process.argv[1]);
      var hex = function(p) { return gen(p).toString('hex'); };
      var pub = function(obj) { return {cmd: 'publish', topic: 'rpc', payload: JSON.stringify(obj)}; };
      console.log(JSON.stringify({
        connect: hex({cmd: 'connect', clientId: 'MQTT_RPC_1700000000000'}),
        request: hex(pub({id: 0, msg: msg})),
        response: hex(pub({id: 7, resp: [null, msg]})),
        batch: hex(pub([{id: 1, resp: [null, 2]}])),
        big: hex({cmd: 'publish', topic: 'rpc', payload: 'x'.repeat(20000)}),
        pingreq: hex({cmd: 'pingreq'}), pingresp: hex({cmd: 'pingresp'}),
        disconnect: hex({cmd: 'disconnect'})
      }));
    """
    # mqtt-packet is the encoder Node pomelo-rpc 1.0.7 uses (through mqtt-connection)
    done = subprocess.run([node, "-e", script, json.dumps(msg)], capture_output=True, text=True,
                          timeout=30, cwd=os.path.join(NODE_DIR, "node_modules", "mqtt-connection"))
    assert done.returncode == 0, done.stderr
    want = {k: bytes.fromhex(v) for k, v in json.loads(done.stdout).items()}
    assert mq.encode_connect("MQTT_RPC_1700000000000") == want["connect"]
    assert mq.encode_publish(json_bytes({"id": 0, "msg": msg})) == want["request"]
    assert mq.encode_publish(json_bytes({"id": 7, "resp": [None, msg]})) == want["response"]
    assert mq.encode_publish(json_bytes([{"id": 1, "resp": [None, 2]}])) == want["batch"]
    assert mq.encode_publish(b"x" * 20000) == want["big"]
    assert mq.PINGREQ_PACKET == want["pingreq"]
    assert mq.PINGRESP_PACKET == want["pingresp"]
    assert mq.DISCONNECT_PACKET == want["disconnect"]


# Python server <- Node client --------------------------------------------------------

def node_calls():
    """The calls a Node client makes to a Python server (see check_node_results)."""
    calls = [{"method": "echo", "args": [v]} for v in VALUES]
    calls += [{"method": "add", "args": [2, 3]},
              {"method": "slow_echo", "args": ["later", 0.01]},
              {"method": "variadic", "args": [1, 2, 3]},
              {"method": "fail", "args": ["boom ü"]},
              {"method": "async_fail", "args": ["gone"]},
              {"method": "nope", "args": []},
              {"method": "unserializable", "args": []}]
    # 100 concurrent calls, half of them answered out of order
    calls += [{"method": "slow_echo", "args": [{"i": i}, 0.02 * (i % 2)]} for i in range(100)]
    return calls


def check_node_results(results):
    """Check the Node callback arguments of node_calls()."""
    n = len(VALUES)
    assert len(results) == n + 7 + 100
    # the quirk Python sees: the Node callback gets (null, v) for a returned v
    assert results[:n] == [[None, v] for v in VALUES]
    assert results[n:n + 3] == [[None, 5], [None, "later"], [None, 3]]
    fail, async_fail, nope, unser = results[n + 3:n + 7]
    assert len(fail) == 1 and fail[0]["msg"] == "boom ü"
    assert fail[0]["stack"].startswith("ValueError: boom ü\n")
    assert async_fail[0]["msg"] == "'gone'" and async_fail[0]["stack"].startswith("KeyError")
    assert nope[0]["msg"] == "unknown method user.service.nope"
    assert nope[0]["stack"].startswith("DispatchError: ")
    assert "cannot be serialized" in unser[0]["msg"]
    assert results[n + 7:] == [[None, {"i": i}] for i in range(100)]


@pytest.mark.parametrize("node_buffer", [False, True], ids=["node-unbuffered", "node-bufferMsg"])
async def test_python_server_serves_node_client(node, core, node_buffer):
    flags = ["--buffer-msg", "--interval", "10"] if node_buffer else []
    async with py_server(core) as gw:
        results = await node_client(node, gw.port, node_calls(), *flags)
        assert gw.acceptor.accepted == 1
    check_node_results(results)


async def test_python_server_buffer_msg_sends_arrays(node, core, monkeypatch):
    sent = count_publishes(monkeypatch, core)
    async with py_server(core, buffer_msg=True, interval=0.02) as gw:
        results = await node_client(node, gw.port, node_calls())
    check_node_results(results)
    batches = [json.loads(p) for p in sent]
    assert all(isinstance(b, list) for b in batches)
    assert sum(len(b) for b in batches) == len(results)
    assert len(batches) < len(results) / 4, "responses were not batched"


async def test_python_server_answers_node_keepalive(node, core):
    async with py_server(core) as gw:
        run = asyncio.ensure_future(node_client(
            node, gw.port, [{"method": "echo", "args": ["after"]}],
            "--keepalive", "100", "--pause", "700"))
        while not gw.acceptor.connections and not run.done():
            await asyncio.sleep(0.01)
        conn = next(iter(gw.acceptor.connections))
        assert await run == [[None, "after"]]
        # Node's mailbox pings every 100 ms and drops the connection after 200 ms
        # without a PINGRESP: one connection throughout means every ping was answered
        assert gw.acceptor.accepted == 1
        assert conn.pings >= 4
        assert conn.client_id.startswith("MQTT_RPC_")


# Python client -> Node server --------------------------------------------------------

async def call_node_server(cli, server_id, batched=False):
    """Make the standard calls to a Node server and check what Python gets."""
    n = len(VALUES)
    calls = [invoke(cli, "echo", v) for v in VALUES]
    calls += [invoke(cli, "add", 2, 3), invoke(cli, "multi", 1, "b", None),
              invoke(cli, "nothing"), invoke(cli, "whoami"),
              invoke(cli, "slowEcho", "later", 10)]
    calls += [invoke(cli, "slowEcho", {"i": i}, 20 * (i % 2)) for i in range(100)]
    # "throws" is left out of batched requests: Node's acceptor drops the rest of a batch
    # after a method that throws, and answers the thrower without an id
    failing = ("fail", "failType", "nope", "nope" if batched else "throws")
    calls += [invoke(cli, name, "boom ü") for name in failing]
    out = await asyncio.gather(*calls, return_exceptions=True)
    assert out[:n] == VALUES
    assert out[n:n + 5] == [5, [1, "b", None], None, server_id, "later"]
    assert out[n + 5:n + 105] == [{"i": i} for i in range(100)]
    fail, fail_type, nope, throws = out[n + 105:]
    for exc in (fail, fail_type, throws, nope):
        assert isinstance(exc, RemoteError), exc
        assert exc.server_id == "target"
    assert (fail.message, fail.remote_type) == ("boom ü", "Error")
    assert fail.remote_stack.startswith("Error: boom ü\n    at Service.fail")
    assert (fail_type.message, fail_type.remote_type) == ("boom ü", "TypeError")
    if not batched:
        assert (throws.message, throws.remote_type) == ("boom ü", "Error")
    assert (nope.message, nope.remote_type) == ("no such method:nope", "Error")


@pytest.mark.parametrize("py_buffer", [False, True], ids=["unbuffered", "buffer_msg"])
async def test_python_client_calls_node_server(node_server, core, py_buffer):
    async with PublishRelay(node_server.port) as relay:
        sent = relay.sent
        cli = py_client(core, relay.port, buffer_msg=py_buffer, interval=0.01)
        async with cli:
            await call_node_server(cli, node_server.server_id, batched=py_buffer)
            # the proxies generated from the Python services reach the Node ones too
            assert await cli.proxies.user.test.service.echo(None, {"via": "proxy"}) == {
                "via": "proxy"}
    first = json.loads(sent[0])
    if py_buffer:
        assert isinstance(first, list) and len(sent) < 20, "requests were not batched"
        first = first[0]
    # the call's budget in ms (the 10 s default timeout, less the time to connect): an
    # extra field, which Node pomelo-rpc ignores (every answer above is right)
    assert 9000 < first.pop("budget") <= 10000
    # request ids start at 0; the message carries pomelo's camelCase serverType
    assert first == {"id": 0, "msg": {"namespace": "user", "serverType": "test",
                                      "service": "service", "method": "echo",
                                      "args": [VALUES[0]]}}


async def test_node_server_ignores_the_budget_field(node_server, core):
    """A call with a short timeout carries a small ``budget``; a call without one
    carries none; Node's server answers both (it ignores the field, and has no
    deadlines of its own: a call past its budget still runs there)."""
    async with PublishRelay(node_server.port) as relay:
        sent = relay.sent
        async with py_client(core, relay.port, timeout=0) as cli:
            assert await invoke(cli, "echo", "none") == "none"
            short = cli.rpc_invoke("target", {"namespace": "user", "serverType": "test",
                                              "service": "service", "method": "slowEcho",
                                              "args": ["short", 10]}, timeout=0.5)
            assert await short == "short"
    without, with_budget = (json.loads(p) for p in sent)
    assert "budget" not in without
    assert 0 < with_budget["budget"] <= 500 and with_budget["msg"]["method"] == "slowEcho"


async def test_python_client_reads_node_batched_responses(node_server_buffered, core):
    async with py_client(core, node_server_buffered.port) as cli:
        await call_node_server(cli, node_server_buffered.server_id)


async def test_python_client_keepalive_with_node_server(node_server, core):
    async with py_client(core, node_server.port, keepalive=0.1) as cli:
        assert await invoke(cli, "echo", "first") == "first"
        mailbox = cli._station.mailboxes["target"]
        seen = mailbox.protocol.last_recv
        await asyncio.sleep(0.7)          # 7 keepalive periods without a call
        assert cli._station.mailboxes.get("target") is mailbox
        assert mailbox.state == "open"
        assert mailbox.protocol.last_recv > seen   # only PINGRESPs arrived meanwhile
        assert await invoke(cli, "echo", "after idle") == "after idle"


# Python <-> Python ---------------------------------------------------------------------

@pytest.mark.parametrize("buffered", [False, True], ids=["unbuffered", "buffer_msg"])
async def test_python_to_python_over_mqtt(core, buffered):
    opts = dict(buffer_msg=buffered, interval=0.005)
    async with py_server(core, **opts) as gw, py_client(core, gw.port, keepalive=0.05,
                                                        **opts) as cli:
        svc = cli.proxies.user.test.service
        assert await asyncio.gather(*(svc.echo(None, v) for v in VALUES)) == VALUES
        assert await svc.add(None, 2, 3) == 5
        assert await svc.slow_echo(None, "later", 0.01) == "later"
        assert await svc.variadic(None, 1, 2, 3) == 3
        with pytest.raises(RemoteError) as info:
            await svc.fail(None, "boom ü")
        assert (info.value.message, info.value.remote_type) == ("boom ü", "ValueError")
        assert info.value.remote_stack.startswith("ValueError: boom ü\n")
        with pytest.raises(RemoteError) as info:
            await svc.echo(None, "a", "b")
        assert info.value.remote_type == "DispatchError"
        with pytest.raises(RemoteError) as info:
            await svc.unserializable(None)
        assert info.value.remote_type == "TypeError"
        with pytest.raises(TypeError):
            await svc.echo(None, b"bytes are not JSON")
        out = await asyncio.gather(*(svc.slow_echo(None, i, 0.01 * (i % 3)) for i in range(100)))
        assert out == list(range(100))
        await asyncio.sleep(0.3)          # idle for 6 keepalive periods
        assert await svc.echo(None, "after idle") == "after idle"
        assert gw.acceptor.accepted == 1
        [conn] = gw.acceptor.connections
        assert conn.pings >= 3
        # no Nagle stalls on either side
        assert nodelay(conn._transport)
        assert nodelay(cli._station.mailboxes["target"]._transport)


def nodelay(transport):
    """TCP_NODELAY of a transport's socket."""
    return transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_python_to_python_pkg_size(core):
    async with py_server(core, pkg_size=1000) as gw:
        async with py_client(core, gw.port, pkg_size=1000) as cli:
            with pytest.raises(RpcError, match="exceeds pkg_size"):
                await invoke(cli, "echo", "x" * 1000)      # refused before sending
            assert await invoke(cli, "echo", "x" * 800) == "x" * 800
        async with py_client(core, gw.port) as cli:
            with pytest.raises(ConnectionLostError):      # the server drops the connection
                await invoke(cli, "echo", "x" * 1000)


# tracing=True next to Node peers -----------------------------------------------------------

async def test_tracing_with_node_peers(node, node_server, core, monkeypatch):
    """A traced Python client sends Node's server an extra ``traceparent`` field, which
    Node pomelo-rpc ignores (its answers are right); a Node client sends none, and a
    traced Python server then starts a trace of its own."""
    from otel_support import hex_id, new_provider
    cprov, cexp = new_provider()
    sent = count_publishes(monkeypatch, core)
    async with py_client(core, node_server.port, tracing=cprov) as cli:
        assert await invoke(cli, "echo", {"traced": [1, "ü"]}) == {"traced": [1, "ü"]}
        with pytest.raises(RemoteError, match="boom"):
            await invoke(cli, "fail", "boom")
    echo, fail = cexp.get_finished_spans()
    first = json.loads(sent[0])
    ctx = echo.context
    assert first["traceparent"] == (f"00-{hex_id(ctx.trace_id, 32)}-{hex_id(ctx.span_id, 16)}"
                                    f"-{int(ctx.trace_flags):02x}")
    assert first["id"] == 0 and first["msg"]["method"] == "echo"
    assert fail.status.status_code.name == "ERROR"
    sprov, sexp = new_provider()
    async with py_server(core, tracing=sprov) as gw:
        assert await node_client(node, gw.port, [{"method": "echo", "args": ["hi"]}]) == [
            [None, "hi"]]
    [span] = sexp.get_finished_spans()
    assert span.name == "user.service/echo" and span.parent is None


# response decoding ------------------------------------------------------------------------

def test_describe_remote_error_forms():
    assert describe_remote_error({"stack": "Error: boom\n    at x"}) == (
        "Error", "boom", "Error: boom\n    at x")
    assert describe_remote_error({"stack": "RangeError: a: b\n at"})[:2] == ("RangeError", "a: b")
    assert describe_remote_error({"stack": "Error\n    at x"})[:2] == ("Error", "")
    assert describe_remote_error({"msg": "m", "stack": "TypeError: other"})[:2] == (
        "TypeError", "m")
    assert describe_remote_error({"msg": "only"}) == ("Error", "only", None)
    assert describe_remote_error({"code": 500}) == ("Error", '{"code":500}', None)
    assert describe_remote_error("plain string") == ("Error", "plain string", None)
    assert describe_remote_error(7) == ("Error", "7", None)
    assert results_value([]) is None
    assert results_value([3]) == 3
    assert results_value([1, 2]) == [1, 2]
