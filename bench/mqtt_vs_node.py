"""transport="mqtt", Python <-> Python against Node pomelo-rpc 1.0.7 <-> itself, in one run.

    python bench/mqtt_vs_node.py [--seconds 2] [--node-calls 40] [--no-mixed] [--json]

Every system runs the same cells: sequential calls (conc=1, size 10) and conc=100
throughput with the payload ``{"a": "run", "b": "x" * size, "time": t}`` for sizes 10
and 1000, each for a fixed time after a short warm-up, cell by cell with every system
in turn (so that a change of load on the machine hits a cell's systems alike). Client
and server are separate processes on loopback:

- Node client -> Node server, as shipped: pomelo-rpc 1.0.7 never sets TCP_NODELAY and
  writes each MQTT packet in several pieces, so a sequential call waits for a delayed
  ACK (40-90 ms); that cell makes ``--node-calls`` calls instead of running for a time;
- Node client -> Node server with TCP_NODELAY patched into both peers
  (POMELO_RPC_NODE_NODELAY=1, see tests/node/common.js; node_modules is untouched);
- Python client -> Python server (``python -m pomelo_rpc serve --transport mqtt``), the
  client being this process, measured by ``pomelo_rpc.bench.measure``;
- unless ``--no-mixed``: sequential calls of the mixed pairs (Node client -> Python
  server, Python client -> Node server, Node as shipped), where the Node side's stalls
  remain.

The Node peers are tests/node/{server,client}.js (``npm install`` runs there first if
needed). The targets compare cells of this run only (the machine is noisy): Python's
conc=100 throughput at least 3x Node's with TCP_NODELAY, and a sequential Python call
at least 100x faster than a Node one as shipped. A full run takes about 35 s.
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pomelo_rpc  # noqa: E402
from pomelo_rpc import bench, client  # noqa: E402

NODE_DIR = os.path.join(ROOT, "tests", "node")
CELLS = ((1, 10), (100, 10), (100, 1000))
NODE_SHIPPED = "node -> node, as shipped"
NODE_NODELAY = "node -> node, TCP_NODELAY"
PYTHON = "python -> python"
SYSTEMS = (NODE_SHIPPED, NODE_NODELAY, PYTHON)
TARGET_THROUGHPUT = 3.0
TARGET_LATENCY = 100.0


def ensure_node():
    """Path of ``node`` with tests/node/node_modules installed (runs ``npm install``)."""
    node = shutil.which("node")
    if node is None:
        raise SystemExit("Node.js is not installed")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "pomelo-rpc")):
        subprocess.run([shutil.which("npm") or "npm", "install", "--no-audit", "--no-fund"],
                       cwd=NODE_DIR, check=True, timeout=300)
    return node


def node_env(nodelay):
    """Environment of a Node peer; ``nodelay`` patches TCP_NODELAY into every socket."""
    env = dict(os.environ)
    env.pop("POMELO_RPC_NODE_NODELAY", None)
    if nodelay:
        env["POMELO_RPC_NODE_NODELAY"] = "1"
    return env


class NodeServer:
    """Node pomelo-rpc's server (server.js) on an ephemeral loopback port."""

    def __init__(self, node, nodelay):
        # stdin is a pipe: the process also exits when this one goes away
        self.proc = subprocess.Popen([node, "server.js"], cwd=NODE_DIR, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=node_env(nodelay))
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("node server.js did not start")
        self.port = json.loads(line)["port"]

    def stop(self):
        """Kill the process."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


async def node_cell(node, port, nodelay, conc, size, seconds, max_calls=0, service="service"):
    """One cell measured by Node pomelo-rpc's client (client.js --throughput)."""
    cmd = [node, "client.js", "--port", str(port), "--throughput", "--conc", str(conc),
           "--size", str(size), "--seconds", str(seconds), "--service", service,
           "--max-seconds", str(int(seconds) + 60)]
    if max_calls:
        cmd += ["--max-calls", str(max_calls), "--seconds", "3600"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=NODE_DIR, env=node_env(nodelay),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(proc.communicate(), seconds + 90)
    lines = out.decode().strip().splitlines()
    if not lines:
        raise RuntimeError(f"client.js printed nothing: {cmd}")
    report = json.loads(lines[-1])
    if "error" in report:
        raise RuntimeError(f"client.js: {report['error']}")
    return {k: report[k] for k in ("calls_per_s", "p50_us", "p99_us", "calls")}


async def python_cell(port, conc, size, seconds):
    """One cell measured by this process's pomelo_rpc mqtt client (``bench.measure``
    through the generated proxy, after a warm-up)."""
    return await bench.run_cell("rpc", [port], conc, size, seconds, transport="mqtt")


def row(system, conc, size, result):
    out = {"system": system, "concurrency": conc, "size": size, **result}
    if conc == 1:
        out["mean_us"] = 1e6 / result["calls_per_s"]
    return out


def start_python_server(server_type, remote):
    """A ``python -m pomelo_rpc serve --transport mqtt`` process; (process, port)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pomelo_rpc", "serve", "--server-id", f"mqtt-{server_type}",
         "--server-type", server_type, "--transport", "mqtt", "--remote", f"user={remote}"],
        stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
    line = proc.stdout.readline()
    if not line:
        bench.stop_all([proc])
        raise RuntimeError("python -m pomelo_rpc serve did not start")
    return proc, json.loads(line)["port"]


async def run(args):
    """Measure every cell; return the list of rows.

    Every server runs from the start, and each cell is measured for every system in
    turn before the next cell: a change of load on the machine then hits the systems
    of a cell alike instead of one system's whole row."""
    node = ensure_node()
    results = {}
    servers = []
    procs = []
    try:
        shipped = NodeServer(node, False)
        servers.append(shipped)
        nodelay = NodeServer(node, True)
        servers.append(nodelay)
        proc, py_port = start_python_server("bench", bench.REMOTE)
        procs.append(proc)
        for conc, size in CELLS:
            max_calls = args.node_calls if conc == 1 else 0
            results[NODE_SHIPPED, conc, size] = await node_cell(
                node, shipped.port, False, conc, size, args.seconds, max_calls)
            results[NODE_NODELAY, conc, size] = await node_cell(
                node, nodelay.port, True, conc, size, args.seconds)
            results[PYTHON, conc, size] = await python_cell(py_port, conc, size, args.seconds)
        if not args.no_mixed:
            proc, port = start_python_server("test", os.path.join(ROOT, "tests", "remote", "test"))
            procs.append(proc)
            results["node -> python, node as shipped", 1, 10] = await node_cell(
                node, port, False, 1, 10, args.seconds, args.mixed_calls)
            results["python -> node, node as shipped", 1, 10] = await python_mixed(
                shipped.port, args.mixed_calls)
    finally:
        for srv in servers:
            srv.stop()
        bench.stop_all(procs)
    # the table: one system after the other, the mixed pairs last
    order = {system: i for i, system in enumerate(SYSTEMS)}
    return sorted((row(system, conc, size, r) for (system, conc, size), r in results.items()),
                  key=lambda r: (order.get(r["system"], len(order)),
                                 CELLS.index((r["concurrency"], r["size"]))))


async def python_mixed(port, calls):
    """``calls`` sequential calls of this process's mqtt client to a Node server."""
    cli = client.create(transport="mqtt", timeout=30)
    cli.add_servers([{"id": "s", "server_type": "test", "port": port}])
    await cli.start()
    base = {"namespace": "user", "serverType": "test", "service": "service", "method": "echo"}
    try:
        await cli.rpc_invoke("s", dict(base, args=["warm-up"]))
        payload = bench.payload_of(10)
        lat = []
        t_start = time.perf_counter()
        for _ in range(calls):
            t0 = time.perf_counter()
            await cli.rpc_invoke("s", dict(base, args=[payload]))
            lat.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - t_start
    finally:
        await cli.stop()
    lat.sort()
    return {"calls_per_s": calls / elapsed, "p50_us": statistics.median(lat) * 1e6,
            "p99_us": lat[min(calls - 1, int(calls * 0.99))] * 1e6, "calls": calls}


def find(rows, system, conc, size):
    for r in rows:
        if r["system"] == system and r["concurrency"] == conc and r["size"] == size:
            return r
    return None


def ratios(rows):
    """The target ratios, from the rows of this run: ``{name: (value, target)}``."""
    out = {}
    for size in (10, 1000):
        py, nd = find(rows, PYTHON, 100, size), find(rows, NODE_NODELAY, 100, size)
        out[f"throughput python / node TCP_NODELAY, conc=100 size={size}"] = (
            py["calls_per_s"] / nd["calls_per_s"], TARGET_THROUGHPUT)
    py, nd = find(rows, PYTHON, 1, 10), find(rows, NODE_SHIPPED, 1, 10)
    out["sequential latency node as shipped / python, mean"] = (
        nd["mean_us"] / py["mean_us"], TARGET_LATENCY)
    out["sequential latency node as shipped / python, p50"] = (
        nd["p50_us"] / py["p50_us"], TARGET_LATENCY)
    nd = find(rows, NODE_NODELAY, 1, 10)
    out["sequential latency node TCP_NODELAY / python, mean (info)"] = (
        nd["mean_us"] / py["mean_us"], None)
    return out


def print_table(rows, ratio_map):
    print(f"transport=mqtt: pomelo_rpc {pomelo_rpc.__version__} ({pomelo_rpc.IMPLEMENTATION} "
          f"core) vs Node pomelo-rpc 1.0.7, {os.cpu_count()} cores, "
          f"python {sys.version.split()[0]}")
    print(f"{'client -> server':<34} {'conc':>4} {'size':>5} {'calls/s':>9} {'mean µs':>9} "
          f"{'p50 µs':>9} {'p99 µs':>9} {'calls':>7}")
    for r in rows:
        mean = f"{r['mean_us']:>9.0f}" if "mean_us" in r else f"{'':>9}"
        print(f"{r['system']:<34} {r['concurrency']:>4} {r['size']:>5} {r['calls_per_s']:>9,.0f} "
              f"{mean} {r['p50_us']:>9.0f} {r['p99_us']:>9.0f} {r['calls']:>7}")
    print("\nratios (same run):")
    for name, (value, target) in ratio_map.items():
        verdict = "" if target is None else (
            f"  target >= {target:g}x: {'met' if value >= target else 'NOT MET'}")
        print(f"  {name:<58} {value:8.1f}x{verdict}")


def main(argv=None):
    """Entry point: measure, print the table (or JSON) and the target ratios."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=2.0, help="duration of each timed cell")
    p.add_argument("--node-calls", type=int, default=40,
                   help="sequential calls of Node as shipped (each takes 40-90 ms)")
    p.add_argument("--mixed-calls", type=int, default=20, help="calls of each mixed pair")
    p.add_argument("--no-mixed", action="store_true", help="skip the mixed pairs")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    rows = pomelo_rpc.run(run(args))
    ratio_map = ratios(rows)
    if args.json:
        print(json.dumps({"implementation": pomelo_rpc.IMPLEMENTATION, "rows": rows,
                          "ratios": {k: {"value": v, "target": t}
                                     for k, (v, t) in ratio_map.items()}}, indent=2))
    else:
        print_table(rows, ratio_map)


if __name__ == "__main__":
    main()
