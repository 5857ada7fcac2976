"""pinus 1.7.4's rpc (pinus-rpc) against pomelo_rpc, both transports, in one run.

    python bench/pinus.py [--seconds 2] [--rounds 3] [--json]

Every system runs the same cells, calls of ``user.bench.echo`` with the payload
``{"a": "run", "b": "x" * 10, "time": t}`` kept 1 and 100 in flight for a fixed time
after a short warm-up; client and server are separate processes on loopback (the
Python client is this process):

- Node -> Node: pinus-rpc 1.7.4's client and server (tests/pinus/bench.js), over its
  default mqtt transport and over its tcp transport, as pinus configures them
  (``createMqttMailBox``/``createDefaultAcceptor``, ``createTcpMailBox``/
  ``createTcpAcceptor``), as shipped;
- Python -> Python: ``transport="mqtt"`` and ``transport="pinus-tcp"``
  (``python -m pomelo_rpc serve``, the compiled core unless POMELO_RPC_PURE=1);
- the mixed directions: a Node client to a Python server and a Python client to a Node
  server, on each transport.

Each round measures every cell for every system, the systems' order rotated from round
to round (a change of load on this shared machine then hits them alike); the table shows
the median of the rounds and their spread. The target compares cells of this run:
Python <-> Python over pinus-tcp at least 3x pinus-rpc's Node <-> Node tcp at 100 in
flight. A run takes about 16 x rounds x (seconds + 1) s.

Beside calls/s, each cell's calls per CPU second of the server process and (a Python
client: this process) of the client, user and system time from /proc: on a loaded
machine, where calls/s follows the share of a core each process gets, they show what a
call costs each side (the warm-up's calls counted at the cell's rate).
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pomelo_rpc  # noqa: E402
from pomelo_rpc import bench, processes  # noqa: E402

NODE_DIR = os.path.join(ROOT, "tests", "pinus")
CONCS = (1, 100)
SIZE = 10
#: ours -> pinus-rpc's name of each transport
TRANSPORTS = {"mqtt": "mqtt", "pinus-tcp": "tcp"}
TARGET = 3.0
#: the warm-up of a cell, s (bench.js's default, and ``bench.run_cell``'s below 0.3 s)
WARM_UP = 0.3


def system(client, server, transport):
    return f"{client} -> {server}, {transport}"


SYSTEMS = [system(c, s, t) for t in TRANSPORTS for c, s in
           (("node", "node"), ("python", "python"), ("node", "python"), ("python", "node"))]


def ensure_node():
    """Path of ``node`` with tests/pinus/node_modules installed (``npm ci`` if needed)."""
    node = shutil.which("node")
    if node is None:
        raise SystemExit("Node.js is not installed")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "pinus-rpc")):
        subprocess.run([shutil.which("npm") or "npm", "ci", "--no-audit", "--no-fund"],
                       cwd=NODE_DIR, check=True, timeout=600)
    return node


class NodeServer:
    """A pinus-rpc server of the bench service (bench.js server) on a loopback port."""

    def __init__(self, node, transport):
        # stdin is a pipe: the process exits when this one goes away
        self.proc = subprocess.Popen([node, "bench.js", "server", "--transport", transport],
                                     cwd=NODE_DIR, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("node bench.js server did not start")
        self.port = json.loads(line)["port"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


async def node_cell(node, transport, port, conc, seconds):
    """One cell measured by pinus-rpc's client (bench.js client)."""
    proc = await asyncio.create_subprocess_exec(
        node, "bench.js", "client", "--transport", transport, "--port", str(port),
        "--conc", str(conc), "--seconds", str(seconds), "--size", str(SIZE),
        cwd=NODE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
    lines = out.decode().strip().splitlines()
    report = json.loads(lines[-1]) if lines else {"error": "bench.js printed nothing"}
    if "error" in report:
        raise RuntimeError(f"bench.js client ({transport}): {report['error']}")
    return report


async def python_cell(transport, port, conc, seconds):
    """One cell measured by this process's pomelo_rpc client (``bench.measure``)."""
    return await bench.run_cell("rpc", [port], conc, SIZE, seconds, transport=transport)


async def run(args):
    """Measure every cell ``args.rounds`` times; rows with medians and spreads."""
    node = ensure_node()
    runs = {}
    node_servers, procs = {}, []
    try:
        servers, pids = {}, {}
        for ours, theirs in TRANSPORTS.items():
            node_servers[ours] = NodeServer(node, theirs)
            proc, port = bench.start_rpc_server(f"pinus-bench-{theirs}", ours)
            procs.append(proc)
            servers[ours] = {"node": node_servers[ours].port, "python": port}
            pids[ours] = {"node": node_servers[ours].proc.pid, "python": proc.pid}
        for rnd in range(args.rounds):
            order = SYSTEMS[rnd % len(SYSTEMS):] + SYSTEMS[:rnd % len(SYSTEMS)]
            for conc in CONCS:
                for name in order:
                    pair, transport = name.split(", ")
                    client, server = pair.split(" -> ")
                    port = servers[transport][server]
                    pid = pids[transport][server]
                    cpu = processes.cpu_seconds(pid), processes.cpu_seconds()
                    if client == "node":
                        result = await node_cell(node, TRANSPORTS[transport], port, conc,
                                                 args.seconds)
                    else:
                        result = await python_cell(transport, port, conc, args.seconds)
                    # the cell's calls, its warm-up's counted at the measured rate
                    calls = result["calls_per_s"] * (args.seconds + WARM_UP)
                    used = processes.cpu_seconds(pid) - cpu[0]
                    result["server_calls_per_cpu_s"] = calls / used if used else None
                    used = processes.cpu_seconds() - cpu[1]
                    result["client_calls_per_cpu_s"] = (
                        calls / used if client == "python" and used else None)
                    runs.setdefault((name, conc), []).append(result)
    finally:
        for srv in node_servers.values():
            srv.stop()
        bench.stop_all(procs)
    rows = []
    for name in SYSTEMS:
        for conc in CONCS:
            results = runs[(name, conc)]
            rate = [r["calls_per_s"] for r in results]
            rows.append({"system": name, "concurrency": conc, "size": SIZE,
                         "calls_per_s": statistics.median(rate),
                         "calls_per_s_runs": rate,
                         "p50_us": statistics.median(r["p50_us"] for r in results),
                         "p99_us": statistics.median(r["p99_us"] for r in results),
                         **{key: median_or_none(r[key] for r in results)
                            for key in ("client_calls_per_cpu_s", "server_calls_per_cpu_s")}})
    return rows


def median_or_none(values):
    """The median of the values that are not None (None if none is)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def find(rows, name, conc):
    return next(r for r in rows if r["system"] == name and r["concurrency"] == conc)


def ratios(rows):
    """``{name: (value, target or None)}`` from the medians of this run."""
    out = {}
    for conc in CONCS:
        py = find(rows, system("python", "python", "pinus-tcp"), conc)["calls_per_s"]
        nd = find(rows, system("node", "node", "pinus-tcp"), conc)["calls_per_s"]
        out[f"python <-> python pinus-tcp / pinus-rpc node <-> node tcp, conc={conc}"] = (
            py / nd, TARGET if conc == 100 else None)
        py = find(rows, system("python", "python", "mqtt"), conc)["calls_per_s"]
        nd = find(rows, system("node", "node", "mqtt"), conc)["calls_per_s"]
        out[f"python <-> python mqtt / pinus-rpc node <-> node mqtt, conc={conc}"] = (
            py / nd, None)
    return out


def print_table(rows, ratio_map, rounds):
    print(f"pinus-rpc 1.7.4 vs pomelo_rpc {pomelo_rpc.__version__} "
          f"({pomelo_rpc.IMPLEMENTATION} core), payload size {SIZE}, medians of {rounds} "
          f"round(s), {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"{'client -> server, transport':<32} {'conc':>4} {'calls/s':>9} {'min-max':>17} "
          f"{'p50 µs':>9} {'p99 µs':>9} {'calls/CPU s: client':>20} {'server':>9}")
    for r in rows:
        spread = f"{min(r['calls_per_s_runs']):,.0f}-{max(r['calls_per_s_runs']):,.0f}"
        per_cpu = [("-" if r[k] is None else f"{r[k]:,.0f}")
                   for k in ("client_calls_per_cpu_s", "server_calls_per_cpu_s")]
        print(f"{r['system']:<32} {r['concurrency']:>4} {r['calls_per_s']:>9,.0f} "
              f"{spread:>17} {r['p50_us']:>9.0f} {r['p99_us']:>9.0f} {per_cpu[0]:>20} "
              f"{per_cpu[1]:>9}")
    print("\nratios (same run):")
    for name, (value, target) in ratio_map.items():
        verdict = "" if target is None else (
            f"  target >= {target:g}x: {'met' if value >= target else 'NOT MET'}")
        print(f"  {name:<66} {value:7.2f}x{verdict}")


def main(argv=None):
    """Entry point: measure, print the table (or JSON) and the target ratio."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=2.0, help="duration of each cell")
    p.add_argument("--rounds", type=int, default=3, help="rounds, the systems' order rotated")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    rows = pomelo_rpc.run(run(args))
    ratio_map = ratios(rows)
    if args.json:
        print(json.dumps({"implementation": pomelo_rpc.IMPLEMENTATION, "rows": rows,
                          "ratios": {k: {"value": v, "target": t}
                                     for k, (v, t) in ratio_map.items()}}, indent=2))
    else:
        print_table(rows, ratio_map, args.rounds)


if __name__ == "__main__":
    main()
