"""Server processes for the demo and the benchmark: ``python -m pomelo_rpc serve`` children."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env(pure: bool = False) -> dict[str, str]:
    """The environment of a child that imports this very package (its parent folder
    first on PYTHONPATH); ``pure`` gives it the pure-Python core."""
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    if pure:
        env["POMELO_RPC_PURE"] = "1"
    return env


def start(cmd: list[str], pure: bool = False) -> tuple[subprocess.Popen[str], int]:
    """Start ``cmd`` (which prints a JSON line with its ``port``); return (process, port)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=child_env(pure))
    line = proc.stdout.readline()  # type: ignore[union-attr]  # stdout=PIPE: not None
    if not line:
        proc.kill()
        raise RuntimeError(f"process failed to start: {' '.join(cmd)}")
    return proc, int(json.loads(line)["port"])


def start_server(server_id: str, server_type: str, remote_dir: str, transport: str = "native",
                 pure: bool = False) -> tuple[subprocess.Popen[str], int]:
    """A server process serving ``remote_dir`` as namespace ``user``; (process, port)."""
    return start([sys.executable, "-m", "pomelo_rpc", "serve", "--server-id", server_id,
                  "--server-type", server_type, "--transport", transport,
                  "--remote", f"user={remote_dir}"], pure)


def rss_kb(pid: int | str = "self") -> int:
    """Resident memory of process ``pid`` (this one by default), in kB, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int | str = "self") -> float:
    """CPU time (user + system) process ``pid`` has used so far, in seconds, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        # the fields after the command name, which is in parentheses and may hold spaces
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_all(procs: Sequence[subprocess.Popen[str]]) -> None:
    """SIGTERM every process, then wait (kill after 10 s)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
