"""What a pomelo master's admin modules ask of a server process, answered for this one.

pomelo 2.2.7 registers these modules on every monitor (``moduleUtil
.registerDefaultModules``); the master asks them for the ``pomelo list`` / admin console
views. The shapes are those of the Node answers, so the master's own code (which
reads fields without checking them) works on ours:

- ``__console__`` ``list``: ``{serverId, serverType, pid, rss, heapTotal, heapUsed,
  uptime}`` (MB and minutes, as text with 2 decimals; Python has no V8 heap, so the
  heap figures are the RSS too);
- ``watchServer`` ``servers``: ``{serverId, serverType, host, port, pid, heapUsed,
  uptime}``;
- ``nodeInfo`` / ``watchServer status``: ``ps`` figures of the process (pomelo-monitor's
  ``getPsInfo``);
- ``systemInfo``: the machine (pomelo-monitor's ``getSysInfo`` with its ``iostat``).

Read from /proc where Linux has it; elsewhere the figures that cannot be read are 0.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
import sys
import time
from typing import Any

__all__ = ["console_list", "watch_servers", "ps_info", "sys_info"]

_STARTED = time.monotonic()


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _status_kb(key: str) -> int:
    """A ``kB`` figure of /proc/self/status (``VmRSS``, ``VmSize``), 0 if unknown."""
    for line in _read("/proc/self/status").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    if key == "VmRSS":     # macOS and others: the peak is the best figure there is
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak
    return 0


def _meminfo_kb(key: str) -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _mb(kb: int) -> str:
    return f"{kb / 1024:.2f}"


def _uptime_min() -> str:
    return f"{(time.monotonic() - _STARTED) / 60:.2f}"


def _now_text() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def console_list(server_id: str, server_type: str) -> dict[str, Any]:
    """pomelo's console module, signal ``list``: this process in ``pomelo list``."""
    rss = _status_kb("VmRSS")
    return {"serverId": server_id,
            "body": {"serverId": server_id, "serverType": server_type, "pid": os.getpid(),
                     "rss": _mb(rss), "heapTotal": _mb(rss), "heapUsed": _mb(rss),
                     "uptime": _uptime_min()}}


def watch_servers(server_id: str, server_type: str, info: dict[str, Any]) -> dict[str, Any]:
    """pomelo-admin's watchServer module, command ``servers``."""
    return {"serverId": server_id,
            "body": {"serverId": server_id, "serverType": server_type,
                     "host": info.get("host"), "port": info.get("port"), "pid": os.getpid(),
                     "heapUsed": _mb(_status_kb("VmRSS")), "uptime": _uptime_min()}}


def ps_info(server_id: str, server_type: str) -> dict[str, Any]:
    """pomelo-monitor's getPsInfo for this process: %cpu and %mem since start, vsz and
    rss in kB, user/system %cpu since start (pidstat's figures)."""
    elapsed = max(time.monotonic() - _STARTED, 1e-6)
    t = os.times()
    total_kb = _meminfo_kb("MemTotal")
    rss = _status_kb("VmRSS")
    return {"time": _now_text(), "serverId": server_id, "serverType": server_type,
            "pid": os.getpid(),
            "cpuAvg": f"{100 * (t.user + t.system) / elapsed:.1f}",
            "memAvg": f"{100 * rss / total_kb:.1f}" if total_kb else "0.0",
            "vsz": str(_status_kb("VmSize")), "rss": str(rss),
            "usr": f"{100 * t.user / elapsed:.2f}", "sys": f"{100 * t.system / elapsed:.2f}",
            "gue": "0.00"}


def _iostat() -> dict[str, Any]:
    """``iostat``'s first report (averages since boot) from /proc/stat and /proc/diskstats."""
    cpu = [0.0] * 8
    for line in _read("/proc/stat").splitlines():
        if line.startswith("cpu "):
            cpu = [float(x) for x in line.split()[1:9]]
            cpu += [0.0] * (8 - len(cpu))
            break
    user, nice, system, idle, iowait, irq, softirq, steal = cpu
    busy = sum(cpu) or 1.0
    reads = writes = ios = 0
    for line in _read("/proc/diskstats").splitlines():
        f = line.split()
        if len(f) >= 10 and not f[2].startswith(("loop", "ram")) and not f[2][-1].isdigit():
            ios += int(f[3]) + int(f[7])
            reads += int(f[5]) // 2          # 512-byte sectors to kB
            writes += int(f[9]) // 2
    up = float((_read("/proc/uptime").split() or ["1"])[0]) or 1.0

    def pct(v: float) -> float:
        return round(100 * v / busy, 2)
    return {"date": _now_text(),
            "disk": {"kb_read": reads, "kb_wrtn": writes, "kb_read_per": round(reads / up, 2),
                     "kb_wrtn_per": round(writes / up, 2), "tps": round(ios / up, 2)},
            "cpu": {"cpu_user": pct(user), "cpu_nice": pct(nice),
                    "cpu_system": pct(system + irq + softirq), "cpu_iowait": pct(iowait),
                    "cpu_steal": pct(steal), "cpu_idle": pct(idle)}}


def sys_info() -> dict[str, Any]:
    """pomelo-monitor's getSysInfo: the machine as Node's ``os`` module describes it."""
    uname = platform.uname()
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else [0.0, 0.0, 0.0]
    rss = _status_kb("VmRSS") * 1024
    return {"hostname": socket.gethostname(), "type": uname.system, "platform": sys.platform,
            "arch": uname.machine, "release": uname.release,
            "uptime": time.monotonic() - _STARTED, "loadavg": load,
            "totalmem": _meminfo_kb("MemTotal") * 1024,
            "freemem": _meminfo_kb("MemAvailable") * 1024,
            "cpus": [{"model": uname.processor or uname.machine}] * (os.cpu_count() or 1),
            "networkInterfaces": {},
            "versions": {"python": platform.python_version()},
            "memoryUsage": {"rss": rss, "heapTotal": rss, "heapUsed": rss},
            "iostat": _iostat()}
