"""Real membership engines for the registry tests: a servers.json file, redis-server and
etcd, each on free loopback ports in a temporary folder, stopped and restarted at will.

``stop()`` makes the engine unreachable (redis/etcd: SIGKILL; file: garbage that no
reader can parse), ``start()`` brings it back empty (a new process, a new data folder;
file: ``{}``). ``put_garbage`` writes malformed records where the backend reads its
cluster. A missing engine or client library skips its tests, or fails them when
POMELO_RPC_REQUIRE_ENGINES=1 (or POMELO_RPC_REQUIRE_CYTHON=1, both set by ./dev test).
"""

import asyncio
import base64
import importlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

REQUIRED = any(os.environ.get(v, "") not in ("", "0")
               for v in ("POMELO_RPC_REQUIRE_ENGINES", "POMELO_RPC_REQUIRE_CYTHON"))


def unavailable(why):
    """Skip the test, or fail it when engines are required (CI)."""
    if REQUIRED:
        pytest.fail(f"{why} (engines are required here: ./dev test installs them)")
    pytest.skip(why)


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout, what):
    """Poll ``check()`` (blocking; call from a thread or a sync fixture) until true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready within {timeout} s")


class Engine:
    """Base: a running engine with ``url``; ``astop``/``astart`` for async tests."""

    name = "?"
    program = package = None      # the engine's executable, and its Debian package
    library = None                # the Python client the backend needs, and its extra

    def __init__(self):
        if self.program and shutil.which(self.program) is None:
            unavailable(f"{self.program} is not installed (Debian package {self.package})")
        if self.library:
            try:
                importlib.import_module(self.library)
            except ImportError:
                unavailable(f"{self.library} is not installed "
                            f"(pip install 'pomelo-rpc[{self.name}]')")
        self.dir = tempfile.mkdtemp(prefix=f"pomelo-{self.name}-")

    async def astop(self):
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    async def astart(self):
        await asyncio.get_running_loop().run_in_executor(None, self.start)

    def unreachable_url(self):
        """A URL of this scheme where no engine answers."""
        raise NotImplementedError

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class FileEngine(Engine):
    name = "file"

    def __init__(self):
        super().__init__()
        self.path = os.path.join(self.dir, "servers.json")
        self.url = "file://" + self.path
        self.start()

    def _write(self, text):
        tmp = self.path + ".test.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.path)

    def start(self):
        self._write("{}")

    def stop(self):
        self._write('{"half-written": ')

    def unreachable_url(self):
        return "file://" + os.path.join(self.dir, "no-such-folder", "servers.json")

    def put_garbage(self, cluster):
        data = json.load(open(self.path))
        section = data.setdefault(cluster, {})
        section.setdefault("area", []).extend(
            ["not an object", {"id": "no-port"}, {"id": "bad-port", "port": "x"}])
        section["chat"] = {"id": "a type whose value is not a list"}
        self._write(json.dumps(data))


class ProcessEngine(Engine):
    """An engine that is a process listening on ``self.port`` (``url_for(port)``)."""

    def __init__(self):
        super().__init__()
        self.port = free_port()
        self.url = self.url_for(self.port)
        self.proc = None

    def launch(self, cmd, ready, timeout):
        """Start ``cmd`` and wait until ``ready()``."""
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(ready, timeout, self.program)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def unreachable_url(self):
        return self.url_for(free_port())


class RedisEngine(ProcessEngine):
    name = "redis"
    program = package = "redis-server"
    library = "redis"

    def __init__(self):
        super().__init__()
        self.start()

    @staticmethod
    def url_for(port):
        return f"redis://127.0.0.1:{port}/0"

    def _ping(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def start(self):
        self.launch(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--dir", self.dir,
                     "--loglevel", "warning"], self._ping, 10)

    def put_garbage(self, cluster):
        import redis
        r = redis.Redis(port=self.port)
        prefix = f"pomelo_rpc:{cluster}:"
        r.set(prefix + "server:junk", b"\xff not json")
        r.set(prefix + "server:no-port", json.dumps({"id": "no-port", "server_type": "area"}))
        r.set(prefix + "server:liar", json.dumps(
            {"id": "someone-else", "server_type": "area", "port": 1}))
        r.sadd(prefix + "ids", "junk", "no-port", "liar", "never-written")
        r.close()


class EtcdEngine(ProcessEngine):
    name = "etcd"
    program, package = "etcd", "etcd-server"
    library = "aetcd"

    def __init__(self):
        super().__init__()
        self.peer_port = free_port()
        self.runs = 0
        self.start()

    @staticmethod
    def url_for(port):
        return f"etcd://127.0.0.1:{port}"

    def _healthy(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=0.5) as r:
            return json.load(r).get("health") == "true"

    def start(self):
        self.runs += 1
        data = os.path.join(self.dir, f"data{self.runs}")      # a new one: empty
        peer = f"http://127.0.0.1:{self.peer_port}"
        client = f"http://127.0.0.1:{self.port}"
        self.launch(["etcd", "--name", "test", "--data-dir", data,
                     "--listen-client-urls", client, "--advertise-client-urls", client,
                     "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                     "--initial-cluster", f"test={peer}", "--log-level", "error",
                     "--logger", "zap"], self._healthy, 20)

    def _put(self, key, value):
        body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                           "value": base64.b64encode(value).decode()}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v3/kv/put", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()

    def put_garbage(self, cluster):
        prefix = f"/pomelo_rpc/{cluster}/servers/"
        self._put(prefix + "junk", b"\xff not json")
        self._put(prefix + "no-port", json.dumps({"id": "no-port", "server_type": "area"}).encode())
        self._put(prefix + "liar", json.dumps(
            {"id": "someone-else", "server_type": "area", "port": 1}).encode())


ENGINES = {"file": FileEngine, "redis": RedisEngine, "etcd": EtcdEngine}


@pytest.fixture(params=sorted(ENGINES))
def engine(request):
    """Each membership engine in turn, started for the test and removed after it."""
    eng = ENGINES[request.param]()
    yield eng
    eng.close()
