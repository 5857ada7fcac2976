"""System calls per call, each side apart: many connections and many servers.

    python bench/syscalls.py [--seconds 3] [--cases raw-100,rpc-100,rr-64,...]

Each case runs a server process and a client process (this script again, ``--client``)
on loopback, the same workloads as ``python -m pomelo_rpc bench``'s many-connection
and many-server rows:

- ``raw-N``: the raw uvloop echo, N connections with 2 calls in flight on each;
- ``rpc-N``: pomelo_rpc native, an ``async def`` method and a custom router, N
  connections x 2 in flight;
- ``rr-K``: pomelo_rpc native, the ``rr`` router over K gateways (one server process),
  100 calls in flight.

Once the client has warmed up, ``perf stat`` counts the system calls each process
enters (tracepoints ``raw_syscalls:sys_enter`` and a few ``syscalls:sys_enter_*``) for
``--seconds`` while the client keeps calling; each count over the calls made in that
window is a figure per call. ``perf`` counts in the kernel, so it hardly slows the
processes (``strace -c`` stops them at every call, which changes how the calls
batch). Needs ``perf`` with tracepoints (root, or perf_event_paranoid <= -1).
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pomelo_rpc  # noqa: E402
from pomelo_rpc import bench, processes  # noqa: E402

#: the calls' timeout: that of ``bench``'s cells (a third of its 2 s), so that deadline
#: slots expire while it counts, as they do there
TIMEOUT = 2.0 / 3
CASES = ("raw-1", "rpc-1", "raw-100", "rpc-100", "raw-500", "rpc-500", "rr-1", "rr-8",
         "rr-64")
#: the system calls counted one by one (the rest are in the total)
NAMED = {"read": ("read", "recvfrom", "recvmsg", "readv"),
         "write": ("write", "writev", "sendto", "sendmsg"),
         "epoll": ("epoll_wait", "epoll_pwait", "epoll_ctl"),
         # uvloop's write checks that the process did not fork
         "getpid": ("getpid",)}
EVENTS = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{name}"
                                       for names in NAMED.values() for name in names]
#: ``--cpu``: the software events counted instead (CPU time in ms, context switches)
CPU_EVENTS = ["task-clock", "context-switches", "cpu-migrations", "page-faults"]


def start_server(case):
    """The server process of ``case``: (process, ports)."""
    kind, n = case.split("-")
    if kind == "raw":
        proc, port = bench.start_raw_server()
        return proc, [port]
    if kind == "rpc":
        proc, port = bench.start_rpc_server("sys")
        return proc, [port]
    return bench.start_gateways(int(n))


async def client_main(case, ports, seconds):
    """The client side: warm up, say ``ready``, call for ``seconds`` + 1, print calls/s."""
    kind, n = case.split("-")
    n = int(n)
    if kind == "raw":
        calls, close = await bench.raw_clients(ports[0], n)
        conc = 2 * n
    elif kind == "rpc":
        calls, close = await bench.rpc_callers(ports, "native", kind="rpc-async-router",
                                               timeout=TIMEOUT, connections=n)
        conc = 2 * n
    else:
        calls, close = await bench.rpc_callers(ports, "native", kind="rpc-rr", timeout=TIMEOUT)
        conc = 100
    await bench.measure(calls, conc, 0.5, 10)
    print("ready", flush=True)
    result = await bench.measure(calls, conc, seconds + 1.0, 10)
    await close()
    print(json.dumps(result), flush=True)


def counts_of(text, events):
    """{event: count} of ``events`` from ``perf stat -x,`` output."""
    out = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in events:
            try:
                out[fields[2]] = float(fields[0])
            except ValueError:       # "<not counted>"
                out[fields[2]] = 0.0
    return out


def user_system(pid):
    """(user, system) CPU seconds process ``pid`` has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def run_case(case, seconds, cpu=False):
    """{side: {what: per call}} and calls/s of one case (``cpu``: the CPU time in µs,
    user and system, and the context switches per call instead of the system calls)."""
    events = CPU_EVENTS if cpu else EVENTS
    server, ports = start_server(case)
    try:
        client = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--client", case,
             ",".join(map(str, ports)), str(seconds)],
            stdout=subprocess.PIPE, text=True, env=processes.child_env())
        assert client.stdout.readline().strip() == "ready"
        pids = {"server": server.pid, "client": client.pid}
        before = {side: user_system(pid) for side, pid in pids.items()}
        perfs = {side: subprocess.Popen(
            ["perf", "stat", "-x,", "-e", ",".join(events), "-p", str(pid), "--",
             "sleep", str(seconds)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
            text=True) for side, pid in pids.items()}
        started = time.monotonic()
        counted = {side: counts_of(p.communicate()[1], events) for side, p in perfs.items()}
        window = time.monotonic() - started
        after = {side: user_system(pid) for side, pid in pids.items()}
        result = json.loads(client.stdout.readline())
        client.wait(30)
    finally:
        processes.stop_all([server])
    calls = result["calls_per_s"] * min(window, seconds)
    out = {}
    for side, found in counted.items():
        if cpu:
            user, system = (b - a for a, b in zip(before[side], after[side]))
            out[side] = {"cpu µs": found.get("task-clock", 0) * 1e3 / calls,
                         "user": user * 1e6 / calls, "system": system * 1e6 / calls,
                         "switches": found.get("context-switches", 0) / calls,
                         "faults": found.get("page-faults", 0) / calls}
            continue
        row = {"all": found.get("raw_syscalls:sys_enter", 0) / calls}
        for what, names in NAMED.items():
            row[what] = sum(found.get(f"syscalls:sys_enter_{n}", 0) for n in names) / calls
        out[side] = row
    return out, result["calls_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--cpu", action="store_true",
                        help="CPU time (µs: all, user, system) and context switches per "
                             "call instead of system calls")
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        case, ports, seconds = args.client
        pomelo_rpc.run(client_main(case, [int(p) for p in ports.split(",")], float(seconds)))
        return 0
    if shutil.which("perf") is None:
        raise SystemExit("needs perf (Debian: apt-get install linux-perf)")
    what = "CPU time and context switches" if args.cpu else "system calls"
    print(f"{what} per call, {args.seconds:g} s per case, load {os.getloadavg()[0]:.2f}")
    head = None
    for case in args.cases.split(","):
        per, rate = run_case(case, args.seconds, args.cpu)
        s, c_ = per["server"], per["client"]
        if head is None:
            cols = list(s)
            head = (f"{'case':<9} {'calls/s':>9}   server: " + " ".join(f"{c:>8}" for c in cols)
                    + "   client: " + " ".join(f"{c:>8}" for c in cols))
            print(head)
        print(f"{case:<9} {rate:>9,.0f}   {'':8}" + " ".join(f"{s[c]:>8.2f}" for c in cols)
              + f"   {'':8}" + " ".join(f"{c_[c]:>8.2f}" for c in cols), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
