"""Test support: async tests run on uvloop; real server processes; the core parameter."""

import asyncio
import inspect
import json
import os
import select
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


async def wait_available(cli, server_id, within=6.0):
    """Wait until ``cli`` takes ``server_id`` as available again (its background probe
    reached it: at most ``probe_backoff_max``, 5 s, after it came back, plus a connect
    and a ping); AssertionError after ``within`` s. Returns the seconds waited."""
    started = time.monotonic()
    while not cli.server_state(server_id)["available"]:
        assert time.monotonic() - started < within, cli.server_state(server_id)
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def until(condition, within, what):
    """Wait (without blocking the loop) until ``condition()``; the time it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, what
        await asyncio.sleep(0.01)
    return time.monotonic() - started


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

    def _launch(self):
        """Start the process (its 'listening' line is read by ``start``/``astart``)."""
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

    def _listening(self, line):
        if not line:
            self.kill()
            raise RuntimeError(f"server {self.server_id} did not start")
        info = self.listening = json.loads(line)     # port, metrics_port (if any)
        assert info["implementation"] == self.core, info
        self.port = info["port"]
        return self

    def start(self, timeout=20):
        """Start the process and wait (at most ``timeout`` s) for its 'listening' line.
        Blocks: from async code use ``astart``."""
        self._launch()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self._listening(self.proc.stdout.readline() if ready else "")

    async def astart(self, timeout=20):
        """``start`` for async code: the line is read in a thread, the loop runs on."""
        self._launch()
        loop = asyncio.get_running_loop()
        try:
            line = await asyncio.wait_for(
                loop.run_in_executor(None, self.proc.stdout.readline), timeout)
        except asyncio.TimeoutError:
            line = ""
        return self._listening(line)

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

    async def akill(self, timeout=10):
        """``kill`` for async code: waits for the process's end without blocking the loop."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server {self.server_id} did not die")
                await asyncio.sleep(0.01)

    def terminate(self, timeout=15):
        """SIGTERM: a graceful stop."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)


def _process(procs, server_id, server_type, remotes, kw):
    p = ServerProcess(server_id, server_type,
                      remotes or {"user": os.path.join(REMOTE, "test")}, **kw)
    procs.append(p)
    return p


@pytest.fixture
def spawn():
    """Factory of ServerProcess; every process is killed at teardown."""
    procs = []

    def _spawn(server_id, server_type="test", remotes=None, **kw):
        return _process(procs, server_id, server_type, remotes, kw).start()

    yield _spawn
    for p in procs:
        p.kill()


@pytest.fixture
def aspawn():
    """``spawn`` for async tests: ``await aspawn(...)`` starts a ServerProcess without
    blocking the loop; every process is killed at teardown."""
    procs = []

    async def _spawn(server_id, server_type="test", remotes=None, **kw):
        return await _process(procs, server_id, server_type, remotes, kw).astart()

    yield _spawn
    for p in procs:
        p.kill()


#: Figures a test reports (``report``), printed at the end of the run.
REPORTED = []


def report(line):
    """Print ``line`` in the run's summary ("figures" section), also without ``-s``."""
    REPORTED.append(line)


def pytest_terminal_summary(terminalreporter):
    if REPORTED:
        terminalreporter.section("figures")
        for line in REPORTED:
            terminalreporter.write_line(line)
