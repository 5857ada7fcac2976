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
                                               timeout=10.0, connections=n)
        conc = 2 * n
    else:
        calls, close = await bench.rpc_callers(ports, "native", kind="rpc-rr", timeout=10.0)
        conc = 100
    await bench.measure(calls, conc, 0.5, 10)
    print("ready", flush=True)
    result = await bench.measure(calls, conc, seconds + 1.0, 10)
    await close()
    print(json.dumps(result), flush=True)


def counts_of(text):
    """{event: count} from ``perf stat -x,`` output."""
    out = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in EVENTS:
            try:
                out[fields[2]] = int(fields[0])
            except ValueError:       # "<not counted>"
                out[fields[2]] = 0
    return out


def run_case(case, seconds):
    """{side: {what: per call}} and calls/s of one case."""
    server, ports = start_server(case)
    try:
        client = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--client", case,
             ",".join(map(str, ports)), str(seconds)],
            stdout=subprocess.PIPE, text=True, env=processes.child_env())
        assert client.stdout.readline().strip() == "ready"
        perfs = {side: subprocess.Popen(
            ["perf", "stat", "-x,", "-e", ",".join(EVENTS), "-p", str(pid), "--",
             "sleep", str(seconds)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
            text=True) for side, pid in (("server", server.pid), ("client", client.pid))}
        started = time.monotonic()
        counted = {side: counts_of(p.communicate()[1]) for side, p in perfs.items()}
        window = time.monotonic() - started
        result = json.loads(client.stdout.readline())
        client.wait(30)
    finally:
        processes.stop_all([server])
    calls = result["calls_per_s"] * min(window, seconds)
    out = {}
    for side, found in counted.items():
        row = {"all": found.get("raw_syscalls:sys_enter", 0) / calls}
        for what, names in NAMED.items():
            row[what] = sum(found.get(f"syscalls:sys_enter_{n}", 0) for n in names) / calls
        out[side] = row
    return out, result["calls_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        case, ports, seconds = args.client
        pomelo_rpc.run(client_main(case, [int(p) for p in ports.split(",")], float(seconds)))
        return 0
    if shutil.which("perf") is None:
        raise SystemExit("needs perf (Debian: apt-get install linux-perf)")
    print(f"system calls per call, {args.seconds:g} s per case, load {os.getloadavg()[0]:.2f}")
    cols = list(NAMED)
    print(f"{'case':<9} {'calls/s':>9}   {'server: all':>11} "
          + " ".join(f"{c:>6}" for c in cols) + f"   {'client: all':>11} "
          + " ".join(f"{c:>6}" for c in cols))
    for case in args.cases.split(","):
        per, rate = run_case(case, args.seconds)
        s, c_ = per["server"], per["client"]
        print(f"{case:<9} {rate:>9,.0f}   {s['all']:>11.2f} "
              + " ".join(f"{s[c]:>6.2f}" for c in cols) + f"   {c_['all']:>11.2f} "
              + " ".join(f"{c_[c]:>6.2f}" for c in cols), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
