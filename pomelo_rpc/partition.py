"""Network partitions on one machine, for tests and benches (Linux, as root).

A ``Namespace`` is a private network namespace (``ip netns add``) with its own
loopback: the processes of a test cluster and the test's own event loop run in it,
and ``cut(port)`` drops every TCP packet to and/or from a port with nftables in that
namespace, with no RST (what a pulled cable, a dead host or a switch failure does);
``heal`` removes the rules. Nothing leaves the namespace, and nothing outside it is
touched.

    with Namespace() as ns:
        result = ns.run(scenario)      # scenario(ns): an async function, run on its own
                                       # loop in a thread that entered the namespace;
                                       # processes it starts live in the namespace too
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["Namespace", "NamespaceError", "available"]

_T = TypeVar("_T")

CLONE_NEWNET = 0x40000000
TABLE = "pomelo_partition"
DIRECTIONS = ("both", "to", "from")

_names = itertools.count(1)


class NamespaceError(RuntimeError):
    """A namespace cannot be made or changed here (not root, no ``ip`` or ``nft``)."""


def available() -> str | None:
    """None when namespaces with nftables can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root (ip netns add)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian: iproute2, nftables)"
    return None


def _check(cmd: list[str], stdin: str | None = None) -> None:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise NamespaceError(f"{' '.join(cmd)}: {done.stderr.strip() or done.returncode}")


class Namespace:
    """A private network namespace with a loopback and a cuttable firewall."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"pomelo-{os.getpid()}-{next(_names)}"
        self.cuts: dict[int, str] = {}     # port -> direction dropped
        self._made = False

    def __enter__(self) -> Namespace:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self) -> None:
        """Make the namespace, bring its loopback up, install an empty firewall table."""
        why = available()
        if why is not None:
            raise NamespaceError(f"cannot make a network namespace: {why}")
        _check(["ip", "netns", "add", self.name])
        self._made = True
        _check(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"])
        self._apply()

    def close(self) -> None:
        """Delete the namespace (its processes should be gone first)."""
        if self._made:
            self._made = False
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    # faults -------------------------------------------------------------

    def cut(self, port: int, direction: str = "both") -> None:
        """Drop TCP packets of ``port``: ``"both"`` ways, only those ``"to"`` it (the
        peers' requests never arrive), or only those ``"from"`` it (its answers never
        arrive). Silent: no RST, no ICMP."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
        self.cuts[port] = direction
        self._apply()

    def heal(self, port: int | None = None) -> None:
        """Let ``port``'s packets through again (every port's when None)."""
        if port is None:
            self.cuts.clear()
        else:
            self.cuts.pop(port, None)
        self._apply()

    async def acut(self, port: int, direction: str = "both") -> None:
        """``cut`` without blocking the running loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.cut, port, direction)

    async def aheal(self, port: int | None = None) -> None:
        """``heal`` without blocking the running loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.heal, port)

    def _apply(self) -> None:
        """Replace the namespace's table with the rules of ``cuts``, atomically."""
        rules = []
        for port, direction in sorted(self.cuts.items()):
            if direction in ("both", "to"):
                rules.append(f"tcp dport {port} drop")
            if direction in ("both", "from"):
                rules.append(f"tcp sport {port} drop")
        script = (f"table inet {TABLE}\ndelete table inet {TABLE}\n"
                  f"table inet {TABLE} {{\n  chain output {{\n"
                  f"    type filter hook output priority 0; policy accept;\n"
                  + "".join(f"    {rule}\n" for rule in rules) + "  }\n}\n")
        _check(["ip", "netns", "exec", self.name, "nft", "-f", "-"], stdin=script)

    # running inside --------------------------------------------------------

    def enter(self) -> None:
        """Move the calling thread into the namespace (sockets it opens, and processes
        it starts, are the namespace's)."""
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise NamespaceError(f"setns {self.name}: {os.strerror(err)}")
        finally:
            os.close(fd)

    def run(self, scenario: Callable[[Namespace], Coroutine[Any, Any, _T]]) -> _T:
        """Run ``scenario(self)`` on a new event loop (uvloop when installed) in a thread
        inside the namespace; return its result or raise its exception."""
        from . import run as run_loop
        outcome: list[Any] = []

        def main() -> None:
            try:
                self.enter()
                outcome.append((True, run_loop(scenario(self))))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                outcome.append((False, exc))

        thread = threading.Thread(target=main, name=f"netns-{self.name}")
        thread.start()
        thread.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]
