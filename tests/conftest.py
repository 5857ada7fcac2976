"""Test support: async tests run on uvloop; real server processes; the core parameter."""

import asyncio
import inspect
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import pomelo_rpc
from pomelo_rpc import core as _core

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REMOTE = os.path.join(HERE, "remote")
CORES = _core.available()


def pytest_pyfunc_call(pyfuncitem):
    """Run ``async def`` tests to completion on a fresh uvloop loop."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    pomelo_rpc.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), timeout=120))
    return True


@pytest.fixture(params=CORES)
def core(request):
    """Name of a core implementation; every test using it runs once per core."""
    return request.param


class ServerProcess:
    """A real ``python -m pomelo_rpc serve`` process."""

    def __init__(self, server_id, server_type, remotes, core="cython", port=0, transport="native",
                 extra_env=None, args=(), stderr=None):
        self.server_id = server_id
        self.server_type = server_type
        self.remotes = remotes
        self.core = core
        self.transport = transport
        self.port = port
        self.proc = None
        self.extra_env = extra_env or {}
        self.args = list(args)      # extra ``serve`` options, e.g. ["--stop-grace", "0.5"]
        self.stderr = stderr        # a file for the process's log (default: inherited)

    def start(self, timeout=20):
        """Start the process and wait for its 'listening' line."""
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env["POMELO_RPC_PURE"] = "1" if self.core == "python" else "0"
        env.update(self.extra_env)
        cmd = [sys.executable, "-m", "pomelo_rpc", "serve", "--server-id", self.server_id,
               "--server-type", self.server_type, "--port", str(self.port),
               "--transport", self.transport] + self.args
        for ns, path in self.remotes.items():
            cmd += ["--remote", f"{ns}={path}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, env=env,
                                     text=True)
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            self.kill()
            raise RuntimeError(f"server {self.server_id} did not start")
        info = json.loads(line)
        assert info["implementation"] == self.core, info
        self.port = info["port"]
        return self

    @property
    def info(self):
        """Server info for ``add_servers``."""
        return {"id": self.server_id, "server_type": self.server_type,
                "host": "127.0.0.1", "port": self.port}

    def kill(self):
        """SIGKILL: the process dies without closing anything."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout=15):
        """SIGTERM: a graceful stop."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)


@pytest.fixture
def spawn():
    """Factory of ServerProcess; every process is killed at teardown."""
    procs = []

    def _spawn(server_id, server_type="test", remotes=None, **kw):
        p = ServerProcess(server_id, server_type,
                          remotes or {"user": os.path.join(REMOTE, "test")}, **kw)
        procs.append(p)
        return p.start()

    yield _spawn
    for p in procs:
        p.kill()
